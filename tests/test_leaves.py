"""Stage 04_leaves: GBDT leaf fields appended to the field files, in-sample and out-of-fold."""

import json

import numpy as np
import pytest
import xgboost as xgb

from preprocessing import field_spec, keys, leaves
from pipeline.paths import stage_dir
from tests.conftest import raw_line, run_stages, use_artifacts

TREES = 6  # small and quick; the winners' 30 trees only differ in count


def write_signal_raw(path, rows, labelled, seed):
    """Raw Criteo rows whose click depends on I1, C1 and their interaction."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for _ in range(rows):
            ints = [int(rng.integers(0, 30))] + [None if rng.random() < 0.3 else
                                                 int(rng.integers(-1, 500)) for _ in range(12)]
            category = int(rng.integers(5))
            cats = [f"aaaa000{category}"] + [f"{int(rng.integers(40)):08x}" for _ in range(25)]
            logit = 0.15 * (ints[0] - 15) + (1.5 if category < 2 else -0.5) \
                + (1.0 if category == 4 and ints[0] > 20 else 0.0)
            label = int(rng.random() < 1 / (1 + np.exp(-logit))) if labelled else None
            handle.write(raw_line(label, ints, cats))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """Tag "t" built through stage 04_export on 3,500 + 500 rows with a learnable signal."""
    root = tmp_path_factory.mktemp("staged")
    (root / "raw").mkdir()
    write_signal_raw(root / "raw" / "train.txt", 3500, True, seed=1)
    write_signal_raw(root / "raw" / "test.txt", 500, False, seed=2)
    with pytest.MonkeyPatch.context() as patch:
        use_artifacts(patch, root / "artifacts")
        run_stages("t", "--set", f"raw.data_dir={root / 'raw'}",
                   modules=("raw", "split", "count", "hash_fields", "export"))
        yield "t"


def run_leaves(*options):
    leaves.main(["--tag", "t", "--set", f"leaves.trees={TREES}", "--set", "leaves.threads=1",
                 *options])
    return field_spec.open_field_files(stage_dir("t", "04_leaves"), check_ids=True)


def tree_leaves(booster):
    """Per tree: {heap number of each leaf: leaf value}."""
    tables = leaves.heap_numbers(booster)
    result = []
    for table, dump in zip(tables, booster.get_dump(dump_format="json")):
        found, stack = {}, [json.loads(dump)]
        while stack:
            node = stack.pop()
            if "leaf" in node:
                found[int(table[node["nodeid"]])] = node["leaf"]
            stack += node.get("children", [])
        result.append(found)
    return result


def test_in_sample_leaf_fields_extend_the_hashed_fields(staged):
    spec, splits = run_leaves()
    base_spec, base = field_spec.open_field_files(stage_dir("t", "03_hash"))
    out = stage_dir("t", "04_leaves")
    assert spec.num_fields == 39 + TREES and spec.field_names[39:] == [f"T{t}" for t in
                                                                         range(1, TREES + 1)]
    assert {field.kind for field in spec.fields[39:]} == {"leaf"}
    assert spec.extra["leaves"]["mode"] == "in_sample" and spec.extra["leaves"]["folds"] is None
    assert spec.extra["leaves"]["key_format"] == "tree:leaf"
    assert spec.extra["leaves"]["max_depth"] == 7 and spec.extra["leaves"]["learning_rate"] == 1
    booster = xgb.Booster(model_file=str(out / "gbdt.json"))
    leaf_values = tree_leaves(booster)
    for split in field_spec.SPLITS:
        np.testing.assert_array_equal(splits[split].fields[:, :39], base[split].fields)
        np.testing.assert_array_equal(splits[split].ids, base[split].ids)
        heaps = np.load(out / f"{split}.leaves.npy")
        for tree in range(TREES):  # every recorded leaf is a leaf of that tree, heap-numbered
            assert set(np.unique(heaps[:, tree])) <= set(leaf_values[tree])
            assert heaps[:, tree].max() < 2 ** 8
        local = splits[split].fields[:, 39:] - np.asarray(spec.offsets[39:])
        assert (local >= field_spec.FIRST_VALUE_ID).all()  # in-sample: no leaf is unseen
    assert base_spec.rows == spec.rows


def test_leaf_ids_are_the_models_own_leaves_and_hashed_like_other_keys(staged):
    spec, splits = run_leaves()
    out = stage_dir("t", "04_leaves")
    booster = xgb.Booster(model_file=str(out / "gbdt.json"))
    matrix = np.load(stage_dir("t", "04_export") / "train.gbdt.npy")
    heaps = np.load(out / "train.leaves.npy")
    again = np.zeros_like(heaps)
    leaves.predict_leaves(booster, matrix, again)
    np.testing.assert_array_equal(again, heaps)
    # The recorded leaves reproduce the model's margins: base margin + sum of their values.
    leaf_values = tree_leaves(booster)
    rate = spec.label_rate["train"]
    margin = np.log(rate / (1 - rate)) + sum(np.vectorize(leaf_values[tree].get)(heaps[:, tree])
                                             for tree in range(TREES))
    np.testing.assert_allclose(margin, booster.predict(xgb.DMatrix(matrix), output_margin=True),
                               rtol=1e-4, atol=1e-4)
    # Local ids: the training leaves' "t:leaf" hashes in ascending order, from 2.
    tree = 2
    seen = np.unique(heaps[:, tree])
    hashes = [keys.hash_key(f"{tree + 1}:{leaf}", spec.hashing["mode"]) for leaf in seen]
    local = splits["train"].fields[:, 39 + tree] - spec.offsets[39 + tree]
    expected = {leaf: 2 + rank for rank, leaf in enumerate(seen[np.argsort(hashes)])}
    assert [expected[leaf] for leaf in heaps[:, tree]] == local.tolist()
    assert spec.vocabulary_sizes[39 + tree] == 2 + len(seen)


def test_out_of_fold_leaves_never_come_from_trees_that_saw_the_row(staged, monkeypatch):
    fitted = []
    real_fit = leaves.fit_trees

    def spy(matrix, labels, keep, config, seed):
        booster = real_fit(matrix, labels, keep, config, seed)
        fitted.append((None if keep is None else np.array(keep), booster))
        return booster

    monkeypatch.setattr(leaves, "fit_trees", spy)
    spec, splits = run_leaves("--set", "leaves.mode=out_of_fold", "--set", "leaves.folds=3")
    out = stage_dir("t", "04_leaves")
    assert spec.extra["leaves"]["mode"] == "out_of_fold" and spec.extra["leaves"]["folds"] == 3
    assert spec.extra["leaves"]["key_format"] == "fold:tree:leaf"
    (full_keep, full_model), *fold_models = fitted
    assert full_keep is None and len(fold_models) == 3
    train_folds = np.load(out / "train.folds.npy")
    vocabulary = json.loads((out / "leaves.json").read_text())
    for split in field_spec.SPLITS:
        folds = np.load(out / f"{split}.folds.npy")
        heaps = np.load(out / f"{split}.leaves.npy")
        matrix = np.load(stage_dir("t", "04_export") / f"{split}.gbdt.npy")
        in_sample = np.zeros_like(heaps)
        leaves.predict_leaves(full_model, matrix, in_sample)
        for fold, (keep, booster) in enumerate(fold_models):
            rows = np.flatnonzero(folds == fold)
            assert len(rows) > 0 and keep[train_folds != fold].all()
            if split == "train":  # the trees giving a row's leaves never saw the row
                assert not keep[rows].any()
            expected = np.zeros((len(rows), TREES), np.uint16)
            leaves.predict_leaves(booster, matrix[rows], expected)
            np.testing.assert_array_equal(heaps[rows], expected)
        assert (heaps != in_sample).any()  # out-of-fold trees differ from the all-rows trees
        # Each leaf field holds the hash of "fold:tree:leaf" with the row's own fold.
        tree = 1
        local = splits[split].fields[:, 39 + tree] - spec.offsets[39 + tree]
        entry = vocabulary[tree]
        key_ids = {leaves.leaf_key(fold, tree, leaf): local_id for fold, leaf, local_id in
                   zip(entry["folds"], entry["leaves"], entry["ids"])}
        expected_ids = [key_ids.get(f"{fold + 1}:{tree + 1}:{leaf}", 0)
                        for fold, leaf in zip(folds, heaps[:, tree])]
        assert local.tolist() == expected_ids
        if split == "train":
            assert min(expected_ids) >= field_spec.FIRST_VALUE_ID
        else:  # prediction rows reach keys seen in training: their trees' leaves
            assert np.mean(local >= field_spec.FIRST_VALUE_ID) > 0.95
    hashes = {keys.hash_key(f"{fold + 1}:{tree + 1}:{leaf}", spec.hashing["mode"])
              for fold, leaf in zip(entry["folds"], entry["leaves"])}
    assert spec.vocabulary_sizes[39 + tree] == 2 + len(hashes)


def test_leaves_config_is_strict(staged):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['depth'\]"):
        leaves.main(["--tag", "t", "--set", "leaves.depth=3"])
    with pytest.raises(ValueError, match="out_of_fold needs >= 2"):
        leaves.main(["--tag", "t", "--set", "leaves.mode=out_of_fold", "--set",
                     "leaves.folds=1"])
