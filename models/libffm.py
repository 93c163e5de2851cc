"""libFFM-algorithm FFM: `python -m models.libffm --tag TAG --model libffm|libffm_winners`.

A reimplementation of what libffm 1.13 (Juan et al. 2016; the winners' master pipeline) computes,
in numba:
- model: phi(x) = sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> v_a v_b r, field-aware pairwise terms only
  (no linear term, no bias); p = sigmoid(phi); r = 1/||x||^2 (instance normalisation; 1/F for
  one-hot rows), times `normalization_scale` (the winners' competition solver: 2/F);
- init w ~ (init_scale / sqrt(k)) U[0, 1), AdaGrad accumulators G = 1;
- per instance, in a new random order each epoch: kappa = dloss/dphi = -y / (1 + exp(y phi)),
  y in {-1, 1}; for every pair and d: g1 = lambda w1 + kappa v w2, g2 = lambda w2 + kappa v w1
  (L2 inside each pair's gradient, both from the old values), G += g^2, w -= eta g / sqrt(G);
- lock-free multi-threaded updates (Hogwild, like libffm's OpenMP loop): `numba.prange` over the
  epoch's order, `nogil`, no atomics. Runs with more than one thread are not bit-reproducible
  (neither is libffm); `threads: 1` is;
- `auto_stop` (libffm --auto-stop): stop at the first epoch whose validation logloss rises and
  keep the previous epoch's weights; otherwise a fixed number of epochs (the winners: 18).

Inputs (`data.stage`, `data.format`): the field files (`03_hash`: 39 fields, `04_leaves`: 69 with
the GBDT leaf fields) read as int32 memmaps, the fast path; or libFFM text (`04_export/*.ffm`,
`04_leaves/*.ffm`), converted once to binary CSR files and streamed from them, for any libFFM file.
Neither is ever loaded whole: an epoch reads `shuffle_block_rows` contiguous rows at a time (block
order and rows within a block shuffled; 0 = one uniform permutation over the memmap, libffm's
order, fast only when the file fits in the page cache). The model state, n·m·k weights and as
many AdaGrad accumulators in float32 (interleaved like libffm's), is the only large allocation;
`auto_stop` keeps the previous epoch's weights on disk (`model.npy`), not in RAM.

`train.engine: binary` runs the real `ffm-train`/`ffm-predict` (from PATH) on the same text files.

Outputs `artifacts/<TAG>/05_train/<ID>/`: metrics.json, valid.pred.npy, test.pred.npy (float32),
model.npy (weights float32 [n, m, k]; `model.txt` for the binary engine), history.csv,
config.resolved.json.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import typing
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from models.cli import learner_main
from models.train_report import (  # the runner's metrics
    constant_logloss,
    logloss_and_auc,
)
from preprocessing import field_spec
from stages import config as config_lib
from stages.manifest import Stage
from stages.paths import stage_dir

# fastmath without nnan/ninf: an overflowing score must stay visible, not become undefined.
FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}
TEXT_CHUNK_BYTES = 1 << 26


# ---------------------------------------------------------------------------------------------
# Configuration (configs/models/libffm.yaml documents every key)

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
    shuffle: bool = True  # false = libffm --no-rand
    shuffle_block_rows: int = 1 << 20
    threads: int = 0  # 0 = every core numba sees
    seed: int = 2014
    max_train_rows: int | None = None
    max_valid_rows: int | None = None

    def __post_init__(self):
        for name in ("epochs", "threads", "shuffle_block_rows"):
            if getattr(self, name) < (1 if name == "epochs" else 0):
                raise ValueError(f"config.train.{name}: out of range: {getattr(self, name)}")
        if self.learning_rate <= 0 or self.l2 < 0:
            raise ValueError("config.train: learning_rate must be > 0 and l2 >= 0")


@dataclasses.dataclass(frozen=True)
class LibffmConfig:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    preset: str = "paper"


def load_config(path: Path, preset: str = "paper", overrides=()) -> LibffmConfig:
    """The model YAML, then `presets.<preset>`, then `--set key=value` overrides; strict."""
    return config_lib.load_with_preset(LibffmConfig, path, preset, overrides, f" ({path})")


# ---------------------------------------------------------------------------------------------
# Kernels. The model state is float32 [n, m, groups, 2, LANES], groups = ceil(k / LANES): for
# feature j and field f, lanes of the latent vector w[j, f] alternate with their AdaGrad
# accumulators in blocks of 4 (libffm's SSE layout; padded lanes stay 0). Kernels take it
# flattened; `_dot4` / `_adagrad4` process one block of 4 lanes as SIMD vectors (LLVM IR via
# numba intrinsics: numba does not vectorise these loops itself, and its scalar sqrt is a libm
# call that costs more than the rest of the update).

LANES = 4
_VECTOR = ir.VectorType(ir.FloatType(), LANES)
_FAST_FLAGS = tuple(sorted(FAST))  # lets LLVM use rsqrtps + a Newton step for g / sqrt(G)


def _vector_pointer(builder, data, offset):
    return builder.bitcast(builder.gep(data, [offset]), _VECTOR.as_pointer())


def _broadcast(builder, value):
    vector = ir.Constant(_VECTOR, ir.Undefined)
    for lane in range(LANES):
        vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
    return vector


@intrinsic
def _dot4(typingctx, state, p, q):
    """sum over 4 lanes of state[p + d] * state[q + d]."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        left = builder.load(_vector_pointer(builder, data, args[1]), align=4)
        right = builder.load(_vector_pointer(builder, data, args[2]), align=4)
        product = builder.fmul(left, right, flags=_FAST_FLAGS)
        lanes = [builder.extract_element(product, ir.Constant(ir.IntType(32), lane))
                 for lane in range(LANES)]
        return builder.fadd(builder.fadd(lanes[0], lanes[1], flags=_FAST_FLAGS),
                            builder.fadd(lanes[2], lanes[3], flags=_FAST_FLAGS), flags=_FAST_FLAGS)
    return types.float32(state, p, q), codegen


