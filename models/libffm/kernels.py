"""The numba kernels: one training pass and predictions, for each of the two row kinds.

Field rows (the field files, and libFFM text of one `a:id:1` per field a in order: feature a
belongs to field a, value 1) have their own kernels, with no per-pair field or value lookups;
sparse rows (CSR, from any other libFFM text) take any fields and values. Predictions skip
features whose index or field training never saw (>= n, >= m), as libffm does, and so does the
sparse training pass; the field training pass does not check (n and m come from its rows). The
state layout and the SIMD helpers are described in `intrinsics`.

Training runs lock-free over threads (Hogwild, like libffm's OpenMP loop): `prange` over the
epoch's order, `nogil`, no atomics.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from models.libffm.intrinsics import FAST, LANES, adagrad4, dot4, prefetch


def flat(state: np.ndarray) -> tuple:
    """(flat state, n, m, groups): the kernels' view of a state [n, m, groups, 2, LANES]."""
    n, m, groups = state.shape[:3]
    return state.reshape(-1), n, m, groups


@njit(cache=True, nogil=True)
def _prefetch_row(state, m, groups, ids):
    """Prefetches the state blocks of a row's features: on a Criteo-sized model the next row's
    ~2,400 random cache lines are fetched while this row computes (about +20% rows/s)."""
    block = m * groups * 2 * LANES
    for a in range(ids.shape[0]):
        base = np.int64(ids[a]) * block
        for line in range(0, block, 16):
            prefetch(state, base + line)


@njit(cache=True, nogil=True)
def _logistic(label, phi):
    """(logloss, kappa = dloss/dphi) of one instance; y in {-1, 1}, computed without overflow."""
    y = 1.0 if label > 0 else -1.0
    margin = y * phi
    loss = math.log1p(math.exp(-margin)) if margin > 0 else -margin + math.log1p(math.exp(margin))
    return loss, -y / (1.0 + math.exp(margin))


@njit(cache=True, nogil=True)
def _prefetch_known(state, n, m, groups, ids):
    """_prefetch_row of the features whose id is in the model (< n)."""
    for a in range(ids.shape[0]):
        if ids[a] < n:
            _prefetch_row(state, m, groups, ids[a:a + 1])


# Helpers both row kinds share. inline="always" (numba inlines them before LLVM sees the code):
# as ordinary calls they made training 1.2-1.5x and prediction 1.7-2.3x slower.

@njit(cache=True, nogil=True, fastmath=FAST, inline="always")
def _sigmoid(phi):
    return 1.0 / (1.0 + math.exp(-phi))


@njit(cache=True, nogil=True, fastmath=FAST, inline="always")
def _add_pair_dot(state, p, q, groups, total):
    """total + <w[j_a, f_b], w[j_b, f_a]>, one block of lanes at a time; p and q are the offsets
    of the two vectors in the flat state.

    The updates write their loop over blocks out instead of calling a helper like this one: with
    one (inlined or not), LLVM rounds the sparse update differently (1 ulp in a few weights)."""
    block = 2 * LANES
    for group in range(groups):
        total += dot4(state, p + group * block, q + group * block)
    return total


# Field rows.

@njit(cache=True, nogil=True, fastmath=FAST)
def _phi_fields(state, m, groups, ids, r):
    """phi(x) = r sum_{a<b} <w[j_a, field b], w[j_b, field a]>."""
    stride = groups * 2 * LANES  # floats per (feature, field)
    total = np.float32(0.0)
    for a in range(ids.shape[0]):
        row = np.int64(ids[a]) * m * stride
        for b in range(a + 1, ids.shape[0]):
            total = _add_pair_dot(state, row + b * stride, (np.int64(ids[b]) * m + a) * stride,
                                  groups, total)
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
                adagrad4(state, p + group * block, q + group * block, kappa_r, eta, l2)


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def train_fields(state, m, groups, ids, labels, order, r, eta, l2):
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


@njit(cache=True, nogil=True, fastmath=FAST)
def _phi_fields_checked(state, n, m, groups, ids, r):
    """_phi_fields skipping, as libffm does, features whose id training never saw (>= n) and
    fields past the model's m (rows of libFFM text with more fields than the training file)."""
    stride = groups * 2 * LANES
    total = np.float32(0.0)
    width = min(ids.shape[0], m)
    for a in range(width):
        if ids[a] >= n:
            continue
        row = np.int64(ids[a]) * m * stride
        for b in range(a + 1, width):
            if ids[b] >= n:
                continue
            total = _add_pair_dot(state, row + b * stride, (np.int64(ids[b]) * m + a) * stride,
                                  groups, total)
    return total * np.float32(r)


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def predict_fields(state, n, m, groups, ids, r, out):
    for row in prange(ids.shape[0]):
        if row + 1 < ids.shape[0]:
            _prefetch_known(state, n, m, groups, ids[row + 1][:m])
        out[row] = _sigmoid(_phi_fields_checked(state, n, m, groups, ids[row], r))


# Sparse rows.

@njit(cache=True, nogil=True, fastmath=FAST)
def _phi_sparse(state, n, m, groups, ids, fields, values, r):
    """phi(x) = sum_{a<b} <w[j_a, f_b], w[j_b, f_a]> v_a v_b r."""
    stride = groups * 2 * LANES
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
            dot = _add_pair_dot(state, (j1 * m + f2) * stride, (j2 * m + f1) * stride, groups,
                                np.float32(0.0))
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
                adagrad4(state, p + group * block, q + group * block, value * values[b], eta,
                         l2)


@njit(cache=True, nogil=True)
def _instance_scale(values, normalize, scale):
    if not normalize:
        return scale
    norm = 0.0
    for value in values:
        norm += value * value
    return scale / norm if norm > 0 else scale


@njit(parallel=True, cache=True, nogil=True, fastmath=FAST)
def train_sparse(state, n, m, groups, indptr, ids, fields, values, labels, order, normalize,
                 scale, eta, l2):
    loss = 0.0
    for position in prange(order.shape[0]):
        if position + 1 < order.shape[0]:
            following = order[position + 1]
            _prefetch_known(state, n, m, groups, ids[indptr[following]:indptr[following + 1]])
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
def predict_sparse(state, n, m, groups, indptr, ids, fields, values, normalize, scale, out):
    for row in prange(indptr.shape[0] - 1):
        if row + 2 < indptr.shape[0]:
            _prefetch_known(state, n, m, groups, ids[indptr[row + 1]:indptr[row + 2]])
        start, stop = indptr[row], indptr[row + 1]
        r = _instance_scale(values[start:stop], normalize, scale)
        phi = _phi_sparse(state, n, m, groups, ids[start:stop], fields[start:stop],
                          values[start:stop], r)
        out[row] = _sigmoid(phi)
