"""The learner protocol (models/learner.py): every model id names its learner in one table, and
the Keras runner, libFFM and GBDT publish the same files and metric keys through one publisher."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from models import learner
from models import stage as model_stage
from models.runner_config import CONFIG_DIR, config_path
from preprocessing import field_spec
from pipeline import config as config_lib
from pipeline import errors
from pipeline.manifest import read_manifest
from pipeline.paths import stage_dir
from tests.test_runner import make_field_files

ROWS = (4000, 1000, 500)
COMMON_FILES = {"metrics.json", "history.csv", "valid.pred.npy", "test.pred.npy",
                "learning_curve.png", "config.resolved.json", "config.resolved.yaml",
                "manifest.json"}
LEARNERS = [  # (learner, model id, its own files, --set overrides that keep the fit in seconds)
    ("keras", "lr", {"model.keras", "tensorboard"},
     ["train.epochs=1", "train.jit_compile=false", "train.evals_per_epoch=2"]),
    ("libffm", "libffm", {"model.npy"},
     ["data.stage=03_hash", "train.threads=1", "train.epochs=3"]),
    ("gbdt", "xgb", {"model.json"},
     ["train.rounds=30", "train.early_stopping_rounds=5", "train.threads=1"]),
]


def test_every_model_id_names_a_learner_of_the_one_table():
    paths = sorted(CONFIG_DIR.glob("*.yaml"))
    assert len(paths) > 20
    for path in paths:
        kind = learner.learner_kind(path.stem)
        assert kind in model_stage.LEARNERS, path.name
        model_learner = model_stage.learner_for(path.stem)
        assert model_learner.code.startswith(model_stage.LEARNERS[kind]), path.name
        presets = config_lib.load_yaml(path)["presets"]
        for preset in presets:
            assert model_learner.load_config(path, preset).preset == preset
    kinds = {path.stem: learner.learner_kind(path.stem) for path in paths}
    assert {kinds[model_id] for model_id in ("xgb", "lgbm", "lgbm_raw")} == {"gbdt"}
    assert {kinds[model_id] for model_id in ("libffm", "libffm_winners")} == {"libffm"}
    assert {kinds[model_id] for model_id in ("lr", "ipnn", "kfm_kaggle")} == {"keras"}


def test_an_unknown_learner_is_an_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "odd.yaml").write_text("learner: svm\npresets: {paper: {}}\n")
    monkeypatch.setattr(learner, "config_path", lambda model_id: tmp_path / f"{model_id}.yaml")
    monkeypatch.setattr(model_stage, "config_path", lambda model_id: tmp_path / f"{model_id}.yaml")
    with pytest.raises(errors.InputError, match=r"odd.yaml: learner: 'svm' is not one of"):
        model_stage.learner_for("odd")


def write_gbdt_export(tag: str) -> None:
    """04_export as stage 04 writes it for the GBDT (float32 features per split, column names),
    from the local ids of 03_hash's fields."""
    spec, splits = field_spec.open_field_files(stage_dir(tag, "03_hash"))
    offsets = np.array([field.offset for field in spec.fields])
    directory = stage_dir(tag, "04_export")
    directory.mkdir(parents=True)
    for split, arrays in splits.items():
        np.save(directory / f"{split}.gbdt.npy",
                (np.asarray(arrays.fields) - offsets).astype(np.float32))
    (directory / "gbdt_columns.json").write_text(json.dumps(spec.field_names))
    (directory / "manifest.json").write_text(json.dumps({"fingerprint": "tiny-export"}))


@pytest.mark.parametrize("kind, model_id, own_files, overrides", LEARNERS,
                         ids=[entry[0] for entry in LEARNERS])
def test_each_learner_publishes_the_same_files_and_metric_keys(artifacts, kind, model_id,
                                                               own_files, overrides):
    make_field_files("tiny", rows=ROWS)
    write_gbdt_export("tiny")
    model_learner = model_stage.learner_for(model_id)
    config = model_learner.load_config(config_path(model_id), "demo", overrides)
    metrics = learner.train(model_learner, "tiny", model_id, config)
    out = stage_dir("tiny", "05_train", model_id)
    assert {path.name for path in out.iterdir()} == COMMON_FILES | own_files

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics == read_manifest(out)["metrics"]
    assert [key for key in saved if key in learner.COMMON_METRICS] == \
        list(learner.COMMON_METRICS)
    assert {"parameter_count", "train_rows"} <= set(saved)
    labels = np.load(stage_dir("tiny", "03_hash") / "valid.labels.npy")
    predictions = {split: np.load(out / f"{split}.pred.npy") for split in ("valid", "test")}
    assert {split: (values.dtype, values.shape) for split, values in predictions.items()} == \
        {"valid": (np.float32, (ROWS[1],)), "test": (np.float32, (ROWS[2],))}
    assert saved["valid_logloss"] == pytest.approx(
        log_loss(labels, predictions["valid"].astype(np.float64)), rel=1e-6)
    assert saved["valid_rows"] == ROWS[1]
    assert saved["valid_logloss"] < saved["constant_logloss"]  # each learned something
    assert saved["relative_information_gain"] == \
        pytest.approx(1 - saved["valid_logloss"] / saved["constant_logloss"])

    history = pd.read_csv(out / "history.csv")
    assert len(history) >= 1 and "valid_logloss" in history.columns
    assert saved["valid_logloss"] == pytest.approx(history["valid_logloss"].min(), rel=1e-4)
    assert config_lib.load_yaml(out / "config.resolved.yaml") == \
        json.loads((out / "config.resolved.json").read_text())
    assert (out / "learning_curve.png").stat().st_size > 5000
    assert learner.train(model_learner, "tiny", model_id, config) is None  # done: skipped
