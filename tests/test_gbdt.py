"""GBDT baselines (xgboost / lightgbm): entry points, early stopping, raw categorical inputs."""

import json

import numpy as np
import pytest

from models import gbdt
from models.runner_config import config_path
from preprocessing import field_spec
from pipeline.paths import stage_dir
from tests.test_leaves import staged  # noqa: F401  (the module-scoped staged data)


@pytest.mark.parametrize("model_id", ["xgb", "lgbm", "lgbm_raw"])
def test_entry_point_publishes_predictions_from_the_best_round(staged, model_id):  # noqa: F811
    gbdt.main(["--tag", "t", "--model", model_id, "--preset", "demo", "--set",
               "train.early_stopping_rounds=5", "--set", "train.threads=1"])
    out = stage_dir("t", "05_train", model_id)
    metrics = json.loads((out / "metrics.json").read_text())
    spec = field_spec.FieldSpec.load(stage_dir("t", "03_hash"))
    valid, test = np.load(out / "valid.pred.npy"), np.load(out / "test.pred.npy")
    assert valid.shape == (spec.rows["valid"],) and test.shape == (spec.rows["test"],)
    assert valid.dtype == np.float32 and 0 < valid.min() and valid.max() < 1
    assert metrics["valid_logloss"] < metrics["constant_logloss"] - 0.02
    history = np.loadtxt(out / "history.csv", delimiter=",", skiprows=1)
    # Early stopping evaluated the same predictions that were published.
    assert metrics["best_epoch"] == history[np.argmin(history[:, 1]), 0]
    assert metrics["valid_logloss"] == pytest.approx(history[:, 1].min(), rel=1e-4)
    assert (out / ("model.json" if model_id == "xgb" else "model.txt")).exists()


def test_raw_inputs_keep_the_most_frequent_values_of_each_field():
    spec = field_spec.FieldSpec(
        fields=(field_spec.Field("I1", "int", 4, 0), field_spec.Field("C1", "cat", 6, 4),
                field_spec.Field("C2", "cat", 3, 10)),
        rows={}, hashing={}, min_count={}, label_rate={}, test_id_start=0)
    # C1 local ids 3, 5, 3, 2, 3, 5; C2 local ids 2, 2, 1, 2, 2, 2.
    fields = np.array([[0, 7, 12], [1, 9, 12], [2, 7, 11], [3, 6, 12], [0, 7, 12], [0, 9, 12]])
    codes = gbdt.category_codes(spec, fields, max_categories=2)
    assert codes[[7, 9, 6, 8, 4, 5]].tolist() == [0, 1, 2, 2, 2, 2]  # C1: 3 most, then 5
    assert codes[[12, 11, 10]].tolist() == [0, 1, 2]
    assert codes[:4].tolist() == [0, 0, 0, 0]  # integer fields are not categorical codes


def test_raw_columns_are_ints_then_category_codes(staged):  # noqa: F811
    config = gbdt.LEARNER.load_config(config_path("lgbm_raw"),
                                      overrides=["data.max_categories=3"])
    matrices, labels, types, _ = gbdt.open_matrices("t", config)
    _, splits = field_spec.open_field_files(stage_dir("t", "03_hash"))
    block = matrices["valid"][5:9]
    assert block.shape == (4, 39) and types == ["q"] * 13 + ["c"] * 26
    np.testing.assert_array_equal(block[:, :13], splits["valid"].ints[5:9])
    assert set(np.unique(block[:, 13:])) <= {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(matrices["valid"][6], block[1])
    assert len(matrices["train"]) == len(labels["train"])
