"""The Keras training runner: `python -m models.train --tag TAG --model ID [--preset P] [--resume]`.

Reads `artifacts/<TAG>/<train.input_stage>/` (03_hash or 04_leaves), builds `model.arch` from
the registry with the YAML's hyperparameters, trains with sparse row updates (`models/engine/`),
early-stops on validation logloss (and, with `train.lr_decay_factor` < 1, lowers the learning
rate on its plateaus) and hands the best weights' predictions, model.keras and tensorboard/
(event files) to the publisher (`models/learner.py`), which writes `05_train/<ID>/`.

Checkpoints (weights, optimiser slots, learning rate, data position, history) go to
`05_train/.checkpoints/<ID>/` every `checkpoint_every_steps`; `--resume` continues from there. The
data order is a function of (seed, epoch) and dropout state lives in model variables, so a resumed
deterministic run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
import time
import typing
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from models import data, distribute, learner, optimizers, precision, registry
from models import train_report as report
from models.cli import learner_main
from models.engine import tune_memory_allocator
from models.runner_config import RunnerConfig, TrainConfig, load_runner_config
from preprocessing import field_spec
from pipeline import config as config_lib
from pipeline.atomic import replacing
from pipeline.manifest import Stage
from pipeline.metrics import correct_negative_sampling, logloss_and_auc
from pipeline.paths import stage_dir


@dataclasses.dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""
    epoch: int = 0
    step_in_epoch: int = 0
    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0
    loss_sum: float = 0.0  # per-example data loss summed since the last evaluation
    loss_rows: int = 0
    best_logloss: float = float("inf")
    best_examples: int = 0
    best_steps: int = -1
    evaluations_without_improvement: int = 0
    learning_rate_decays: int = 0
    last_eval_examples: int = -1
    stopped_early: bool = False
    history: list = dataclasses.field(default_factory=list)


def stage_config(model_id: str, config: RunnerConfig) -> dict:
    return {"model_id": model_id, "preset": config.preset, "model": config.model,
            "train": config_lib.to_dict(config.train), "backend": keras.backend.backend()}


def load_pretrained_fm(tag: str, model, model_id: str) -> None:
    """Initialises `model` from the trained FM `model_id` of this tag (FNN's pre-training)."""
    if not hasattr(model, "load_fm"):
        raise ValueError(f"config.train.pretrained_fm: {type(model).__name__} has no load_fm "
                         "(FNN's pre-training); remove the key")
    path = stage_dir(tag, "05_train", model_id) / "model.keras"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; config.train.pretrained_fm needs model "
                                f"{model_id} trained first (list it before this one in models)")
    model.load_fm(keras.saving.load_model(path, compile=False))


