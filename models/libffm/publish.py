"""Publishing one libFFM model: the stage (its parameters, inputs and code), the engine run, and
the files of `artifacts/<TAG>/05_train/<ID>/`."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from models.libffm.binary import run_binary
from models.libffm.config import LibffmConfig, input_dir
from models.libffm.trainer import FitResult, run_numba
from models.train_report import constant_logloss, logloss_and_auc, write_history
from preprocessing import field_spec
from pipeline import config as config_lib
from pipeline.manifest import Stage
from pipeline.paths import stage_dir


def stage_for(tag: str, model_id: str, config: LibffmConfig) -> Stage:
    """The stage of one model. Its code is this module's import closure, which holds the whole
    package: importing models.libffm.publish runs models/libffm/__init__.py, which imports every
    module of the package."""
    return Stage(tag, "05_train", {"model_id": model_id, **config_lib.to_dict(config)},
                 inputs=[input_dir(tag, config)], code=__spec__.name,
                 unit=model_id)


def train_model(tag: str, model_id: str, config: LibffmConfig, force: bool = False) -> dict | None:
    """Trains and publishes one libFFM model; returns its metrics (None when up to date)."""
    started = time.time()
    stage = stage_for(tag, model_id, config)
    if not stage.should_run(force):
        return None
    label_rate = field_spec.FieldSpec.load(stage_dir(tag, "03_hash")).label_rate["train"]
    with stage.build() as out, tempfile.TemporaryDirectory(dir=out.parent) as cache:
        run = run_binary if config.train.engine == "binary" else run_numba
        predictions, valid_labels, result, extra = run(tag, config, out, Path(cache))
        for split, values in predictions.items():
            np.save(out / f"{split}.pred.npy", values.astype(np.float32))
        metrics = {**make_metrics(np.asarray(valid_labels), predictions["valid"], label_rate,
                                  result, time.time() - started), **extra}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        write_history(result.history, out / "history.csv", columns=None)
        stage.record(metrics=metrics)
    return metrics


def make_metrics(labels, predictions, label_rate, result: FitResult, wall_seconds) -> dict:
    """The runner's metric keys (models/train.py)."""
    valid_logloss, valid_auc = logloss_and_auc(labels, predictions)
    constant = constant_logloss(labels, label_rate)
    return {"valid_logloss": valid_logloss, "valid_auc": valid_auc, "valid_rows": len(labels),
            "constant_logloss": constant,
            "relative_information_gain": 1.0 - valid_logloss / constant,
            "examples_per_second": result.examples / max(result.train_seconds, 1e-9),
            "epochs": len(result.history), "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "train_seconds": result.train_seconds,
            "wall_seconds": wall_seconds}
