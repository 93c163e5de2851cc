"""Per-field embedding sizes k_i = min(max(1, round(c ln N_i)), max_dim) (Qu et al. 2018, Table 7).

How unequal sizes meet in a product: every field keeps a full-width (K = embedding_dim) row and
columns d >= k_i are multiplied by zero after the lookup, i.e. the field's vector is zero-padded
to K. An inner product then runs over the min(k_i, k_j) shared columns, and a `mat` kernel's
K x K block acts as the rectangular k_i x k_j kernel between the two spaces (the rest of the
block never receives gradient). The authors project or zero-pad; padding needs no extra weights.
Keeping one full-width table (rather than one table per size) keeps every model a single global-id
SparseEmbedding, which the sparse training runner relies on; the cost is that the padded columns
are stored though never used.
"""

from __future__ import annotations

import math

import numpy as np

ADAPTIVE_KEYS = ("c", "max_dim")


def adaptive_dims(vocabulary_sizes: list[int], embedding_dim: int, adaptive: dict) -> list[int]:
    """k_i per field for adaptive = {"c": float, "max_dim": int (optional, <= embedding_dim)}."""
    unknown = sorted(set(adaptive) - set(ADAPTIVE_KEYS))
    if unknown or "c" not in adaptive:
        raise ValueError(f"adaptive_embedding: keys must be 'c' and optionally 'max_dim', "
                         f"got {sorted(adaptive)}")
    scale = float(adaptive["c"])
    max_dim = int(adaptive.get("max_dim", embedding_dim))
    if scale <= 0 or not 1 <= max_dim <= embedding_dim:
        raise ValueError(f"adaptive_embedding: need c > 0 and 1 <= max_dim <= embedding_dim "
                         f"({embedding_dim}), got c={scale}, max_dim={max_dim}")
    return [min(max(1, round(scale * math.log(size))), max_dim) for size in vocabulary_sizes]


def field_width_mask(vocabulary_sizes: list[int], embedding_dim: int,
                     adaptive: dict | None) -> np.ndarray | None:
    """float32 [F, K], ones in the first k_i columns of field i; None when `adaptive` is None."""
    if adaptive is None:
        return None
    dims = np.array(adaptive_dims(vocabulary_sizes, embedding_dim, adaptive))
    return (np.arange(embedding_dim)[None, :] < dims[:, None]).astype("float32")
