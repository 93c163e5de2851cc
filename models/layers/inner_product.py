"""Inner products of field embeddings: all pairs (IPNN) and their sum (the FM term)."""

from __future__ import annotations

from keras import ops

from models.layers.pairs import upper_triangle


def pairwise_inner_products(embeddings):
    """<v_i, v_j> for every pair i < j (row-major, see models/layers/pairs.py).

    Computed from the per-example Gram matrix V V^T (FuxiCTR's route): its largest intermediate
    is [B, F, F], where gathering both sides of each pair would build two [B, P, k] tensors.

    Args:
        embeddings: [B, F, k].
    Returns:
        [B, P].
    """
    gram = ops.matmul(embeddings, ops.transpose(embeddings, (0, 2, 1)))  # [B, F, F]
    return upper_triangle(gram)


def fm_interaction(embeddings):
    """sum_{i<j} <v_i, v_j> by the square-of-sum identity: 1/2 sum_d [(sum_f v)^2 - sum_f v^2].

    Args:
        embeddings: [B, F, k].
    Returns:
        [B, 1].
    """
    square_of_sum = ops.square(ops.sum(embeddings, axis=1))  # [B, k]
    sum_of_squares = ops.sum(ops.square(embeddings), axis=1)  # [B, k]
    return 0.5 * ops.sum(square_of_sum - sum_of_squares, axis=1, keepdims=True)
