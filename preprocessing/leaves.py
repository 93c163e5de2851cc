"""Stage 04 leaves: the winners' GBDT leaf features, appended to the field files as 30 fields.

Reads: `03_hash/` (field files), `04_export/{split}.gbdt.npy` (the winners' 13 + K GBDT inputs).
Writes `04_leaves/`, readable like `03_hash/` with `open_field_files`:
- `{split}.fields.npy`: int32 [rows, 39 + trees], the hashed fields then one field per tree;
- `field_spec.json`: the 03 spec with fields T1..T30 (kind "leaf") appended; `extra.leaves`
  records the mode, folds, library and tree settings;
- `{split}.labels.npy`, `{split}.ids.npy`, `{split}.ints.npy`: hard links to (or copies of) 03's;
- `{split}.leaves.npy`: uint16 [rows, trees], the leaf reached in each tree, as a heap node number
  (root 1, children 2i and 2i+1: the winners' leaf ids, 128..255 for depth-7 leaves);
- `gbdt.json` (the model fitted on all training rows, xgboost JSON; it gives every leaf in
  in_sample mode), and in out_of_fold mode `gbdt.fold<k>.json` and `{split}.folds.npy` (uint8:
  the fold whose trees give the row's leaves); `leaves.json` (per tree: the fold, leaf, local id
  and training count of every key); `{split}.ffm` with `leaves.libffm`.

The winners (3 Idiots, solvers/gbdt) fitted 30 trees of depth 7 with Friedman's LK-TreeBoost:
Newton leaf values, no shrinkage, no subsampling, no minimum leaf size, no regularisation, base
score the training log-odds. Here: xgboost with `eta` 1, depthwise growth to depth 7,
`lambda` 0, `min_child_weight` 0, `gamma` 0, no subsampling and `base_score` the training rate,
so leaf values are the same Newton steps; the split gain differs (xgboost's Newton gain
G^2/H where the winners maximised the gradient variance sl^2/nl + sr^2/nr), and `hist` bins the
integer columns into 256 quantiles (`tree_method: exact` searches every threshold, like the
winners, but needs the GBDT matrix in RAM).

Each tree t becomes a categorical field, hashed with the 03 hash mode and numbered like the other
fields: local id 0 = a leaf no training row reached (OOV), 1 = rare (unused: the winners kept
every leaf), 2.. = keys in ascending hash order. Modes (`field_spec.json` extra.leaves.mode):
- `in_sample` (the winners): the trees fitted on all training rows give every row's leaves; the
  key is the winners' "t:leaf" (t from 1, leaf the heap number).
- `out_of_fold`: training rows are split into K random folds and the trees fitted on the other
  K-1 folds give a row's leaves, so they never come from trees that saw it; validation and test
  rows get a random fold too and the leaves of that fold's trees, so they see the same trees as
  the training rows. The key "k:t:leaf" (fold k from 1) names the trees: leaf l of tree t means
  something else in every fit, and in-sample keys can never collide with out-of-fold ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import xgboost as xgb

from preprocessing import export, field_spec, keys
from preprocessing.chunks import CHUNK_ROWS, ChunkIterator
from preprocessing.npy import NpyWriter
from pipeline import config as config_lib
from pipeline import errors, metrics
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir


def training_matrix(matrix, labels, keep, tree_method: str, max_bin: int, threads: int):
    """A DMatrix of the kept rows, fed chunk by chunk: `hist` gets the quantised
    QuantileDMatrix (about one byte per value); `exact` and `approx` need the values in RAM."""
    iterator = ChunkIterator(matrix, labels, keep)
    if tree_method != "hist":
        return xgb.DMatrix(iterator, nthread=threads)
    return xgb.QuantileDMatrix(iterator, max_bin=max_bin, nthread=threads)


# ---------------------------------------------------------------------------------------------
# Trees and leaves

def tree_parameters(config: settings.LeavesConfig, base_score: float, seed: int) -> dict:
    return {"objective": "binary:logistic", "eta": config.learning_rate,
            "max_depth": config.max_depth, "grow_policy": "depthwise",
            "lambda": config.reg_lambda, "alpha": 0.0, "gamma": 0.0,
            "min_child_weight": config.min_child_weight, "subsample": 1.0,
            "colsample_bytree": 1.0, "tree_method": config.tree_method,
            "max_bin": config.max_bin, "base_score": base_score, "seed": seed,
            "nthread": config.threads or os.cpu_count(), "eval_metric": "logloss"}


def fit_trees(matrix, labels, keep, config: settings.LeavesConfig, seed: int) -> xgb.Booster:
    """Fits the winners' trees on the rows where `keep` is true (all rows when None)."""
    kept_labels = labels if keep is None else np.asarray(labels)[np.asarray(keep)]
    rate = float(np.mean(kept_labels))
    threads = config.threads or os.cpu_count()
    data = training_matrix(matrix, labels, keep, config.tree_method, config.max_bin, threads)
    return xgb.train(tree_parameters(config, rate, seed), data, num_boost_round=config.trees)


