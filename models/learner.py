"""Stage 05's learner protocol and the one publisher of every learner's outputs.

The Keras runner (`models.train`), libFFM (`models.libffm`) and GBDT (`models.gbdt`) implement
`Learner`; the `learner:` key of `configs/models/<id>.yaml` (keras when absent) names an id's,
`models.stage.LEARNERS` its module. `train` forms the stage, fits and publishes
`artifacts/<tag>/05_train/<id>/` atomically, alike for every learner: metrics.json (the keys of
`METRIC_ORDER`, `epochs` counting epochs or boosting rounds, then the learner's and the caller's),
history.csv (per evaluation, epoch or round), `{valid,test}.pred.npy` (float32 probabilities in
row order, raw under negative sampling: the metrics and stage 06 correct them),
learning_curve.png, config.resolved.{json,yaml} and the manifest, beside the learner's own files
(model.keras and tensorboard/, model.npy or libffm's model.txt, model.json or lightgbm's).
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from pathlib import Path

import numpy as np

from models import train_report
from models.runner_config import config_path
from preprocessing import field_spec
from pipeline import config as config_lib
from pipeline import errors
from pipeline.manifest import Stage
from pipeline.metrics import constant_logloss, correct_negative_sampling, logloss_and_auc

LEARNER_KEY = "learner"
# metrics.json: the keys of every learner first, in this order, with a learner's own keys
# (parameter_count, ...) where they stand here, and every other key after them
METRIC_ORDER = ("valid_logloss", "valid_auc", "valid_rows", "constant_logloss",
                "relative_information_gain", "examples_per_second", "parameter_count", "epochs",
                "best_epoch", "steps", "best_steps", "stopped_early", "ended_by",
                "improving_at_cap", "train_rows", "train_seconds", "wall_seconds")
LEARNER_METRICS = ("parameter_count", "steps", "best_steps", "ended_by", "improving_at_cap",
                   "train_rows")
COMMON_METRICS = tuple(key for key in METRIC_ORDER if key not in LEARNER_METRICS)


def learner_kind(model_id: str) -> str:
    """The `learner:` of `configs/models/<model_id>.yaml`; keras when it has none."""
    return config_lib.load_yaml(config_path(model_id)).get(LEARNER_KEY, "keras")


@dataclasses.dataclass
class Fitted:
    """What a learner's fit hands the publisher."""
    predictions: dict[str, np.ndarray]  # {"valid", "test": probabilities}, whole splits
    valid_labels: np.ndarray
    label_rate: float  # the training click rate: the constant-prediction reference
    history: list[dict]  # one row per evaluation, epoch or round
    epochs: float  # how far training went, and where the published model stands
    best_epoch: float
    stopped_early: bool
    train_seconds: float
    examples: int  # training rows seen in train_seconds
    extra: dict = dataclasses.field(default_factory=dict)  # the learner's metrics.json keys
    title: str = ""  # of the learning curve
    negative_sampling_rate: float = 1.0  # metrics judge the corrected predictions
    write_files: typing.Callable[[Path], None] | None = None  # the learner's files -> out
    publish: bool = True  # False: a replica training in step with the publishing one


class Learner(typing.Protocol):
    """A stage-05 learner. `code`: the module whose import closure is its stage's code.
    `fit` yields a `Fitted` (None: interrupted) whose files live until the context ends;
    `resume` continues from a checkpoint where the learner keeps them (Keras), else starts over.
    `trial` trains on the tuning slice (the training split less its last `fraction`, scored on
    that holdout) and returns {"valid_logloss": the best holdout logloss, more values}; its
    `on_evaluate(evaluations, logloss) -> True` stops it there (a pruned trial)."""
    code: str

    def load_config(self, path: Path, preset: str = "paper", overrides=()): ...

    def stage_for(self, tag: str, model_id: str, config) -> Stage: ...

    def fit(self, tag: str, model_id: str, config, stage: Stage,
            resume: bool = False) -> typing.ContextManager[Fitted | None]: ...

    def trial(self, tag: str, model_id: str, config, fraction: float, on_evaluate) -> dict: ...


