"""GBDT baselines: `python -m models.gbdt --tag TAG --model xgb|lgbm|lgbm_raw`.

Inputs (`data.inputs`):
- `winners`: the winners' GBDT inputs, `04_export/{split}.gbdt.npy` (13 raw integers with
  missing = -10, then 0/1 indicators of the categorical values in > 4M/45.8M training rows);
- `raw`: every raw column: the 13 integers (NaN = missing, handled natively by both libraries)
  and the 26 categorical fields of `03_hash` as categorical features. A field keeps its
  `max_categories` most frequent training values (by local id); every other value (rarer, the rare
  token when it is not among them, unseen) shares one extra category, so huge fields (C3: ~10^5
  values on Criteo) stay within what a histogram GBDT can split on.
The matrices stream from memmaps (xgboost: a QuantileDMatrix fed chunk by chunk; lightgbm: a
`Sequence`), early stopping watches the validation logloss, predictions use the best round.

Outputs `artifacts/<TAG>/05_train/<ID>/`: what the publisher writes for every learner
(`models/learner.py`; `epochs` counts boosting rounds, history.csv has the validation logloss per
round), model.json (xgboost) or model.txt (lightgbm), and for raw inputs code_of_id.npy (int32
category code of every global id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import numbers
import os
import time
import typing
from pathlib import Path

import lightgbm as lgb
import numpy as np
import xgboost as xgb

from models import learner
from models.cli import learner_main
from preprocessing import field_spec, schema
from preprocessing.chunks import CHUNK_ROWS, ChunkIterator
from pipeline.manifest import Stage
from pipeline.paths import stage_dir


@dataclasses.dataclass(frozen=True)
class DataConfig:
    inputs: typing.Literal["winners", "raw"] = "winners"
    max_categories: int = 1000  # raw: values kept per categorical field


@dataclasses.dataclass(frozen=True)
class BoosterConfig:
    library: typing.Literal["xgboost", "lightgbm"] = "xgboost"
    learning_rate: float = 0.1
    max_depth: int = 7  # lightgbm: -1 = no limit (leaf-wise growth bounded by num_leaves)
    num_leaves: int = 127  # lightgbm only
    min_child_weight: float = 1.0  # minimum hessian sum in a leaf (both libraries)
    min_data_in_leaf: int = 100  # lightgbm only
    reg_lambda: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    max_bin: int = 256
    params: dict = dataclasses.field(default_factory=dict)  # more library keys, passed verbatim


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    rounds: int = 2000  # the most boosting rounds
    early_stopping_rounds: int = 30
    log_every_rounds: int = 50
    threads: int = 0  # 0 = all cores
    seed: int = 2014
    max_train_rows: int | None = None
    max_valid_rows: int | None = None


@dataclasses.dataclass(frozen=True)
class GbdtConfig:
    data: DataConfig = DataConfig()
    model: BoosterConfig = BoosterConfig()
    train: TrainConfig = TrainConfig()
    preset: str = "paper"


# ---------------------------------------------------------------------------------------------
# Matrices: anything with len() and [int | slice | index array] -> float32 rows

class RawColumns:
    """The 13 raw integers and 26 capped categorical codes of a split, built on access.

    Args:
        split: the 03 arrays of one split; code_of_id: int32 [total ids], global id -> category
            code (the same table for every split).
    """

    def __init__(self, split: field_spec.SplitArrays, code_of_id: np.ndarray, rows: int):
        if split.ints is None:
            raise ValueError("data.inputs=raw needs {split}.ints.npy in 03_hash")
        self.split, self.code_of_id, self.rows = split, code_of_id, rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, numbers.Integral):
            return self[index:index + 1][0]
        if isinstance(index, slice):
            index = slice(index.start, min(index.stop or self.rows, self.rows))
        codes = self.code_of_id[np.asarray(self.split.fields[index, schema.NUM_INT_FIELDS:])]
        return np.column_stack([np.asarray(self.split.ints[index]), codes]).astype(np.float32)


def category_codes(spec: field_spec.FieldSpec, train_fields, max_categories: int) -> np.ndarray:
    """int32 [total ids]: per categorical field, the `max_categories` most frequent training
    ids -> 0..max_categories-1 (by frequency), every other id -> max_categories."""
    cat_columns = [index for index, field in enumerate(spec.fields) if field.kind == "cat"]
    counts = np.zeros(spec.total_vocabulary_size, np.int64)
    for start in range(0, len(train_fields), CHUNK_ROWS):
        block = np.asarray(train_fields[start:start + CHUNK_ROWS, cat_columns])
        counts += np.bincount(block.ravel(), minlength=len(counts))
    codes = np.zeros(spec.total_vocabulary_size, np.int32)
    for column in cat_columns:
        field = spec.fields[column]
        ids = np.arange(field.offset, field.offset + field.vocabulary_size)
        ranked = ids[np.argsort(-counts[ids], kind="stable")]
        codes[ids] = max_categories
        kept = ranked[:max_categories][counts[ranked[:max_categories]] > 0]
        codes[kept] = np.arange(len(kept))
    return codes


def rows_of(matrix, part: slice):
    """The rows `part` of a matrix (views of the memmaps)."""
    if isinstance(matrix, RawColumns):
        split = learner.split_rows(matrix.split, part)
        return RawColumns(split, matrix.code_of_id, len(split.fields))
    return matrix[part]


def open_matrices(tag: str, config: GbdtConfig) -> tuple[dict, dict, list[str], list[str]]:
    """({split: matrix}, {split: labels}, feature types "q"/"c" and names per column), whole
    splits."""
    hash_dir = stage_dir(tag, "03_hash")
    spec, splits = field_spec.open_field_files(hash_dir)
    labels = {split: np.asarray(splits[split].labels) for split in ("train", "valid")}
    if config.data.inputs == "winners":
        export_dir = stage_dir(tag, "04_export")
        matrices = field_spec.open_gbdt_inputs(export_dir)
        names = json.loads((export_dir / "gbdt_columns.json").read_text())
        return matrices, labels, ["q"] * matrices["train"].shape[1], names
    codes = category_codes(spec, splits["train"].fields[:config.train.max_train_rows],
                           config.data.max_categories)
    matrices = {split: RawColumns(splits[split], codes, spec.rows[split]) for split in splits}
    types = ["q"] * schema.NUM_INT_FIELDS + ["c"] * (spec.num_fields - schema.NUM_INT_FIELDS)
    return matrices, labels, types, list(spec.field_names)


# ---------------------------------------------------------------------------------------------
# The two libraries

def xgboost_parameters(config: GbdtConfig, base_score: float) -> dict:
    model, train = config.model, config.train
    return {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
            "eta": model.learning_rate, "max_depth": model.max_depth,
            "min_child_weight": model.min_child_weight, "lambda": model.reg_lambda,
            "subsample": model.subsample, "colsample_bytree": model.colsample_bytree,
            "max_bin": model.max_bin, "base_score": base_score, "seed": train.seed,
            "nthread": train.threads or os.cpu_count(), **model.params}


def lightgbm_parameters(config: GbdtConfig) -> dict:
    model, train = config.model, config.train
    return {"objective": "binary", "metric": "binary_logloss", "learning_rate": model.learning_rate,
            "max_depth": model.max_depth, "num_leaves": model.num_leaves,
            "min_sum_hessian_in_leaf": model.min_child_weight,
            "min_data_in_leaf": model.min_data_in_leaf, "lambda_l2": model.reg_lambda,
            "bagging_fraction": model.subsample, "bagging_freq": int(model.subsample < 1),
            "feature_fraction": model.colsample_bytree, "max_bin": model.max_bin,
            "seed": train.seed, "num_threads": train.threads or os.cpu_count(), "verbosity": -1,
            **model.params}


class _Sequence(lgb.Sequence):
    """lightgbm's streaming view of a matrix (read in `CHUNK_ROWS` batches; float64, which
    lightgbm requires of its bin-construction sample)."""
    batch_size = CHUNK_ROWS

    def __init__(self, matrix):
        self.matrix = matrix

    def __len__(self) -> int:
        return len(self.matrix)

    def __getitem__(self, index):
        return np.asarray(self.matrix[index], np.float64)


def train_xgboost(config: GbdtConfig, matrices, labels, types, names):
    threads = config.train.threads or os.cpu_count()
    categorical = "c" in types
    columns = {"feature_types": types, "feature_names": names}
    train = xgb.QuantileDMatrix(ChunkIterator(matrices["train"], labels["train"], **columns),
                                max_bin=config.model.max_bin, nthread=threads,
                                enable_categorical=categorical)
    valid_rows = ChunkIterator(matrices["valid"], labels["valid"], **columns)
    if categorical:  # xgboost 3.2 bins categorical values of a QuantileDMatrix(ref=...) wrongly
        valid = xgb.DMatrix(valid_rows, nthread=threads, enable_categorical=True)
    else:
        valid = xgb.QuantileDMatrix(valid_rows, ref=train, nthread=threads)
    history = {}
    booster = xgb.train(xgboost_parameters(config, float(labels["train"].mean())), train,
                        num_boost_round=config.train.rounds, evals=[(valid, "valid")],
                        early_stopping_rounds=config.train.early_stopping_rounds,
                        evals_result=history, verbose_eval=config.train.log_every_rounds)
    losses = history["valid"]["logloss"]
    best_round = booster.best_iteration + 1

    def predict(matrix):
        return np.concatenate([booster.predict(
            xgb.DMatrix(np.asarray(matrix[start:start + CHUNK_ROWS], np.float32), **columns,
                        enable_categorical=categorical),
            iteration_range=(0, best_round)) for start in range(0, len(matrix), CHUNK_ROWS)])

    nodes = sum(dump.count("nodeid") for dump in booster.get_dump(dump_format="json"))
    return booster, predict, losses, best_round, nodes


def train_lightgbm(config: GbdtConfig, matrices, labels, types, names):
    categorical = [column for column, kind in enumerate(types) if kind == "c"]
    parameters = lightgbm_parameters(config)
    train = lgb.Dataset(_Sequence(matrices["train"]), labels["train"], feature_name=names,
                        categorical_feature=categorical, params=parameters)
    valid = lgb.Dataset(_Sequence(matrices["valid"]), labels["valid"], reference=train)
    history = {}
    booster = lgb.train(parameters, train, num_boost_round=config.train.rounds,
                        valid_sets=[valid], valid_names=["valid"],
                        callbacks=[lgb.early_stopping(config.train.early_stopping_rounds,
                                                      verbose=False),
                                   lgb.record_evaluation(history),
                                   lgb.log_evaluation(config.train.log_every_rounds)])
    losses = history["valid"]["binary_logloss"]
    best_round = booster.best_iteration or len(losses)

    def predict(matrix):
        return np.concatenate([booster.predict(np.asarray(matrix[start:start + CHUNK_ROWS]),
                                               num_iteration=best_round)
                               for start in range(0, len(matrix), CHUNK_ROWS)])

    model = booster.dump_model()
    nodes = sum(2 * tree["num_leaves"] - 1 for tree in model["tree_info"][:best_round])
    return booster, predict, losses, best_round, nodes


# ---------------------------------------------------------------------------------------------
# The learner

def fit_booster(config: GbdtConfig, matrices, labels, types, names):
    """Boosts on the first `max_*_rows` of `matrices`' train and valid rows; (booster,
    predict, validation losses per round, best round, nodes, training rows, seconds)."""
    limits = {"train": config.train.max_train_rows, "valid": config.train.max_valid_rows}
    fit_matrices = {split: rows_of(matrices[split], slice(0, limits[split])) for split in limits}
    fit_labels = {split: labels[split][:limits[split]] for split in limits}
    trainer = train_xgboost if config.model.library == "xgboost" else train_lightgbm
    started = time.perf_counter()
    booster, predict, losses, best_round, nodes = trainer(config, fit_matrices, fit_labels,
                                                          types, names)
    return (booster, predict, losses, best_round, nodes, len(fit_matrices["train"]),
            time.perf_counter() - started)


def write_files(out: Path, booster, library: str, train_matrix) -> None:
    """The model file, and for raw inputs `code_of_id.npy`: the category code of every global
    id, which scoring new rows needs (`criteo_pnn`)."""
    booster.save_model(out / ("model.json" if library == "xgboost" else "model.txt"))
    if isinstance(train_matrix, RawColumns):
        np.save(out / "code_of_id.npy", train_matrix.code_of_id)


class Gbdt(learner.ConfigLearner):
    """xgboost and lightgbm as a stage-05 learner (`models.learner.Learner`)."""
    config_class, code = GbdtConfig, __spec__.name

    @staticmethod
    def inputs(tag: str, config: GbdtConfig) -> list[Path]:
        return [stage_dir(tag, "03_hash")] + ([stage_dir(tag, "04_export")]
                                              if config.data.inputs == "winners" else [])

    @contextlib.contextmanager
    def fit(self, tag: str, model_id: str, config: GbdtConfig, stage: Stage,
            resume: bool = False):
        """Boosts until early stopping; predictions of the best round (no checkpoints:
        `resume` starts over)."""
        matrices, labels, types, names = open_matrices(tag, config)
        booster, predict, losses, best_round, nodes, rows, seconds = fit_booster(
            config, matrices, labels, types, names)
        library = config.model.library
        package = xgb if library == "xgboost" else lgb
        spec = field_spec.FieldSpec.load(stage_dir(tag, "03_hash"))
        yield learner.Fitted(
            {split: predict(matrices[split]).astype(np.float32) for split in ("valid", "test")},
            labels["valid"], spec.label_rate["train"],
            [{"round": number, "valid_logloss": loss} for number, loss in enumerate(losses, 1)],
            epochs=len(losses), best_epoch=best_round,
            stopped_early=len(losses) < config.train.rounds, train_seconds=seconds,
            examples=rows * len(losses), title=f"{model_id} ({library})",
            extra={"parameter_count": nodes, "train_rows": rows,
                   "library": f"{library} {package.__version__}"},
            write_files=lambda out: write_files(out, booster, library, matrices["train"]))

    def trial(self, tag: str, model_id: str, config: GbdtConfig, fraction: float,
              on_evaluate=None) -> dict:
        """Boosts on the training split's head, early-stopping on its tail (never pruned)."""
        matrices, labels, types, names = open_matrices(tag, config)
        rows = len(labels["train"])
        cut = learner.holdout_split(rows, fraction)
        parts = {"train": slice(0, cut), "valid": slice(cut, rows)}
        matrices = {name: rows_of(matrices["train"], part) for name, part in parts.items()}
        labels = {name: labels["train"][part] for name, part in parts.items()}
        _, _, losses, best_round, *_ = fit_booster(config, matrices, labels, types, names)
        return {"valid_logloss": float(losses[best_round - 1]), "rounds": len(losses),
                "best_round": best_round}


LEARNER = Gbdt()


def main(argv=None) -> None:
    learner_main(__doc__, LEARNER, argv)


if __name__ == "__main__":
    main()
