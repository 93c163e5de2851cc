"""Static field-pair indices and the gathers built on them (shared by every pairwise model).

Pairs are the P = F(F-1)/2 field pairs (i, j), i < j, in row-major order: (0,1), (0,2), ...,
(0,F-1), (1,2), ... The indices are numpy constants, so no Python loop over pairs runs in a model.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def num_pairs(num_fields: int) -> int:
    return num_fields * (num_fields - 1) // 2


def pair_indices(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols): int32 [P] field indices i < j of every pair, row-major."""
    if num_fields < 2:
        raise ValueError(f"pairwise interactions need at least 2 fields, got {num_fields}")
    rows, cols = np.triu_indices(num_fields, k=1)
    return rows.astype("int32"), cols.astype("int32")


def gather_pairs(embeddings):
    """Both sides of every pair, pair-major.

    Pair-major ([P, B, k]) because the per-pair weights of kernels and micro-networks then apply
    as one batched matmul over the leading axis, and gathering along axis 0 is the cheapest gather.

    Args:
        embeddings: [B, F, k].
    Returns:
        (left, right): [P, B, k] each, left[p] = embeddings[:, i_p], right[p] = embeddings[:, j_p].
    """
    rows, cols = pair_indices(embeddings.shape[1])
    field_major = ops.transpose(embeddings, (1, 0, 2))  # [F, B, k]
    return ops.take(field_major, rows, axis=0), ops.take(field_major, cols, axis=0)


def upper_triangle(matrix):
    """Entries (i, j), i < j, of a per-example [B, F, F] matrix -> [B, P]."""
    num_fields = matrix.shape[1]
    rows, cols = pair_indices(num_fields)
    flat = ops.reshape(matrix, (-1, num_fields * num_fields))
    return ops.take(flat, rows * num_fields + cols, axis=1)