class ConfigLearner:
    """What the GBDT and libFFM learners share: one frozen config dataclass, `config_class`,
    built strictly from a model YAML, then `presets.<preset>`, then `--set key=value` overrides
    (the `learner:` key is read by `learner_kind`), and a stage config of the model id and that
    whole dataclass over the folders `inputs` names."""
    config_class: typing.ClassVar[type]
    code: typing.ClassVar[str]

    def load_config(self, path: Path, preset: str = "paper", overrides=()):
        return config_lib.load_with_preset(self.config_class, path, preset, overrides,
                                           f" ({path})", skip=(LEARNER_KEY,))

    def stage_for(self, tag: str, model_id: str, config) -> Stage:
        return Stage(tag, "05_train", {"model_id": model_id, **config_lib.to_dict(config)},
                     inputs=self.inputs(tag, config), code=self.code, unit=model_id)


def train(learner: Learner, tag: str, model_id: str, config, *, force: bool = False,
          resume: bool = False, extra_metrics: dict | None = None) -> dict | None:
    """Trains `model_id` with `learner` and publishes it unless it is up to date; returns its
    metrics (None when skipped or interrupted). `extra_metrics`: more keys for metrics.json."""
    started = time.time()
    stage = learner.stage_for(tag, model_id, config)
    if not stage.should_run(force):
        return None
    with learner.fit(tag, model_id, config, stage, resume=resume) as fitted:
        if fitted is None:
            return None
        return publish(stage, fitted, time.time() - started, extra_metrics)


def metrics_of(fitted: Fitted, wall_seconds: float, extra_metrics: dict | None = None) -> dict:
    """metrics.json of a fit: COMMON_METRICS, the learner's keys, then `extra_metrics`."""
    labels = np.asarray(fitted.valid_labels)
    valid = correct_negative_sampling(fitted.predictions["valid"], fitted.negative_sampling_rate)
    valid_logloss, valid_auc = logloss_and_auc(labels, valid)
    constant = constant_logloss(labels, fitted.label_rate)
    values = {
        "valid_logloss": valid_logloss, "valid_auc": valid_auc, "valid_rows": len(labels),
        "constant_logloss": constant, "relative_information_gain": 1.0 - valid_logloss / constant,
        "examples_per_second": fitted.examples / max(fitted.train_seconds, 1e-9),
        "epochs": fitted.epochs, "best_epoch": fitted.best_epoch,
        "stopped_early": fitted.stopped_early, "train_seconds": fitted.train_seconds,
        "wall_seconds": wall_seconds, **fitted.extra, **(extra_metrics or {})}
    ordered = {key: values.pop(key) for key in METRIC_ORDER if key in values}
    return {**ordered, **values}


def publish(stage: Stage, fitted: Fitted, wall_seconds: float,
            extra_metrics: dict | None = None) -> dict:
    """Writes every output of a fit into the stage's folder, atomically; returns its metrics."""
    metrics = metrics_of(fitted, wall_seconds, extra_metrics)
    if not fitted.publish:
        return metrics
    with stage.build() as out:
        for split, values in fitted.predictions.items():
            np.save(out / f"{split}.pred.npy", np.asarray(values, np.float32))
        if fitted.write_files is not None:
            fitted.write_files(out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        config_lib.dump_yaml(stage.config, out / "config.resolved.yaml")
        train_report.write_history(fitted.history, out / "history.csv")
        if fitted.history:
            train_report.plot_learning_curve(fitted.history, out / "learning_curve.png",
                                             fitted.title or stage.label)
        stage.record(metrics=metrics)
    device = f" on {metrics['device']}" if "device" in metrics else ""
    print(f"[{stage.label}] {metrics['examples_per_second']:,.0f} examples/s{device}: valid "
          f"logloss {metrics['valid_logloss']:.5f}, AUC {metrics['valid_auc']:.4f}", flush=True)
    return metrics


# ---------------------------------------------------------------------------------------------
# The tuning slice of a trial

def holdout_split(rows: int, fraction: float) -> int:
    """The first row of the tuning holdout: the last `fraction` of `rows` training rows."""
    held = max(1, round(rows * fraction))
    if held >= rows:
        raise errors.InputError(f"tune.holdout_fraction {fraction}: leaves no training rows "
                                f"of {rows}")
    return rows - held


def split_rows(split: field_spec.SplitArrays, part: slice) -> field_spec.SplitArrays:
    """The rows `part` of a split's arrays (views of its memmaps)."""
    return field_spec.SplitArrays(split.fields[part], split.labels[part], split.ids[part],
                                  None if split.ints is None else split.ints[part])