@intrinsic
def _adagrad4(typingctx, state, p, q, kappa_v, eta, l2):
    """libffm's update of 4 lanes of one pair; weights at p and q, accumulators 4 floats later:
    g1 = l2 w1 + kappa_v w2, g2 = l2 w2 + kappa_v w1, G += g^2, w -= eta g / sqrt(G)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        four = ir.Constant(args[1].type, LANES)
        offsets = (args[1], args[2], builder.add(args[1], four), builder.add(args[2], four))
        w1, w2, sum1, sum2 = (builder.load(_vector_pointer(builder, data, offset), align=4)
                              for offset in offsets)
        kappa_v, eta, l2 = (_broadcast(builder, value) for value in args[3:])

        def mul(a, b):
            return builder.fmul(a, b, flags=_FAST_FLAGS)

        def add(a, b):
            return builder.fadd(a, b, flags=_FAST_FLAGS)

        g1 = add(mul(l2, w1), mul(kappa_v, w2))
        g2 = add(mul(l2, w2), mul(kappa_v, w1))
        sum1, sum2 = add(sum1, mul(g1, g1)), add(sum2, mul(g2, g2))
        sqrt = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR]),
                                              "llvm.sqrt.v4f32")
        w1 = builder.fsub(w1, builder.fdiv(mul(eta, g1), builder.call(sqrt, [sum1]),
                                           flags=_FAST_FLAGS), flags=_FAST_FLAGS)
        w2 = builder.fsub(w2, builder.fdiv(mul(eta, g2), builder.call(sqrt, [sum2]),
                                           flags=_FAST_FLAGS), flags=_FAST_FLAGS)
        for value, offset in zip((w1, w2, sum1, sum2), offsets):
            builder.store(value, _vector_pointer(builder, data, offset), align=4)
        return context.get_dummy_value()
    return types.void(state, p, q, types.float32, types.float32, types.float32), codegen


@intrinsic
def _prefetch(typingctx, state, offset):
    """Hints the cache line holding state[offset] into the cache (for writing)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3),
            "llvm.prefetch.p0")
        flags = [ir.Constant(ir.IntType(32), value) for value in (1, 3, 1)]  # write, keep, data
        builder.call(prefetch, [builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)]
                     + flags)
        return context.get_dummy_value()
    return types.void(state, offset), codegen