@dataclasses.dataclass(frozen=True)
class Keras:
    """The runner as a stage-05 learner (`models.learner.Learner`)."""
    # (arch, field_spec, **hyperparameters) -> keras.Model; None: the registry's
    build_model: typing.Callable | None = None
    interrupt_after_steps: int | None = None  # stop there unpublished, as a kill would (tests)
    code: typing.ClassVar[str] = __spec__.name

    load_config = staticmethod(load_runner_config)

    def stage_for(self, tag: str, model_id: str, config: RunnerConfig) -> Stage:
        inputs = [stage_dir(tag, config.train.input_stage)]
        if config.train.pretrained_fm:
            inputs.append(stage_dir(tag, "05_train", config.train.pretrained_fm))
        return Stage(tag, "05_train", stage_config(model_id, config), inputs=inputs,
                     code=self.code, unit=model_id)

    @contextlib.contextmanager
    def fit(self, tag: str, model_id: str, config: RunnerConfig, stage: Stage,
            resume: bool = False):
        """Trains (from the last checkpoint with `resume`); yields the best weights' fit, None
        when interrupted. A worker other than the chief trains in step and publishes nothing."""
        run = TrainingRun(self, tag, config, stage)
        if resume:
            run.restore_checkpoint()
        if run.progress.steps == 0:  # a fresh start: a killed run's event file is not this run's
            shutil.rmtree(run.checkpoint_dir / "tensorboard", ignore_errors=True)
        if not run.fit():
            yield None
            return
        if run.chief:
            run.restore_best()
        yield run.fitted(f"{model_id} ({config.arch})")
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the shared .checkpoints folder, once empty
            run.checkpoint_dir.parent.rmdir()

    def trial(self, tag: str, model_id: str, config: RunnerConfig, fraction: float,
              on_evaluate) -> dict:
        spec, splits = field_spec.open_field_files(stage_dir(tag, config.train.input_stage))
        rows = spec.rows["train"]
        cut = learner.holdout_split(rows, fraction)
        parts = {"train": learner.split_rows(splits["train"], slice(0, cut)),
                 "valid": learner.split_rows(splits["train"], slice(cut, rows))}
        spec = dataclasses.replace(
            spec, rows={"train": cut, "valid": rows - cut, "test": 0},
            label_rate={split: float(np.mean(part.labels)) for split, part in parts.items()})
        return self.fit_slice(tag, model_id, config, (spec, parts), on_evaluate)

    def fit_slice(self, tag: str, model_id: str, config: RunnerConfig, data,
                  on_evaluate) -> dict:
        """Trains on `data` (field_spec, {"train", "valid"}) with its checkpoints in a temporary
        folder; the best validation logloss and when it was reached."""
        stage = self.stage_for(tag, model_id, config)
        with tempfile.TemporaryDirectory(prefix=f"criteo-pnn-trial-{model_id}-") as scratch:
            run = TrainingRun(self, tag, config, stage, data, on_evaluate, Path(scratch))
            run.fit()
            run.summary.close()
        progress = run.progress
        return {"valid_logloss": progress.best_logloss, "evaluations": len(progress.history),
                "epochs": progress.examples / run.train_rows,
                "best_epoch": progress.best_examples / run.train_rows,
                "train_seconds": progress.train_seconds}


LEARNER = Keras()


def train_model(tag: str, model_id: str, config: RunnerConfig, *, force: bool = False,
                resume: bool = False, build_model=None, interrupt_after_steps: int | None = None,
                extra_metrics: dict | None = None) -> dict | None:
    """Trains and publishes one model (`Keras` takes `build_model` and
    `interrupt_after_steps`); returns its metrics (None if skipped or interrupted)."""
    return learner.train(Keras(build_model, interrupt_after_steps), tag, model_id, config,
                         force=force, resume=resume, extra_metrics=extra_metrics)