def heap_numbers(booster: xgb.Booster) -> list[np.ndarray]:
    """Per tree, an array xgboost node id -> heap number (root 1, "yes" child 2i, "no" 2i+1).

    xgboost numbers nodes in creation order; the heap number is the winners' leaf id. "yes" is
    `x < threshold`, the winners' left branch.
    """
    tables = []
    for dump in booster.get_dump(dump_format="json"):
        nodes, stack = {}, [(json.loads(dump), 1)]
        while stack:
            node, heap = stack.pop()
            nodes[node["nodeid"]] = heap
            for child in node.get("children", []):
                stack.append((child, 2 * heap if child["nodeid"] == node["yes"] else 2 * heap + 1))
        table = np.zeros(max(nodes) + 1, np.uint16)
        table[list(nodes)] = list(nodes.values())
        tables.append(table)
    return tables


def predict_leaves(booster: xgb.Booster, matrix, out, rows=None) -> None:
    """Heap leaf numbers uint16 [len(rows), trees] of `matrix[rows]` written into `out[rows]`."""
    tables = heap_numbers(booster)
    rows = np.arange(len(matrix)) if rows is None else rows
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        contiguous = len(chunk) and chunk[-1] - chunk[0] == len(chunk) - 1
        data = np.asarray(matrix[chunk[0]:chunk[-1] + 1] if contiguous else matrix[chunk])
        nodes = booster.predict(xgb.DMatrix(data), pred_leaf=True).astype(np.int64)
        nodes = nodes.reshape(len(chunk), len(tables))
        out[chunk] = np.stack([table[nodes[:, tree]] for tree, table in enumerate(tables)], 1)


def leaf_key(fold: int | None, tree: int, leaf: int) -> str:
    """"t:leaf" (in-sample, the winners') or "k:t:leaf" (out-of-fold, fold k), t and k from 1."""
    return f"{tree + 1}:{leaf}" if fold is None else f"{fold + 1}:{tree + 1}:{leaf}"


def leaf_vocabulary(train_leaves, trees: int, hashing: dict, train_folds=None,
                    folds: int = 1) -> list[dict]:
    """Per tree: the (fold, leaf) pairs training rows reached, their key hashes and local ids.

    Args:
        train_folds: uint8 [rows], the fold whose trees gave each row's leaves (out-of-fold
            mode); None in in-sample mode.
    Returns [{"folds": folds (None in-sample), "leaves": heap numbers, "ids": local ids,
    "counts": training rows, "size": ids in the field (2 reserved + distinct hashes)}].
    """
    counts = np.zeros((trees, folds << 16), np.int64)
    for start in range(0, len(train_leaves), CHUNK_ROWS):
        block = np.asarray(train_leaves[start:start + CHUNK_ROWS]).astype(np.int64)
        if train_folds is not None:
            block += np.asarray(train_folds[start:start + CHUNK_ROWS], np.int64)[:, None] << 16
        for tree in range(trees):
            counts[tree] += np.bincount(block[:, tree], minlength=folds << 16)
    vocabulary = []
    for tree in range(trees):
        codes = np.flatnonzero(counts[tree])
        fold_of, leaves = codes >> 16, codes & 0xFFFF
        hashes = np.array([keys.hash_key(leaf_key(None if train_folds is None else int(fold),
                                                  tree, int(leaf)),
                                         hashing["mode"], hashing["md5_bins"])
                           for fold, leaf in zip(fold_of, leaves)], np.uint64)
        distinct = np.unique(hashes)
        vocabulary.append({"folds": None if train_folds is None else fold_of.tolist(),
                           "leaves": leaves.tolist(),
                           "ids": (field_spec.FIRST_VALUE_ID
                                   + np.searchsorted(distinct, hashes)).tolist(),
                           "counts": counts[tree, codes].tolist(),
                           "size": field_spec.FIRST_VALUE_ID + len(distinct)})
    return vocabulary


