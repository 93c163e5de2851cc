"""`configs/models/<id>.yaml` -> a frozen `RunnerConfig` (strict: unknown keys are errors).

A model file has three sections:
  model:    `arch` (a `models.registry` name) plus that constructor's keywords;
  train:    the `TrainConfig` keys below;
  presets:  named overlays (`models.cli.PRESETS`) merged over model/train by `--preset`.
Load order: the YAML file, then the chosen preset, then each `--set key=value`.
`configs/models/README.md` documents every key.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from pipeline import config as config_lib
from pipeline.paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs" / "models"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The `train:` keys; configs/models/README.md says what each does."""
    batch_size: int = 2000
    epochs: int = 1
    optimizer: typing.Literal["adam", "adagrad"] = "adam"
    learning_rate: float = 1e-3
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-8
    adagrad_initial_accumulator: float = 0.1
    loss_reduction: typing.Literal["mean", "sum"] = "mean"
    early_stopping_patience: int = 1  # evaluations; 0 = never stop early
    patience_epochs: float = 0.0  # > 0: the patience in epochs instead
    min_epochs: float = 0.0
    lr_decay_factor: float = 1.0  # < 1: the learning rate decays on plateaus; 1 = fixed
    lr_decay_patience_epochs: float = 0.0
    min_learning_rate: float = 0.0
    eval_every_rows: int = 0  # 0 = evals_per_epoch evaluations per epoch
    evals_per_epoch: int = 1
    eval_batch_size: int = 10_000
    checkpoint_every_steps: int = 2000  # 0 = no checkpoints
    shuffle_buffer_rows: int = 1_000_000  # rows read contiguously and shuffled together
    prefetch_batches: int = 4
    seed: int = 2014
    deterministic: bool = False  # deterministic ops: resumed runs end bit-identical
    jit_compile: bool = False  # XLA for the training step (TensorFlow; JAX always compiles)
    input_stage: typing.Literal["03_hash", "04_leaves"] = "03_hash"
    negative_sampling_rate: float = 1.0  # stage 06 undoes it (metrics.json records it)
    pretrained_fm: str | None = None  # FNN's pre-training: a trained FM's model id
    max_train_rows: int | None = None  # first rows only, for quick runs
    max_valid_rows: int | None = None
    log_every_steps: int = 50  # TensorBoard scalars
    precision: typing.Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    distribute: typing.Literal["none", "mirrored", "multi_worker"] = "none"

    def __post_init__(self):
        for name in ("batch_size", "epochs", "eval_batch_size", "shuffle_buffer_rows",
                     "prefetch_batches", "log_every_steps", "evals_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("early_stopping_patience", "eval_every_rows", "checkpoint_every_steps",
                     "patience_epochs", "min_epochs", "lr_decay_patience_epochs",
                     "min_learning_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"config.train.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 < self.negative_sampling_rate <= 1:
            raise ValueError("config.train.negative_sampling_rate: must be in (0, 1], got "
                             f"{self.negative_sampling_rate}")
        if self.learning_rate <= 0:
            raise ValueError(f"config.train.learning_rate: must be > 0, got {self.learning_rate}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ValueError("config.train.lr_decay_factor: must be in (0, 1] (1 = no decay), "
                             f"got {self.lr_decay_factor}")


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    model: dict  # {"arch": registry name, **constructor keywords}
    train: TrainConfig = TrainConfig()
    preset: str = "paper"

    @property
    def arch(self) -> str:
        return self.model["arch"]

    @property
    def hyperparameters(self) -> dict:
        return {key: value for key, value in self.model.items() if key != "arch"}


def config_path(model_id: str) -> Path:
    return CONFIG_DIR / f"{model_id}.yaml"


def load_runner_config(path: Path, preset: str = "paper", overrides=(),
                       check_model: bool = True) -> RunnerConfig:
    """Reads a model YAML, applies `preset` and `--set` overrides, validates every key."""
    config = config_lib.load_with_preset(RunnerConfig, path, preset, overrides)
    if "arch" not in config.model:
        raise ValueError(f"{path}: model.arch missing (a models.registry name)")
    if check_model:
        check_model_section(config.model, str(path))
    return config


def check_model_section(model: dict, source: str) -> None:
    """Raises ValueError naming the key unless every `model:` key is a constructor keyword."""
    from models import registry

    arch = model["arch"]
    if arch not in registry.MODELS:
        raise ValueError(f"{source}: model.arch {arch!r} is not registered; "
                         f"known: {sorted(registry.MODELS)}")
    known = set(registry.hyperparameters(arch))
    unknown = sorted(set(model) - known - {"arch"})
    if unknown:
        raise ValueError(f"{source}: model.{unknown[0]} is not a keyword of {arch!r}; "
                         f"known: {sorted(known)}")
