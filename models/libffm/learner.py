"""libFFM as a stage-05 learner (`models.learner.Learner`): the stage (its parameters, inputs and
code), a fit with the numba or the binary engine, and a trial on the tuning slice."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from models import learner
from models.libffm.binary import run_binary
from models.libffm.config import LibffmConfig
from models.libffm.rows import FieldRows, open_inputs
from models.libffm.trainer import fit, initial_state, run_numba
from preprocessing import field_spec
from pipeline import errors
from pipeline.manifest import Stage
from pipeline.paths import stage_dir


class Libffm(learner.ConfigLearner):
    """The libFFM algorithm (numba) or the real ffm-train (`train.engine: binary`). Its stage's
    code is this module's import closure: every module of the package but `__main__`."""
    config_class, code = LibffmConfig, __spec__.name

    @staticmethod
    def inputs(tag: str, config: LibffmConfig) -> list[Path]:
        return [stage_dir(tag, config.data.stage)]

    @contextlib.contextmanager
    def fit(self, tag: str, model_id: str, config: LibffmConfig, stage: Stage,
            resume: bool = False):
        """Trains (no checkpoints: `resume` starts over); the model file and the engine's cache
        live in a temporary folder beside the stage's until the publish moves the model."""
        label_rate = field_spec.FieldSpec.load(stage_dir(tag, "03_hash")).label_rate["train"]
        stage.directory.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=stage.directory.parent) as scratch:
            files, cache = Path(scratch) / "model", Path(scratch) / "cache"
            files.mkdir()
            cache.mkdir()
            run = run_binary if config.train.engine == "binary" else run_numba
            predictions, valid_labels, result, extra = run(tag, config, files, cache)

            def move_files(out: Path) -> None:
                for path in files.iterdir():
                    os.replace(path, out / path.name)

            yield learner.Fitted(
                predictions, np.asarray(valid_labels), label_rate, result.history,
                epochs=len(result.history), best_epoch=result.best_epoch,
                stopped_early=result.stopped_early, train_seconds=result.train_seconds,
                examples=result.examples, extra=extra, write_files=move_files,
                title=f"{model_id} (libFFM, {config.train.engine} engine)")

    def trial(self, tag: str, model_id: str, config: LibffmConfig, fraction: float,
              on_evaluate=None) -> dict:
        """Epochs on the training split's head, auto-stopping on its tail (never pruned)."""
        if config.data.format != "fields" or config.train.engine != "numba":
            raise errors.InputError("tuning libFFM needs data.format: fields and "
                                    "train.engine: numba")
        with tempfile.TemporaryDirectory(prefix="criteo-pnn-trial-libffm-") as scratch:
            rows, n, m = open_inputs(tag, config, Path(scratch))
            train = rows["train"]
            cut = learner.holdout_split(len(train), fraction)
            holdout = FieldRows(train.ids[cut:], train.labels[cut:])
            state = initial_state(n, m, config.model, config.train.seed)
            result = fit(state, train.head(cut).head(config.train.max_train_rows),
                         holdout.head(config.train.max_valid_rows), config.model,
                         config.train, Path(scratch) / "model.npy")
        return {"valid_logloss": float(result.history[result.best_epoch - 1]["valid_logloss"]),
                "epochs": len(result.history), "best_epoch": result.best_epoch}


LEARNER = Libffm()