def leaf_spec(spec: field_spec.FieldSpec, vocabulary: list[dict], provenance: dict):
    names = [(f"T{tree + 1}", "leaf", entry["size"]) for tree, entry in enumerate(vocabulary)]
    taken = set(spec.field_names) & {name for name, _, _ in names}
    if taken:
        raise errors.InputError(f"03_hash/field_spec.json already has fields {sorted(taken)}")
    extended = spec.with_fields(names, leaves=provenance)
    return dataclasses.replace(extended, min_count={**extended.min_count, "leaf": 1})


def leaf_tables(vocabulary: list[dict], out_of_fold: bool = False) -> np.ndarray:
    """int32 [trees, folds << 16]: (fold, heap number) -> local id (0: OOV); one fold unless
    `out_of_fold`."""
    folds = 1 + max(max(entry["folds"]) for entry in vocabulary) if out_of_fold else 1
    tables = np.zeros((len(vocabulary), folds << 16), np.int32)
    for tree, entry in enumerate(vocabulary):
        codes = np.asarray(entry["leaves"], np.int64)
        if out_of_fold:
            codes += np.asarray(entry["folds"], np.int64) << 16
        tables[tree, codes] = entry["ids"]
    return tables


def leaf_ids(tables: np.ndarray, leaves, offsets, row_folds=None) -> np.ndarray:
    """int32 [rows, trees]: the global id of each tree's (fold, leaf) key of heap leaf numbers
    `leaves` [rows, trees] (`row_folds`: uint8 [rows] in out-of-fold mode, else None)."""
    block = np.asarray(leaves).astype(np.int64)
    if row_folds is not None:
        block += np.asarray(row_folds, np.int64)[:, None] << 16
    return tables[np.arange(len(tables)), block] + np.asarray(offsets, np.int32)


def write_fields(path: Path, base_fields, leaves, vocabulary: list[dict], offsets,
                 row_folds=None) -> np.ndarray:
    """int32 [rows, F + trees]: the 03 fields, then global ids of each tree's (fold, leaf) key.

    row_folds: uint8 [rows], the fold of each row's leaves (out-of-fold mode), else None.
    """
    tables = leaf_tables(vocabulary, row_folds is not None)
    rows, width = base_fields.shape
    with NpyWriter(path, np.int32, (width + len(vocabulary),)) as out:
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, rows)
            folds = None if row_folds is None else row_folds[start:stop]
            ids = leaf_ids(tables, leaves[start:stop], offsets, folds)
            out.append(np.concatenate([np.asarray(base_fields[start:stop]), ids], axis=1))
    return np.load(path, mmap_mode="r")


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# ---------------------------------------------------------------------------------------------
# The stage

