"""The experiment commands (experiments/): each end to end on tiny generated field files.

The heatmap test trains an FFM on a set with three strong planted field pairs and requires all
three to be the three strongest cells of the heatmap (28 cells: a random picture puts 0.32 of them
there on average).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from experiments import (
    adam_epsilon,
    adaptive_embedding,
    common,
    heatmaps,
    learning_curves,
    params_speed,
    poly2,
)
from preprocessing.field_spec import FieldSpec, open_field_files
from preprocessing.synthetic.field_files import write_planted_field_files
from tests.conftest import use_artifacts

FAST = ["--set", "train.jit_compile=false", "--set", "train.checkpoint_every_steps=0"]


@pytest.fixture(autouse=True)
def artifacts(tmp_path, monkeypatch):
    use_artifacts(monkeypatch, tmp_path / "artifacts")


@pytest.fixture(scope="module")
def planted_data(tmp_path_factory):
    """8 fields of 12 values, strong planted pairs F1xF2, F3xF4, F5xF6."""
    directory = tmp_path_factory.mktemp("planted") / "03_hash"
    write_planted_field_files(directory, rows=(20_000, 4_000, 500))
    return directory


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small") / "03_hash"
    write_planted_field_files(directory, rows=(4_000, 1_000, 200), first_order_scale=1.0,
                              seed=1)
    return directory


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_planted_generator_writes_verified_field_files(planted_data):
    spec, splits = open_field_files(planted_data, check_ids=True)
    assert spec.num_fields == 8 and spec.rows == {"train": 20_000, "valid": 4_000, "test": 500}
    assert 0.2 < spec.label_rate["train"] < 0.6
    assert common.truth_pairs(planted_data) == [("F1", "F2"), ("F3", "F4"), ("F5", "F6")]
    assert splits["test"].labels is None


def test_run_overrides_are_set_keys_of_the_experiment_config():
    config = common.load_experiment_config(heatmaps.HeatmapConfig, "heatmaps", (), [
        "train.epochs=1", "by_model.ipnn.model.hidden_units=[8]", "by_model.fm.train.seed=3",
        "by_model.kfm_vec.model.adaptive_embedding={c: 1}", "models=[fm, ipnn]"])
    assert config.models == ("fm", "ipnn")
    assert common.model_overrides(config, "ipnn") == ["train.epochs=1",
                                                      "model.hidden_units=[8]"]
    assert common.model_overrides(config, "lr") == ["train.epochs=1"]
    assert common.model_overrides(config, "kfm_vec")[-1] == 'model.adaptive_embedding={"c": 1}'
    with pytest.raises(ValueError, match="unknown key"):
        common.load_experiment_config(heatmaps.HeatmapConfig, "heatmaps", (), ["no_such_key=1"])
    with pytest.raises(ValueError, match="unknown section"):
        common.run_overrides({"modle": {"hidden_units": [8]}})


def test_planted_hits_counts_pairs_in_the_strongest_cells():
    names = ["A", "B", "C", "D"]
    matrix = np.zeros((4, 4))
    for (i, j), value in {(0, 1): 5.0, (2, 3): 4.0, (0, 2): 3.0, (1, 3): 1.0}.items():
        matrix[i, j] = matrix[j, i] = value
    ranking = heatmaps.ranked_pairs(matrix, names)
    assert [cell[:2] for cell in ranking[:3]] == [("A", "B"), ("C", "D"), ("A", "C")]
    hits = heatmaps.planted_hits(ranking, [("B", "A"), ("B", "D")], None)
    assert hits["hits"] == 1 and hits["planted_ranks"] == [1, 4] and hits["top_cells"] == 2
    assert hits["chance"] == pytest.approx(2 * 2 / 6)


def test_heatmaps_find_the_planted_pairs(planted_data, tmp_path):
    out = tmp_path / "heatmaps"
    results = heatmaps.main(["--data", str(planted_data), "--out", str(out),
                             "--set", "models=[ffm]", "--set", "train.epochs=3", *FAST])
    hits = results["ffm"]["row_std"]
    assert hits["hits"] == 3, hits  # F1xF2, F3xF4, F5xF6 are the three strongest of 28 cells
    for name in ("heatmaps.png", "heatmaps_mean_embedding.png", "interactions.csv", "summary.md",
                 "config.resolved.json"):
        assert (out / name).stat().st_size > 0
    rows = read_csv(out / "interactions.csv")
    assert len(rows) == 2 * 28  # two statistics, every pair once
    assert "3 of 3 in the top 3" in (out / "summary.md").read_text()
    assert json.loads((out / "config.resolved.json").read_text())["config"]["models"] == ["ffm"]


def test_heatmap_terms_match_the_model(small_data, monkeypatch):
    """The FM row_std cell (i, j) is the spread of <v_i, v_j> over the rows."""
    import keras

    from models import registry

    spec = FieldSpec.load(small_data)
    keras.utils.set_random_seed(0)
    model = registry.build("fm", spec, embedding_dim=4)
    ids = np.asarray(open_field_files(small_data, ("valid",))[1]["valid"].fields[:300])
    monkeypatch.setattr(heatmaps, "CHUNK_ROWS", 128)  # several chunks
    matrices = heatmaps.interaction_matrices(model, "fm", ids)
    vectors = keras.ops.convert_to_numpy(model.embedding(ids)).astype(np.float64)
    expected = np.std(np.sum(vectors[:, 2] * vectors[:, 5], axis=1))
    matrix = matrices["row_std"]
    assert matrix[2, 5] == pytest.approx(expected, rel=1e-5)
    assert matrix[5, 2] == matrix[2, 5] and np.all(np.diag(matrix) == 0)
    mean = vectors.mean(axis=0)
    assert matrices["mean_embedding"][2, 5] == pytest.approx(abs(mean[2] @ mean[5]), rel=1e-6)


def test_poly2_generator_follows_the_paper():
    data = poly2.Poly2Data(num_fields=40, feature_counts=(200,), train_rows=4000, valid_rows=2000,
                           test_rows=10)
    sizes, splits = poly2.generate(data, 200)
    assert sizes.sum() == 200 and sizes.min() >= 1 and len(sizes) == 40
    values, f, labels = splits["valid"]
    assert np.all(values < sizes) and abs(labels.mean() - 0.5) < 0.05
    from sklearn.metrics import roc_auc_score
    assert 0.7 < roc_auc_score(labels, f) < 0.99  # learnable, with label noise


def test_poly2_end_to_end(tmp_path):
    out = tmp_path / "poly2"
    table = poly2.main(["--out", str(out), "--set", "data.num_fields=6",
                        "--set", "data.feature_counts=[30]", "--set", "data.train_rows=3000",
                        "--set", "data.valid_rows=1000", "--set", "data.test_rows=100",
                        "--set", "runs=[dnn_1x128]",
                        "--set", "models.dnn_1x128.model.hidden_units=[16]", *FAST])
    bound, dnn = table
    assert bound["model"] == "poly-2 (bound)" and dnn["model"] == "dnn_1x128"
    assert 0.5 < dnn["valid_auc"] < bound["valid_auc"]  # the bound is the truth's own AUC
    for name in ("poly2_dnn_curves.png", "poly2_auc.png", "poly2.csv", "summary.md",
                 "config.resolved.json"):
        assert (out / name).stat().st_size > 0
    history = common.read_history(out / "runs/poly2_N30/05_train/dnn_1x128/history.csv")
    assert len(history) >= 4  # evaluations_per_epoch points on the curve


def test_adam_epsilon_table_and_non_convergence(small_data, tmp_path):
    out = tmp_path / "adam"
    options = ["--data", str(small_data), "--out", str(out), "--set", "models=[lr]",
               "--set", "epsilons=[1.0e-2, 1.0e-8]", "--set", "train.epochs=1",
               "--set", "train.batch_size=100", *FAST]
    table = adam_epsilon.main(options)
    assert [row["epsilon"] for row in table] == [1e-2, 1e-8]
    assert all(row["converged"] and row["valid_auc"] > 0.55 for row in table)
    assert "did not converge" not in (out / "adam_epsilon.md").read_text()
    # Same runs (skipped as up to date), a bar no model can pass: every run is reported.
    table = adam_epsilon.main(options + ["--set", "min_information_gain=0.99"])
    assert not any(row["converged"] for row in table)
    assert (out / "adam_epsilon.md").read_text().count("did not converge") >= 2
    assert adam_epsilon.convergence({"valid_logloss": math.nan, "valid_auc": 0.5,
                                     "relative_information_gain": 0.0}, 0.001)
    assert adam_epsilon.convergence(None, 0.001, "ValueError: Input contains NaN")


def test_adaptive_embedding_sizes(small_data, tmp_path):
    out = tmp_path / "adaptive"
    table = adaptive_embedding.main([
        "--data", str(small_data), "--out", str(out), "--set", "models=[kfm_vec, lr]",
        "--set", "scales=[1.0]", "--set", "train.epochs=1", *FAST])
    assert [row["setting"] for row in table] == ["fixed", "c=1"]
    fixed, adaptive = table
    assert fixed["mean_k"] == fixed["K"] == 8  # the demo preset's embedding_dim
    assert adaptive["mean_k"] == round(math.log(14))  # every field has 12 values + 2 reserved
    assert adaptive["embedding_values_used"] == 8 * 14 * 3
    summary = (out / "adaptive_embedding.md").read_text()
    assert "lr (arch lr)" in summary  # reported as unsupported, not trained
    assert (out / "adaptive_embedding.png").stat().st_size > 0


def test_params_speed(small_data, tmp_path):
    out = tmp_path / "speed"
    table = params_speed.main(["--data", str(small_data), "--out", str(out),
                               "--set", "models=[fm]", "--set", "rows=2000",
                               "--set", "valid_rows=500", *FAST])
    (fm,) = table
    total = FieldSpec.load(small_data).total_vocabulary_size
    assert fm["parameters"] == total * (1 + 8) + 1  # weights, k = 8 (demo preset), the bias
    assert fm["train_rows"] == 2000 and fm["steady_examples_per_second"] > 0
    assert read_csv(out / "params_speed.csv")[0]["model"] == "fm"
    assert (out / "params_speed.png").stat().st_size > 0


def test_learning_curves_train_and_from_pipeline(small_data, tmp_path):
    out = tmp_path / "curves"
    histories = learning_curves.main([
        "--data", str(small_data), "--out", str(out), "--set", "models=[lr]",
        "--set", "evaluations_per_epoch=4", "--set", "train.epochs=1",
        "--set", "train.early_stopping_patience=0", *FAST])
    assert [row["examples"] for row in histories["lr"]] == [1000, 2000, 3000, 4000]
    assert all(row["train_logloss"] > 0 for row in histories["lr"])
    assert len(read_csv(out / "learning_curves.csv")) == 4
    # The same histories read back as a pipeline tree's 05_train runs.
    again = learning_curves.main(["--tag", common.DATA_TAG, "--artifacts", str(out / "runs"),
                                  "--out", str(tmp_path / "again"),
                                  "--set", "models=[lr]", "--set", "from_pipeline=true"])
    assert again == histories
    assert (tmp_path / "again" / "learning_curves.png").stat().st_size > 0