@njit(cache=True, nogil=True)
def _prefetch_row(state, m, groups, ids):
    """Prefetches the state blocks of a row's features: on a Criteo-sized model the next row's
    ~2,400 random cache lines are fetched while this row computes (about +20% rows/s)."""
    block = m * groups * 2 * LANES
    for a in range(ids.shape[0]):
        base = np.int64(ids[a]) * block
        for line in range(0, block, 16):
            _prefetch(state, base + line)


@njit(cache=True, nogil=True)
def _logistic(label, phi):
    """(logloss, kappa = dloss/dphi) of one instance; y in {-1, 1}, computed without overflow."""
    y = 1.0 if label > 0 else -1.0
    margin = y * phi
    loss = math.log1p(math.exp(-margin)) if margin > 0 else -margin + math.log1p(math.exp(margin))
    return loss, -y / (1.0 + math.exp(margin))


# The field files' rows: feature a belongs to field a and has value 1 (ids checked on opening).
# Kept apart from the general CSR versions below: no per-pair field, value or range lookups.

@njit(cache=True, nogil=True, fastmath=FAST)
def _phi_fields(state, m, groups, ids, r):
    """phi(x) = r sum_{a<b} <w[j_a, field b], w[j_b, field a]>."""
    block = 2 * LANES
    stride = groups * block  # floats per (feature, field)
    total = np.float32(0.0)
    for a in range(ids.shape[0]):
        row = np.int64(ids[a]) * m * stride
        for b in range(a + 1, ids.shape[0]):
            p = row + b * stride
            q = (np.int64(ids[b]) * m + a) * stride
            for group in range(groups):
                total += _dot4(state, p + group * block, q + group * block)
    return total * np.float32(r)


@njit(cache=True, nogil=True, fastmath=FAST)
def _update_fields(state, m, groups, ids, kappa_r, eta, l2):
    block = 2 * LANES
    stride = groups * block
    for a in range(ids.shape[0]):
        row = np.int64(ids[a]) * m * stride
        for b in range(a + 1, ids.shape[0]):
            p = row + b * stride
            q = (np.int64(ids[b]) * m + a) * stride
            for group in range(groups):
                _adagrad4(state, p + group * block, q + group * block, kappa_r, eta, l2)


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def _train_fields(state, m, groups, ids, labels, order, r, eta, l2):
    """One pass over rows `order` of ids [N, F]; returns the summed logloss (before updates)."""
    loss = 0.0
    for position in prange(order.shape[0]):
        if position + 1 < order.shape[0]:
            _prefetch_row(state, m, groups, ids[order[position + 1]])
        row = order[position]
        row_loss, kappa = _logistic(labels[row], _phi_fields(state, m, groups, ids[row], r))
        _update_fields(state, m, groups, ids[row], np.float32(kappa * r), eta, l2)
        loss += row_loss
    return loss


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def _predict_fields(state, m, groups, ids, r, out):
    for row in prange(ids.shape[0]):
        if row + 1 < ids.shape[0]:
            _prefetch_row(state, m, groups, ids[row + 1])
        out[row] = 1.0 / (1.0 + math.exp(-_phi_fields(state, m, groups, ids[row], r)))


# General rows (libFFM text): any fields and values; features whose index or field training
# never saw (>= n, >= m) are skipped, as libffm does.

@njit(cache=True, nogil=True, fastmath=FAST)
def _phi_sparse(state, n, m, groups, ids, fields, values, r):
    """phi(x) = sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> v_a v_b r."""
    block = 2 * LANES
    stride = groups * block
    total = np.float32(0.0)
    for a in range(ids.shape[0]):
        j1, f1 = np.int64(ids[a]), np.int64(fields[a])
        if j1 >= n or f1 >= m:
            continue
        value = values[a] * np.float32(r)
        for b in range(a + 1, ids.shape[0]):
            j2, f2 = np.int64(ids[b]), np.int64(fields[b])
            if j2 >= n or f2 >= m:
                continue
            p = (j1 * m + f2) * stride
            q = (j2 * m + f1) * stride
            dot = np.float32(0.0)
            for group in range(groups):
                dot += _dot4(state, p + group * block, q + group * block)
            total += dot * (value * values[b])
    return total


