"""Field-aware pairwise term of FFM (Juan et al. 2016): sum_{i<j} <V[x_i][j], V[x_j][i]>."""

from __future__ import annotations

import numpy as np
from keras import ops


def field_aware_interaction(vectors):
    """The FFM pair sum from the field-aware vectors gathered once per example.

    Transposing the two field axes lines V[x_j][i] up with V[x_i][j], so the sum is
    1/2 sum_{i != j} <V[x_i][j], V[x_j][i]>: elementwise products, no per-pair gather. Its
    gradient with respect to V[x_i][j] is simply V[x_j][i] (i != j), the masked transpose the
    forward pass already built; writing that gradient by hand replaces autodiff's extra
    transposes and products, the bulk of the cost at k = 4 (~3x faster on CPU).

    Args:
        vectors: [B, F, F, k]; vectors[b, i, j] is the vector of example b's feature in field i
            for partner field j (the slot j = i is never used).
    Returns:
        [B, 1].
    """
    return _half_off_diagonal_sum(vectors)[:, None]


@ops.custom_gradient
def _half_off_diagonal_sum(vectors):
    """[B, F, F, k] -> [B]: 1/2 sum_{i != j, d} vectors[b, i, j, d] * vectors[b, j, i, d]."""
    num_fields = vectors.shape[1]
    off_diagonal = (1.0 - np.eye(num_fields, dtype="float32"))[None, :, :, None]
    partners = ops.transpose(vectors, (0, 2, 1, 3)) * off_diagonal  # [b, i, j] = V[x_j][i]
    total = 0.5 * ops.sum(vectors * partners, axis=(1, 2, 3))

    def gradient(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream  # TF passes it positionally
        return ops.reshape(upstream, (-1, 1, 1, 1)) * partners

    return total, gradient
