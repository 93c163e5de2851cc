"""The numba engine: the model state, its initialisation and model file, epochs and `fit`
(AdaGrad epochs in a fresh random order each, libffm's auto-stop), and `run_numba`, which
trains on a tag's inputs."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import time
from pathlib import Path

import numba
import numpy as np

from models.libffm.config import LibffmConfig, ModelConfig, TrainConfig
from models.libffm.intrinsics import LANES
from models.libffm.rows import FieldRows, SparseRows, open_inputs
from pipeline.metrics import logloss_and_auc

ROW_CHUNK_FLOATS = 1 << 22  # initialise / save / restore the state this many floats at a time


def _row_chunks(state: np.ndarray):
    n, m, groups = state.shape[:3]
    step = max(1, ROW_CHUNK_FLOATS // (m * groups * 2 * LANES))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def initial_state(n: int, m: int, model: ModelConfig, seed: int) -> np.ndarray:
    """float32 [n, m, groups, 2, LANES]: weights (init_scale/sqrt(k)) U[0, 1) (libffm), padded
    lanes 0, accumulators 1."""
    groups = -(-model.k // LANES)
    state = np.empty((n, m, groups, 2, LANES), np.float32)
    rng = np.random.default_rng(seed)
    coefficient = np.float32(model.init_scale / math.sqrt(model.k))
    for start, stop in _row_chunks(state):  # one pass over the state, chunk by chunk
        state[start:stop, :, :, 1] = 1.0
        weights = rng.random((stop - start, m, model.k), np.float32)
        weights *= coefficient
        _set_weights(state[start:stop], model.k, weights)
    return state


def get_weights(block: np.ndarray, k: int) -> np.ndarray:
    """float32 [rows, m, k] weights of a state block [rows, m, groups, 2, LANES] (a copy)."""
    rows, m, groups = block.shape[:3]
    return block[:, :, :, 0, :].reshape(rows, m, groups * LANES)[:, :, :k]


def _set_weights(block: np.ndarray, k: int, weights: np.ndarray) -> None:
    rows, m, groups = block.shape[:3]
    if k < groups * LANES:
        padded = np.zeros((rows, m, groups * LANES), np.float32)
        padded[:, :, :k] = weights
        weights = padded
    block[:, :, :, 0, :] = weights.reshape(rows, m, groups, LANES)


def save_weights(state: np.ndarray, k: int, path: Path) -> None:
    """Writes the weights float32 [n, m, k] (the model file), chunk by chunk."""
    n, m = state.shape[:2]
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n, m, k))
    for start, stop in _row_chunks(state):
        out[start:stop] = get_weights(state[start:stop], k)
    out.flush()


def load_weights(state: np.ndarray, k: int, path: Path) -> None:
    """Reads weights written by `save_weights` back into `state` (accumulators untouched)."""
    weights = np.load(path, mmap_mode="r")
    for start, stop in _row_chunks(state):
        _set_weights(state[start:stop], k, weights[start:stop])


def warm_up(rows, model: ModelConfig, train: TrainConfig) -> None:
    """Compiles the training and prediction kernels of `rows`' kind (or loads them from numba's
    cache) on a two-row set of read-only arrays, as the memmaps are, so that the first epoch is
    not charged with it."""
    ids = np.zeros((2, 2), np.int32)
    labels = np.array([1, 0], np.uint8)
    if isinstance(rows, FieldRows):
        tiny = FieldRows(ids, labels)
    else:
        tiny = SparseRows(np.array([0, 2, 4]), ids.ravel(), np.array([0, 1, 0, 1], np.int32),
                          np.ones(4, np.float32), labels)
    for array in vars(tiny).values():
        array.setflags(write=False)
    state = initial_state(1, 2, model, seed=0)
    tiny.train(state, np.arange(2), model, train)
    tiny.predict(state, model)


def train_epoch(state, rows, model: ModelConfig, train: TrainConfig, epoch: int) -> float:
    """One pass in a fresh random order (seeded by (seed, epoch)); returns the mean logloss.

    Blocks of `shuffle_block_rows` rows are read contiguously (the next one in a background
    thread while the kernel runs), in shuffled order, and shuffled within.
    """
    rng = np.random.default_rng([train.seed, epoch])
    block = train.shuffle_block_rows or len(rows)
    starts = np.arange(0, len(rows), block)
    if train.shuffle:
        rng.shuffle(starts)

    def load(start):
        return rows if block >= len(rows) else rows.take(start, min(start + block, len(rows)))

    total = 0.0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, starts[0])
        for position in range(len(starts)):
            part = pending.result()
            if position + 1 < len(starts):
                pending = pool.submit(load, starts[position + 1])
            order = rng.permutation(len(part)) if train.shuffle else np.arange(len(part))
            total += part.train(state, order, model, train)
    return total / len(rows)


@dataclasses.dataclass
class FitResult:
    history: list  # per epoch: epoch, train_logloss, valid_logloss, valid_auc, train_seconds
    best_epoch: int
    stopped_early: bool
    train_seconds: float
    examples: int


def fit(state, train_rows, valid_rows, model: ModelConfig, train: TrainConfig,
        weights_path: Path | None, kept: dict | None = None) -> FitResult:
    """Trains `state` in place; with auto_stop, keeps the best epoch's weights (libffm).

    `weights_path` (the model file) ends holding the weights in `state`: with auto_stop, each
    epoch's weights are saved there before the next epoch is judged, and read back on a stop.
    None (fixed epochs only) writes nothing. `kept`, when given, receives under "valid" the
    validation predictions of the weights `state` ends with.
    """
    if train.auto_stop and weights_path is None:
        raise ValueError("auto_stop keeps the previous weights in a file: give weights_path")
    numba.set_num_threads(train.threads or numba.config.NUMBA_NUM_THREADS)
    history, best, seconds, stopped_early = [], math.inf, 0.0, False
    for epoch in range(1, train.epochs + 1):
        started = time.perf_counter()
        train_loss = train_epoch(state, train_rows, model, train, epoch)
        epoch_seconds = time.perf_counter() - started
        seconds += epoch_seconds
        predictions = valid_rows.predict(state, model)
        valid_loss, valid_auc = logloss_and_auc(valid_rows.labels, predictions)
        history.append({"epoch": epoch, "train_logloss": train_loss, "valid_logloss": valid_loss,
                        "valid_auc": valid_auc, "train_seconds": seconds})
        print(f"  epoch {epoch}: train logloss {train_loss:.5f}  valid logloss {valid_loss:.5f}"
              f"  AUC {valid_auc:.4f}  ({len(train_rows) / max(epoch_seconds, 1e-9):,.0f} "
              "rows/s)", flush=True)
        if train.auto_stop and valid_loss > best:
            load_weights(state, model.k, weights_path)
            stopped_early = True
            print(f"  auto-stop: validation logloss rose; using the model of epoch {epoch - 1}")
            break
        best = valid_loss
        if kept is not None:
            kept["valid"] = predictions
        if train.auto_stop and epoch < train.epochs:
            save_weights(state, model.k, weights_path)
    if not stopped_early and weights_path is not None:
        save_weights(state, model.k, weights_path)
    best_epoch = len(history) - 1 if stopped_early else len(history)
    return FitResult(history, best_epoch, stopped_early, seconds, len(history) * len(train_rows))


def run_numba(tag: str, config: LibffmConfig, out: Path, cache: Path):
    """Trains with the numba kernels; returns ({split: predictions}, valid labels, FitResult,
    extra metrics). Predictions cover the whole valid and test splits whatever max_*_rows."""
    model, train = config.model, config.train
    numba.set_num_threads(train.threads or numba.config.NUMBA_NUM_THREADS)
    rows, n, m = open_inputs(tag, config, cache)  # text: parsed on these threads
    state = initial_state(n, m, model, train.seed)
    train_rows = rows["train"].head(train.max_train_rows)
    warm_up(train_rows, model, train)
    kept = {}
    result = fit(state, train_rows, rows["valid"].head(train.max_valid_rows), model, train,
                 out / "model.npy", kept if train.max_valid_rows is None else None)
    predictions = {split: kept[split] if split in kept else rows[split].predict(state, model)
                   for split in ("valid", "test")}
    extra = {"parameter_count": n * m * model.k, "train_rows": len(train_rows),
             "threads": numba.get_num_threads()}
    return predictions, rows["valid"].labels, result, extra