@njit(cache=True, nogil=True, fastmath=FAST)
def _update_sparse(state, n, m, groups, ids, fields, values, kappa_r, eta, l2):
    block = 2 * LANES
    stride = groups * block
    for a in range(ids.shape[0]):
        j1, f1 = np.int64(ids[a]), np.int64(fields[a])
        if j1 >= n or f1 >= m:
            continue
        value = values[a] * kappa_r
        for b in range(a + 1, ids.shape[0]):
            j2, f2 = np.int64(ids[b]), np.int64(fields[b])
            if j2 >= n or f2 >= m:
                continue
            p = (j1 * m + f2) * stride
            q = (j2 * m + f1) * stride
            for group in range(groups):
                _adagrad4(state, p + group * block, q + group * block, value * values[b], eta,
                          l2)


@njit(cache=True, nogil=True)
def _instance_scale(values, normalize, scale):
    if not normalize:
        return scale
    norm = 0.0
    for value in values:
        norm += value * value
    return scale / norm if norm > 0 else scale


@njit(cache=True, nogil=True)
def _prefetch_sparse_row(state, n, m, groups, ids):
    for a in range(ids.shape[0]):
        if ids[a] < n:
            _prefetch_row(state, m, groups, ids[a:a + 1])


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def _train_sparse(state, n, m, groups, indptr, ids, fields, values, labels, order, normalize,
                  scale, eta, l2):
    loss = 0.0
    for position in prange(order.shape[0]):
        if position + 1 < order.shape[0]:
            following = order[position + 1]
            _prefetch_sparse_row(state, n, m, groups, ids[indptr[following]:indptr[following + 1]])
        row = order[position]
        start, stop = indptr[row], indptr[row + 1]
        r = _instance_scale(values[start:stop], normalize, scale)
        phi = _phi_sparse(state, n, m, groups, ids[start:stop], fields[start:stop],
                          values[start:stop], r)
        row_loss, kappa = _logistic(labels[row], phi)
        _update_sparse(state, n, m, groups, ids[start:stop], fields[start:stop],
                       values[start:stop], np.float32(kappa * r), eta, l2)
        loss += row_loss
    return loss


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def _predict_sparse(state, n, m, groups, indptr, ids, fields, values, normalize, scale, out):
    for row in prange(indptr.shape[0] - 1):
        if row + 2 < indptr.shape[0]:
            _prefetch_sparse_row(state, n, m, groups, ids[indptr[row + 1]:indptr[row + 2]])
        start, stop = indptr[row], indptr[row + 1]
        r = _instance_scale(values[start:stop], normalize, scale)
        phi = _phi_sparse(state, n, m, groups, ids[start:stop], fields[start:stop],
                          values[start:stop], r)
        out[row] = 1.0 / (1.0 + math.exp(-phi))


def _flat(state: np.ndarray) -> tuple:
    """(flat state, n, m, groups): the kernels' view of a state [n, m, groups, 2, LANES]."""
    n, m, groups = state.shape[:3]
    return state.reshape(-1), n, m, groups


# ---------------------------------------------------------------------------------------------
# Row sources: the same two operations over field files and over (converted) libFFM text.

@dataclasses.dataclass
class FieldRows:
    """Rows of the field files: every row has one feature per field, value 1.

    ids: int32 [N, F] global ids, all < n (the kernels do not check: `open_inputs` verifies the
    files), a memmap or an in-RAM block; labels: uint8 [N] or None.
    """
    ids: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_fields(self) -> int:
        return self.ids.shape[1]

    def take(self, start: int, stop: int) -> FieldRows:
        """Rows [start, stop) read into RAM."""
        return FieldRows(np.ascontiguousarray(self.ids[start:stop]),
                         None if self.labels is None else np.asarray(self.labels[start:stop]))

    def head(self, rows: int | None) -> FieldRows:
        """The first `rows` rows (all when None), as views."""
        return FieldRows(self.ids[:rows], None if self.labels is None else self.labels[:rows])

    def _scale(self, model: ModelConfig) -> float:
        """r: every row has F features of value 1, so ||x||^2 = F."""
        norm = self.num_fields if model.normalization == "instance" else 1
        return model.normalization_scale / norm

    def train(self, state, order, model: ModelConfig, train: TrainConfig) -> float:
        _, _, m, groups = _flat(state)
        return _train_fields(state.reshape(-1), m, groups, np.asarray(self.ids),
                             np.asarray(self.labels), order, self._scale(model),
                             train.learning_rate, train.l2)

    def predict(self, state, model: ModelConfig) -> np.ndarray:
        out = np.empty(len(self), np.float32)
        _, _, m, groups = _flat(state)
        _predict_fields(state.reshape(-1), m, groups, np.asarray(self.ids), self._scale(model),
                        out)
        return out