def build(tag: str, config: settings.LeavesConfig, seed: int, out: Path) -> field_spec.FieldSpec:
    hash_dir, export_dir = stage_dir(tag, "03_hash"), stage_dir(tag, "04_export")
    spec, splits = field_spec.open_field_files(hash_dir)
    matrices = field_spec.open_gbdt_inputs(export_dir)
    labels = np.asarray(splits["train"].labels)
    leaves = {split: np.lib.format.open_memmap(out / f"{split}.leaves.npy", "w+", np.uint16,
                                               (spec.rows[split], config.trees))
              for split in field_spec.SPLITS}
    model = fit_trees(matrices["train"], labels, None, config, seed)
    model.save_model(out / "gbdt.json")
    row_folds = {split: None for split in field_spec.SPLITS}
    if config.mode == "in_sample":
        for split in field_spec.SPLITS:
            predict_leaves(model, matrices[split], leaves[split])
    else:
        rng = np.random.default_rng(seed)
        for split in field_spec.SPLITS:  # train first: its folds do not depend on the others
            row_folds[split] = rng.integers(config.folds, size=spec.rows[split], dtype=np.uint8)
            np.save(out / f"{split}.folds.npy", row_folds[split])
        for fold in range(config.folds):
            fold_model = fit_trees(matrices["train"], labels, row_folds["train"] != fold,
                                   config, seed)
            fold_model.save_model(out / f"gbdt.fold{fold}.json")
            for split in field_spec.SPLITS:
                predict_leaves(fold_model, matrices[split], leaves[split],
                               np.flatnonzero(row_folds[split] == fold))
    vocabulary = leaf_vocabulary(leaves["train"], config.trees, spec.hashing, row_folds["train"],
                                 config.folds if config.mode == "out_of_fold" else 1)
    (out / "leaves.json").write_text(json.dumps(vocabulary) + "\n")
    provenance = {**config_lib.to_dict(config), "library": f"xgboost {xgb.__version__}",
                  "seed": seed, "valid_logloss": gbdt_logloss(model, matrices["valid"],
                                                              splits["valid"].labels)}
    provenance["key_format"] = "tree:leaf" if config.mode == "in_sample" else "fold:tree:leaf"
    if config.mode == "in_sample":
        provenance["folds"] = None
    new_spec = leaf_spec(spec, vocabulary, provenance)
    offsets = new_spec.offsets[spec.num_fields:]
    for split, arrays in splits.items():
        fields = write_fields(out / f"{split}.fields.npy", arrays.fields, leaves[split],
                              vocabulary, offsets, row_folds[split])
        for name, path in field_spec.split_paths(hash_dir, split).items():
            if name != "fields" and path.exists():
                link_or_copy(path, out / path.name)
        if config.libffm:
            export.write_libffm(out / f"{split}.ffm", dataclasses.replace(arrays, fields=fields))
    new_spec.write(out)
    return new_spec


def gbdt_logloss(model: xgb.Booster, matrix, labels) -> float:
    """Validation logloss of the leaf model itself (a diagnostic: the winners' GBDT alone)."""
    predictions = np.concatenate([
        model.predict(xgb.DMatrix(np.asarray(matrix[start:start + CHUNK_ROWS])))
        for start in range(0, len(matrix), CHUNK_ROWS)])
    return metrics.logloss(labels, predictions)


def load_config(args) -> tuple[settings.PipelineConfig, settings.LeavesConfig]:
    """The pipeline config and its leaves section from the shared stage command line."""
    pipeline = settings.from_args(args)
    return pipeline, pipeline.leaves


def make_stage(tag: str, config: settings.PipelineConfig,
               leaves: settings.LeavesConfig | None = None) -> Stage:
    """The 04_leaves stage; `leaves` defaults to the pipeline config's section."""
    leaves = leaves or config.leaves
    return Stage(tag, "04_leaves", {**config_lib.to_dict(leaves), "seed": config.seed},
                 [stage_dir(tag, "03_hash"), stage_dir(tag, "04_export")])


def main(argv=None) -> None:
    args = settings.stage_parser(__doc__.splitlines()[0]).parse_args(argv)
    pipeline, config = load_config(args)
    if not pipeline.export.gbdt:
        print("[04_leaves] skipped: export.gbdt is false, so there are no GBDT inputs to grow "
              "trees on (models that read 04_leaves need it true)")
        return
    stage = make_stage(args.tag, pipeline, config)
    if not stage.should_run(args.force):
        return
    with stage.build() as out:
        spec = build(args.tag, config, pipeline.seed, out)
        stage.record(rows=spec.rows, leaves=spec.extra["leaves"],
                     leaf_field_sizes=spec.vocabulary_sizes[-config.trees:])
    print(f"  {config.trees} leaf fields ({config.mode}), {spec.num_fields} fields, "
          f"GBDT valid logloss {spec.extra['leaves']['valid_logloss']:.5f}")


if __name__ == "__main__":
    main()