class TrainingRun:
    """One model's training step, loop, evaluation, early stopping and checkpoints, on the tag's
    field files or on `data`: (field_spec, splits). Checkpoints go to `checkpoint_dir` (default
    05_train/.checkpoints/<ID>/, a worker other than the chief's beside it)."""

    def __init__(self, keras_learner: Keras, tag: str, config: RunnerConfig, stage: Stage,
                 data=None, on_evaluate=None, checkpoint_dir: Path | None = None):
        train = self.train = config.train
        self.stage, self.interrupt_after_steps = stage, keras_learner.interrupt_after_steps
        self.on_evaluate = on_evaluate  # (evaluations, valid logloss) -> True: stop (pruning)
        tune_memory_allocator()
        self.strategy = distribute.create_strategy(train.distribute)  # before any TensorFlow op
        self.chief = distribute.is_chief(self.strategy)
        self.device = distribute.device_name(self.strategy)
        print(f"[{stage.label}] training on {self.device} ({keras.backend.backend()})", flush=True)
        keras.backend.clear_session()  # models.stage trains every model in one process
        keras.utils.set_random_seed(train.seed)
        if train.deterministic and keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            tf.config.experimental.enable_op_determinism()
        spec, splits = data or field_spec.open_field_files(stage_dir(tag, train.input_stage))
        build_model = keras_learner.build_model or registry.build
        with distribute.scope(self.strategy), precision.dtype_policy(train.precision):
            model = build_model(config.arch, spec, **config.hyperparameters)
            model(np.zeros((1, spec.num_fields), np.int32))  # creates the weights
            if train.pretrained_fm:
                load_pretrained_fm(tag, model, train.pretrained_fm)
        settings = optimizers.OptimizerSettings(
            train.optimizer, train.learning_rate, train.adam_beta_1, train.adam_beta_2,
            train.adam_epsilon, train.adagrad_initial_accumulator)
        self.step = distribute.create_step(self.strategy, model, settings, train.loss_reduction,
                                           train.jit_compile, train.eval_batch_size)
        self.spec, self.splits, self.model = spec, splits, model
        self.train_fields = splits["train"].fields[:train.max_train_rows or None]
        self.train_labels = splits["train"].labels[:train.max_train_rows or None]
        self.train_rows = rows = len(self.train_labels)
        self.valid_fields = splits["valid"].fields[:train.max_valid_rows or None]
        self.valid_labels = np.asarray(splits["valid"].labels[:train.max_valid_rows or None])
        if checkpoint_dir is None:
            worker = "" if self.chief else f".worker{distribute.worker_index(self.strategy)}"
            checkpoint_dir = stage.directory.parent / ".checkpoints" / f"{stage.unit}{worker}"
        self.checkpoint_dir = checkpoint_dir
        self.progress = Progress()
        self.summary = report.SummaryWriter(checkpoint_dir / "tensorboard", enabled=self.chief)
        self.eval_every, self.patience = evaluation_schedule(train, rows)
        self.decay_patience = evaluations_in(train.lr_decay_patience_epochs, self.eval_every, rows)
        if self.decays and self.patience and self.decay_patience >= self.patience:
            print(f"[{stage.label}] train.lr_decay_patience_epochs ({self.decay_patience} "
                  f"evaluations) is not shorter than the early-stopping patience "
                  f"({self.patience}): the rate decays only while min_epochs holds off the stop",
                  flush=True)

    @property
    def decays(self) -> bool:
        """Whether the learning rate decays on a plateau (train.lr_decay_factor < 1)."""
        return self.train.lr_decay_factor < 1

    def restore_checkpoint(self) -> None:
        path = self.checkpoint_dir / "checkpoint.npz"
        if not path.exists():
            print(f"[{self.stage.label}] --resume: no checkpoint, starting fresh", flush=True)
            return
        with np.load(path) as archive:
            arrays = dict(archive)
        saved = json.loads(arrays.pop("progress").tobytes())
        if saved["fingerprint"] != self.stage.fingerprint():
            print(f"[{self.stage.label}] --resume: checkpoint is from another config or code, "
                  "starting fresh", flush=True)
            return
        self.step.load_state(arrays)
        self.progress = Progress(**saved["progress"])
        print(f"[{self.stage.label}] resumed at epoch {self.progress.epoch}, "
              f"step {self.progress.steps}"
              + (f", learning rate {self.step.learning_rate:.4g}" if self.decays else ""),
              flush=True)

    def save_checkpoint(self) -> None:
        payload = json.dumps({"fingerprint": self.stage.fingerprint(),
                              "progress": dataclasses.asdict(self.progress)})
        arrays = {**self.step.state(), "progress": np.frombuffer(payload.encode(), np.uint8)}
        save_npz_atomically(self.checkpoint_dir / "checkpoint.npz", arrays)

    def fit(self) -> bool:
        """Trains to the end (or early stop); False if interrupted (interrupt_after_steps)."""
        train, progress = self.train, self.progress
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        pad_limit = train.batch_size * self.spec.num_fields if self.step.pads_unique else None
        bar = tqdm(total=train.epochs * self.train_rows, initial=progress.examples, unit="ex",
                   unit_scale=True, desc=self.stage.unit, mininterval=1.0, smoothing=0.1)
        try:
            while progress.epoch < train.epochs and not progress.stopped_early:
                batches = data.prefetch(data.epoch_batches(
                    self.train_fields, self.train_labels, train.batch_size,
                    train.shuffle_buffer_rows, train.seed, progress.epoch,
                    progress.step_in_epoch, pad_limit, self.step.make_batch,
                    train.negative_sampling_rate),
                    train.prefetch_batches)
                for batch in batches:
                    self._train_batch(batch, bar)
                    if progress.stopped_early or self._interrupted():
                        batches.close()
                        return not self._interrupted()
                progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
                if progress.last_eval_examples != progress.examples:
                    self._evaluate()
                if train.checkpoint_every_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        if self.improving_at_cap:
            tqdm.write(f"[{self.stage.label}] the epoch cap (train.epochs {train.epochs}) ended "
                       "training while validation logloss was still improving: raise "
                       "train.epochs")
        return True

    @property
    def improving_at_cap(self) -> bool:
        """The epoch cap, not validation, ended a run whose last evaluation was its best."""
        return not self.progress.stopped_early and \
            self.progress.evaluations_without_improvement == 0

    def _train_batch(self, batch, bar) -> None:
        train, progress = self.train, self.progress
        started = time.perf_counter()
        loss = self.step.step(batch)
        progress.train_seconds += time.perf_counter() - started
        rows = batch.rows  # of the global batch when distributed
        progress.steps += 1
        progress.step_in_epoch = batch.step
        progress.examples += rows
        progress.loss_sum += loss * (1 if train.loss_reduction == "sum" else rows)
        progress.loss_rows += rows
        bar.update(rows)
        if progress.steps % train.log_every_steps == 0:
            bar.set_postfix(loss=f"{progress.loss_sum / progress.loss_rows:.4f}", refresh=False)
            self.summary.scalars(progress.examples, train_logloss=loss if train.loss_reduction ==
                                 "mean" else loss / rows)
        every, last = self.eval_every, max(progress.last_eval_examples, 0)
        crossed = progress.examples // every * every if every else 0  # the last multiple passed
        # at each multiple of `every`, unless the epoch-end evaluation was made just before it
        if every and crossed > last and crossed - last > every // 2:
            self._evaluate()
        if train.checkpoint_every_steps and progress.steps % train.checkpoint_every_steps == 0:
            self.save_checkpoint()

    def _interrupted(self) -> bool:
        return self.interrupt_after_steps is not None and \
            self.progress.steps >= self.interrupt_after_steps

    def _evaluate(self) -> None:
        """Validation logloss/AUC, history row, early-stopping bookkeeping, best weights saved."""
        progress = self.progress
        # metrics and early stopping judge the rates of the unsampled data; the published
        # predictions stay raw (stage 06 undoes the sampling)
        predictions = correct_negative_sampling(self.step.predict(self.valid_fields),
                                                self.train.negative_sampling_rate)
        valid_logloss, valid_auc = logloss_and_auc(self.valid_labels, predictions)
        train_logloss = progress.loss_sum / progress.loss_rows if progress.loss_rows else None
        row = {"steps": progress.steps, "examples": progress.examples,
               "epoch": progress.examples / self.train_rows, "train_logloss": train_logloss,
               "valid_logloss": valid_logloss, "valid_auc": valid_auc,
               "train_seconds": progress.train_seconds}
        rate = {"learning_rate": self.step.learning_rate} if self.decays else {}
        progress.history.append({**row, **rate})  # the rate the steps since the last one used
        self.summary.scalars(progress.examples, valid_logloss=valid_logloss, valid_auc=valid_auc,
                             **rate)
        progress.loss_sum, progress.loss_rows = 0.0, 0
        progress.last_eval_examples = progress.examples
        if valid_logloss < progress.best_logloss:
            progress.best_logloss, progress.best_examples = valid_logloss, progress.examples
            progress.best_steps = progress.steps
            progress.evaluations_without_improvement = 0
            save_npz_atomically(self.checkpoint_dir / "best.npz", self.step.weights())
        else:
            progress.evaluations_without_improvement += 1
            progress.stopped_early = bool(self.patience) and \
                progress.evaluations_without_improvement >= self.patience and \
                progress.examples >= self.train.min_epochs * self.train_rows
        tqdm.write(f"[{self.stage.label}] epoch {progress.examples / self.train_rows:.2f}: "
                   f"valid logloss {valid_logloss:.5f} AUC {valid_auc:.4f}"
                   + (" (best)" if progress.best_steps == progress.steps else ""))
        if self.decays and not progress.stopped_early:
            self._decay_on_plateau()
        if self.on_evaluate is not None and self.on_evaluate(len(progress.history), valid_logloss):
            progress.stopped_early = True

    def _decay_on_plateau(self) -> None:
        """Multiplies the step's learning rate by lr_decay_factor (not below min_learning_rate)
        after every `decay_patience` evaluations in a row without a new best."""
        progress, train = self.progress, self.train
        plateau = progress.evaluations_without_improvement
        if not plateau or plateau % self.decay_patience:
            return
        old = self.step.learning_rate
        new = float(np.float32(max(old * train.lr_decay_factor, train.min_learning_rate)))
        if new >= old:
            return
        self.step.learning_rate = new
        progress.learning_rate_decays += 1
        tqdm.write(f"[{self.stage.label}] no new best for {plateau} evaluations: learning rate "
                   f"{old:.4g} -> {new:.4g}")

    def restore_best(self) -> None:
        """The weights of the best evaluation, in the model too."""
        progress = self.progress
        if progress.best_steps >= 0 and progress.best_steps != progress.steps:
            with np.load(self.checkpoint_dir / "best.npz") as archive:
                self.step.load_state(dict(archive))
        self.step.sync_model()

    def write_files(self, out: Path) -> None:
        """model.keras and the TensorBoard events."""
        self.model.save(out / "model.keras")
        self.summary.close()
        if (self.checkpoint_dir / "tensorboard").exists():
            shutil.copytree(self.checkpoint_dir / "tensorboard", out / "tensorboard")

    def fitted(self, title: str) -> learner.Fitted:
        """The current weights' fit: valid and test predictions, or, on a worker other than the
        chief, valid ones for its metrics (it publishes nothing)."""
        progress, train = self.progress, self.train
        splits = ("valid", "test") if self.chief else ("valid",)
        return learner.Fitted(
            {split: self.step.predict(self.splits[split].fields) for split in splits},
            np.asarray(self.splits["valid"].labels), self.spec.label_rate["train"],
            progress.history, epochs=progress.examples / self.train_rows,
            best_epoch=progress.best_examples / self.train_rows,
            stopped_early=progress.stopped_early, train_seconds=progress.train_seconds,
            examples=progress.examples, title=title,
            negative_sampling_rate=train.negative_sampling_rate,
            write_files=self.write_files, publish=self.chief,
            extra={"parameter_count": int(self.model.count_params()), "steps": progress.steps,
                   "best_steps": progress.best_steps,
                   "ended_by": "early_stopping" if progress.stopped_early else "epoch_cap",
                   "improving_at_cap": self.improving_at_cap, "train_rows": self.train_rows,
                   "backend": keras.backend.backend(),
                   "negative_sampling_rate": train.negative_sampling_rate, "device": self.device,
                   **({"learning_rate_decays": progress.learning_rate_decays,
                       "final_learning_rate": self.step.learning_rate} if self.decays else {})})


def evaluation_schedule(train: TrainConfig, train_rows: int) -> tuple[int, int]:
    """(rows between evaluations, 0 = at epoch ends only; early-stopping patience in
    evaluations, 0 = never) for `train_rows` training rows: `eval_every_rows` or
    `evals_per_epoch`, and `patience_epochs` turned into evaluations when it is set."""
    every = train.eval_every_rows or (math.ceil(train_rows / train.evals_per_epoch)
                                      if train.evals_per_epoch > 1 else 0)
    return every, (evaluations_in(train.patience_epochs, every, train_rows)
                   if train.patience_epochs else train.early_stopping_patience)


def evaluations_in(epochs: float, every: int, train_rows: int) -> int:
    """The evaluations made in `epochs` epochs (at least one) when they come every `every`
    rows (0: at epoch ends)."""
    per_epoch = train_rows / every if every else 1.0
    return max(1, math.ceil(epochs * per_epoch - 1e-9))


def save_npz_atomically(path: Path, arrays: dict) -> None:
    with replacing(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)  # a handle: savez would add .npz to a name


def main(argv=None) -> None:
    learner_main(__doc__, LEARNER, argv, preset_default="auto")


if __name__ == "__main__":
    main()