@dataclasses.dataclass
class SparseRows:
    """Rows in CSR form (libFFM text): row i holds entries indptr[i]:indptr[i + 1]."""
    indptr: np.ndarray  # int64 [N + 1]
    ids: np.ndarray  # int32 [nnz]
    fields: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]
    labels: np.ndarray | None  # uint8 [N]

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_fields(self) -> int:
        return int(self.fields.max()) + 1 if len(self.fields) else 0

    def take(self, start: int, stop: int) -> SparseRows:
        """Rows [start, stop): entries as views, indptr rebased to 0."""
        low, high = int(self.indptr[start]), int(self.indptr[stop])
        return SparseRows(np.asarray(self.indptr[start:stop + 1]) - low,
                          np.asarray(self.ids[low:high]), np.asarray(self.fields[low:high]),
                          np.asarray(self.values[low:high]),
                          None if self.labels is None else np.asarray(self.labels[start:stop]))

    def head(self, rows: int | None) -> SparseRows:
        return self.take(0, min(rows or len(self), len(self)))

    def train(self, state, order, model: ModelConfig, train: TrainConfig) -> float:
        return _train_sparse(*_flat(state), self.indptr, self.ids, self.fields, self.values,
                             self.labels, order, model.normalization == "instance",
                             model.normalization_scale, train.learning_rate, train.l2)

    def predict(self, state, model: ModelConfig) -> np.ndarray:
        out = np.empty(len(self), np.float32)
        _predict_sparse(*_flat(state), self.indptr, self.ids, self.fields, self.values,
                        model.normalization == "instance", model.normalization_scale, out)
        return out


# ---------------------------------------------------------------------------------------------
# libFFM text -> CSR files (streamed in chunks, never the whole file in RAM)

@njit(cache=True)
def _parse_number(buffer, position, end):
    """Parses [-]digits[.digits][e[-]digits] at `position`; returns (value or NaN, position)."""
    sign = 1.0
    if position < end and (buffer[position] == 45 or buffer[position] == 43):  # - +
        sign = -1.0 if buffer[position] == 45 else 1.0
        position += 1
    value, digits = 0.0, 0
    while position < end and 48 <= buffer[position] <= 57:
        value = value * 10.0 + (buffer[position] - 48)
        position += 1
        digits += 1
    if position < end and buffer[position] == 46:  # .
        position += 1
        scale = 0.1
        while position < end and 48 <= buffer[position] <= 57:
            value += (buffer[position] - 48) * scale
            scale *= 0.1
            position += 1
            digits += 1
    if digits and position < end and (buffer[position] == 101 or buffer[position] == 69):  # e E
        position += 1
        exponent_sign = 1.0
        if position < end and (buffer[position] == 45 or buffer[position] == 43):
            exponent_sign = -1.0 if buffer[position] == 45 else 1.0
            position += 1
        exponent = 0.0
        while position < end and 48 <= buffer[position] <= 57:
            exponent = exponent * 10.0 + (buffer[position] - 48)
            position += 1
        value *= 10.0 ** (exponent_sign * exponent)
    return (sign * value if digits else np.nan), position


@njit(cache=True)
def _parse_chunk(buffer, labels, indptr, ids, fields, values):
    """Parses complete lines `label field:index:value ...`.

    Returns (rows, entries, bad line number or -1); `indptr` gets per-row entry ends.
    """
    rows, entries, position, end = 0, 0, 0, buffer.shape[0]
    while position < end:
        label, position = _parse_number(buffer, position, end)
        if np.isnan(label):
            return rows, entries, rows
        labels[rows] = 1 if label > 0 else 0
        while position < end and buffer[position] != 10:
            if buffer[position] == 32 or buffer[position] == 9 or buffer[position] == 13:
                position += 1
                continue
            field, position = _parse_number(buffer, position, end)
            if position >= end or buffer[position] != 58:  # ':'
                return rows, entries, rows
            index, position = _parse_number(buffer, position + 1, end)
            if position >= end or buffer[position] != 58 or np.isnan(field) or np.isnan(index) \
                    or field < 0 or index < 0:
                return rows, entries, rows
            value, position = _parse_number(buffer, position + 1, end)
            if np.isnan(value):
                return rows, entries, rows
            fields[entries], ids[entries], values[entries] = field, index, value
            entries += 1
        position += 1
        indptr[rows] = entries
        rows += 1
    return rows, entries, -1


