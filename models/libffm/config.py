"""The libFFM learner's configuration (configs/models/libffm.yaml documents every key)."""

from __future__ import annotations

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class DataConfig:
    stage: str = "04_leaves"  # folder under artifacts/<tag>/ holding the inputs
    format: typing.Literal["fields", "text"] = "fields"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    k: int = 4
    init_scale: float = 1.0  # w ~ init_scale / sqrt(k) * U[0, 1); the winners' v1.0 solver: 0.5
    normalization: typing.Literal["instance", "none"] = "instance"  # r = 1/||x||^2 or 1
    normalization_scale: float = 1.0  # r multiplied by this; the winners' v1.0 solver: 2

    def __post_init__(self):
        if self.k < 1 or self.init_scale < 0 or self.normalization_scale <= 0:
            raise ValueError("config.model: k >= 1, init_scale >= 0, normalization_scale > 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    engine: typing.Literal["numba", "binary"] = "numba"
    learning_rate: float = 0.2  # libffm -r (eta)
    l2: float = 2e-5  # libffm -l (lambda)
    epochs: int = 18  # libffm -t: the maximum with auto_stop, the count without
    auto_stop: bool = True
    shuffle: bool = True  # false: rows in file order (numba engine only)
    shuffle_block_rows: int = 1 << 20
    threads: int = 0  # 0 = every core numba sees
    seed: int = 2014
    max_train_rows: int | None = None
    max_valid_rows: int | None = None

    def __post_init__(self):
        for name, low in (("epochs", 1), ("threads", 0), ("shuffle_block_rows", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"config.train.{name}: out of range: {getattr(self, name)}")
        if self.learning_rate <= 0 or self.l2 < 0:
            raise ValueError("config.train: learning_rate must be > 0 and l2 >= 0")


@dataclasses.dataclass(frozen=True)
class LibffmConfig:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    preset: str = "paper"