def _line_chunks(path: Path):
    """Yields whole lines, about TEXT_CHUNK_BYTES at a time (the file may lack a final newline)."""
    with open(path, "rb") as source:
        rest = b""
        while chunk := source.read(TEXT_CHUNK_BYTES):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            rest = data[cut:]
        if rest.strip():
            yield rest


def _parse_lines(lines: bytes, path: Path, first_line: int) -> dict:
    """CSR arrays of complete libFFM lines; indptr holds each row's end (relative to the chunk)."""
    rows = lines.count(b"\n") + 1
    entries = lines.count(b":") // 2 + 1
    parsed = {"labels": np.empty(rows, np.uint8), "indptr": np.empty(rows, np.int64),
              "ids": np.empty(entries, np.int32), "fields": np.empty(entries, np.int32),
              "values": np.empty(entries, np.float32)}
    rows, entries, bad = _parse_chunk(np.frombuffer(lines, np.uint8), parsed["labels"],
                                      parsed["indptr"], parsed["ids"], parsed["fields"],
                                      parsed["values"])
    if bad >= 0:
        raise ValueError(f"{path}:{first_line + bad}: not a libFFM line "
                         "(label field:index:value ...)")
    return {name: array[:rows if name in ("labels", "indptr") else entries]
            for name, array in parsed.items()}


def convert_text(path: Path, out_dir: Path) -> SparseRows:
    """Converts a libFFM text file to CSR arrays in `out_dir`, chunk by chunk; returns memmaps."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtypes = {"labels": np.uint8, "indptr": np.int64, "ids": np.int32, "fields": np.int32,
              "values": np.float32}
    paths = {name: out_dir / f"{path.stem}.{name}.bin" for name in dtypes}
    rows = entries = 0
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(target, "wb")) for name, target in paths.items()}
        files["indptr"].write(np.zeros(1, np.int64).tobytes())
        for lines in _line_chunks(path):
            parsed = _parse_lines(lines, path, rows + 1)
            parsed["indptr"] += entries
            for name, array in parsed.items():
                files[name].write(array.tobytes())
            rows, entries = rows + len(parsed["labels"]), entries + len(parsed["ids"])
    sizes = {"labels": rows, "indptr": rows + 1, "ids": entries, "fields": entries,
             "values": entries}
    arrays = {name: np.memmap(paths[name], dtype, "r") if sizes[name] else np.zeros(0, dtype)
              for name, dtype in dtypes.items()}
    return SparseRows(arrays["indptr"], arrays["ids"], arrays["fields"], arrays["values"],
                      arrays["labels"])


# ---------------------------------------------------------------------------------------------
# Training

ROW_CHUNK_FLOATS = 1 << 22  # initialise / save / restore the state this many floats at a time


def _row_chunks(state: np.ndarray):
    n, m, groups = state.shape[:3]
    step = max(1, ROW_CHUNK_FLOATS // (m * groups * 2 * LANES))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def initial_state(n: int, m: int, model: ModelConfig, seed: int) -> np.ndarray:
    """float32 [n, m, groups, 2, LANES]: weights (init_scale/sqrt(k)) U[0, 1) (libffm), padded
    lanes 0, accumulators 1."""
    groups = -(-model.k // LANES)
    state = np.zeros((n, m, groups, 2, LANES), np.float32)
    state[:, :, :, 1] = 1.0
    rng = np.random.default_rng(seed)
    coefficient = np.float32(model.init_scale / math.sqrt(model.k))
    for start, stop in _row_chunks(state):
        weights = rng.random((stop - start, m, model.k), np.float32) * coefficient
        _set_weights(state[start:stop], model.k, weights)
    return state


def _get_weights(block: np.ndarray, k: int) -> np.ndarray:
    """float32 [rows, m, k] weights of a state block [rows, m, groups, 2, LANES] (a copy)."""
    rows, m, groups = block.shape[:3]
    return block[:, :, :, 0, :].reshape(rows, m, groups * LANES)[:, :, :k]


def _set_weights(block: np.ndarray, k: int, weights: np.ndarray) -> None:
    rows, m, groups = block.shape[:3]
    padded = np.zeros((rows, m, groups * LANES), np.float32)
    padded[:, :, :k] = weights
    block[:, :, :, 0, :] = padded.reshape(rows, m, groups, LANES)


def save_weights(state: np.ndarray, k: int, path: Path) -> None:
    """Writes the weights float32 [n, m, k] (the model file), chunk by chunk."""
    n, m = state.shape[:2]
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n, m, k))
    for start, stop in _row_chunks(state):
        out[start:stop] = _get_weights(state[start:stop], k)
    out.flush()


def load_weights(state: np.ndarray, k: int, path: Path) -> None:
    """Reads weights written by `save_weights` back into `state` (accumulators untouched)."""
    weights = np.load(path, mmap_mode="r")
    for start, stop in _row_chunks(state):
        _set_weights(state[start:stop], k, weights[start:stop])


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
    history: list  # per epoch: epoch, train_logloss, valid_logloss, valid_auc, seconds
    best_epoch: int
    stopped_early: bool
    train_seconds: float
    examples: int


def fit(state, train_rows, valid_rows, model: ModelConfig, train: TrainConfig,
        weights_path: Path | None) -> FitResult:
    """Trains `state` in place; with auto_stop, keeps the best epoch's weights (libffm).

    `weights_path` (the model file) ends holding the weights in `state`: with auto_stop, each
    epoch's weights are saved there before the next epoch is judged, and read back on a stop.
    None (fixed epochs only) writes nothing.
    """
    if train.auto_stop and weights_path is None:
        raise ValueError("auto_stop keeps the previous weights in a file: give weights_path")
    numba.set_num_threads(train.threads or numba.config.NUMBA_NUM_THREADS)
    history, best, seconds, examples = [], math.inf, 0.0, 0
    stopped_early = False
    for epoch in range(1, train.epochs + 1):
        started = time.perf_counter()
        train_loss = train_epoch(state, train_rows, model, train, epoch)
        epoch_seconds = time.perf_counter() - started
        seconds += epoch_seconds
        examples += len(train_rows)
        valid_loss, valid_auc = logloss_and_auc(valid_rows.labels,
                                                valid_rows.predict(state, model))
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
        if train.auto_stop and epoch < train.epochs:
            save_weights(state, model.k, weights_path)
    if not stopped_early and weights_path is not None:
        save_weights(state, model.k, weights_path)
    best_epoch = len(history) - 1 if stopped_early else len(history)
    return FitResult(history, best_epoch, stopped_early, seconds, examples)


# ---------------------------------------------------------------------------------------------
# Inputs, the binary engine, publishing

def input_dir(tag: str, config: LibffmConfig) -> Path:
    return stage_dir(tag, config.data.stage)


def open_inputs(tag: str, config: LibffmConfig, cache_dir: Path) -> dict:
    """{split: FieldRows | SparseRows} for train/valid/test (whole splits)."""
    directory = input_dir(tag, config)
    if config.data.format == "fields":
        _, splits = field_spec.open_field_files(directory, check_ids=True)
        rows = {name: FieldRows(split.fields, split.labels) for name, split in splits.items()}
    else:
        rows = {}
        for name in field_spec.SPLITS:
            path = directory / f"{name}.ffm"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing; data.format=text needs the libFFM "
                                        "text of stage 04 (export.libffm / leaves.libffm)")
            rows[name] = convert_text(path, cache_dir)
        rows["test"].labels = None
    return rows


def model_size(tag: str, config: LibffmConfig, rows: dict) -> tuple[int, int]:
    """(n, m): the field files' total vocabulary and field count; for text, as libffm: the
    largest index and field of the training file, plus one."""
    if config.data.format == "fields":
        spec = field_spec.FieldSpec.load(input_dir(tag, config))
        return spec.total_vocabulary_size, spec.num_fields
    train = rows["train"]
    return int(train.ids.max()) + 1, train.num_fields


def binary_commands(config: LibffmConfig, directory: Path, out: Path) -> list[list[str]]:
    """The ffm-train / ffm-predict command lines for the binary engine."""
    model, train = config.model, config.train
    unsupported = [name for name, value, default in (
        ("model.init_scale", model.init_scale, 1.0),
        ("model.normalization_scale", model.normalization_scale, 1.0),
        ("train.max_train_rows", train.max_train_rows, None),
        ("train.max_valid_rows", train.max_valid_rows, None)) if value != default]
    if unsupported:
        raise ValueError(f"train.engine=binary: ffm-train has no equivalent of {unsupported}")
    if config.data.format != "text":
        raise ValueError("train.engine=binary reads libFFM text: set data.format=text")
    command = ["ffm-train", "-k", str(model.k), "-t", str(train.epochs), "-r",
               str(train.learning_rate), "-l", str(train.l2), "-s",
               str(train.threads or os.cpu_count()), "-p", str(directory / "valid.ffm")]
    command += ["--auto-stop"] if train.auto_stop else []
    command += ["--no-norm"] if model.normalization == "none" else []
    command += [] if train.shuffle else ["--no-rand"]
    command += [str(directory / "train.ffm"), str(out / "model.txt")]
    predicts = [["ffm-predict", str(directory / f"{split}.ffm"), str(out / "model.txt"),
                 str(out / f"{split}.out")] for split in ("valid", "test")]
    return [command] + predicts


def run_binary(tag: str, config: LibffmConfig, out: Path, cache: Path):
    """Runs the real libffm on the text files; returns what `run_numba` does (the history from
    ffm-train's log)."""
    directory = input_dir(tag, config)
    for program in ("ffm-train", "ffm-predict"):
        if shutil.which(program) is None:
            raise FileNotFoundError(f"train.engine=binary: {program} is not on the PATH")
    commands = binary_commands(config, directory, out)
    started = time.perf_counter()
    log = subprocess.run(commands[0], check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    print(log, end="")
    for command in commands[1:]:
        subprocess.run(command, check=True, capture_output=True)
    predictions = {split: np.loadtxt(out / f"{split}.out", dtype=np.float32, ndmin=1)
                   for split in ("valid", "test")}
    for split in ("valid", "test"):
        (out / f"{split}.out").unlink()
    history = [{"epoch": int(epoch), "train_logloss": float(train_loss),
                "valid_logloss": float(valid_loss)}
               for epoch, train_loss, valid_loss in
               re.findall(r"^\s*(\d+)\s+([0-9.naif-]+)\s+([0-9.naif-]+)", log, re.MULTILINE)]
    stopped = "Auto-stop" in log
    with open(directory / "train.ffm", "rb") as handle:
        rows = sum(1 for _ in handle)
    epochs = len(history)
    result = FitResult(history, epochs - 1 if stopped else epochs, stopped, seconds,
                       rows * epochs)
    valid_labels = convert_text(directory / "valid.ffm", cache).labels
    threads = int(commands[0][commands[0].index("-s") + 1])
    return predictions, valid_labels, result, {"train_rows": rows, "threads": threads}


def stage_for(tag: str, model_id: str, config: LibffmConfig) -> Stage:
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
        write_history(result.history, out / "history.csv")
        stage.record(metrics=metrics)
    return metrics


def run_numba(tag: str, config: LibffmConfig, out: Path, cache: Path):
    """Trains with the numba kernels; returns ({split: predictions}, valid labels, FitResult,
    extra metrics). Predictions cover the whole valid and test splits whatever max_*_rows."""
    rows = open_inputs(tag, config, cache)
    n, m = model_size(tag, config, rows)
    state = initial_state(n, m, config.model, config.train.seed)
    train = config.train
    train_rows = rows["train"].head(train.max_train_rows)
    result = fit(state, train_rows, rows["valid"].head(train.max_valid_rows), config.model,
                 train, out / "model.npy")
    predictions = {split: rows[split].predict(state, config.model) for split in ("valid", "test")}
    extra = {"parameter_count": n * m * config.model.k, "train_rows": len(train_rows),
             "threads": numba.get_num_threads()}
    return predictions, rows["valid"].labels, result, extra


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


def write_history(history: list, path: Path) -> None:
    if not history:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def main(argv=None) -> None:
    learner_main(__doc__, load_config, train_model, argv)


if __name__ == "__main__":
    main()
