"""Kernel product kp_ij = v_i^T W_ij v_j of KFM and KPNN (Qu et al. 2018, §3.3), 3 kernel types.

    mat: W_ij a k x k matrix per pair, weight [P, k, k], initialised to the identity
    vec: W_ij = diag(u_ij), weight [P, k], initialised to ones (the authors' Criteo choice)
    num: W_ij = u_ij I, weight [P], initialised to ones (field-weighted FM)

Each initialisation makes kp_ij = <v_i, v_j>, so KFM starts as FM and KPNN as IPNN. The authors
store the `mat` kernel as [k, P, k]; [P, k, k] lets it apply as one batched matmul over pairs,
whose largest intermediate is [P, B, k] (DeepCTR broadcasts through B x k x P x k instead).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from models.layers.inner_product import pairwise_inner_products
from models.layers.pairs import gather_pairs, num_pairs, pair_indices

KERNEL_TYPES = ("mat", "vec", "num")


def _identity_per_pair(shape, dtype=None):
    """[P, k, k] stack of identities (the `mat` kernel's initial value)."""
    return ops.broadcast_to(ops.eye(shape[-1], dtype=dtype), shape)


@keras.saving.register_keras_serializable(package="criteo_pnn")
class KernelProduct(keras.layers.Layer):
    """All P kernel products of a [B, F, k] embedding batch.

    Args:
        num_fields: F.
        embedding_dim: k.
        kernel_type: "mat", "vec" or "num" (module docstring).
        kernel_l2: L2 on the kernel, l2 * sum(W^2) (the authors' tf.nn.l2_loss halves it).
    Input: [B, F, k]. Output: [B, P], pairs in row-major i < j order.
    """

    def __init__(self, num_fields: int, embedding_dim: int, kernel_type: str = "vec",
                 kernel_l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if kernel_type not in KERNEL_TYPES:
            raise ValueError(f"KernelProduct: kernel_type must be one of {KERNEL_TYPES}, "
                             f"got {kernel_type!r}")
        self.num_fields = int(num_fields)
        self.embedding_dim = int(embedding_dim)
        self.kernel_type = kernel_type
        self.kernel_l2 = float(kernel_l2)
        pairs, dim = num_pairs(self.num_fields), self.embedding_dim
        shape = {"mat": (pairs, dim, dim), "vec": (pairs, dim), "num": (pairs,)}[kernel_type]
        initializer = _identity_per_pair if kernel_type == "mat" else "ones"
        regularizer = keras.regularizers.L2(self.kernel_l2) if self.kernel_l2 else None
        self.kernel = self.add_weight(shape=shape, initializer=initializer,
                                      regularizer=regularizer, name="kernel")

    def build(self, input_shape):
        if tuple(input_shape[1:]) != (self.num_fields, self.embedding_dim):
            raise ValueError(f"KernelProduct: expected input [B, {self.num_fields}, "
                             f"{self.embedding_dim}], got {tuple(input_shape)}")

    def call(self, embeddings):
        if self.kernel_type == "num":  # a scalar per pair: scale the inner products
            return pairwise_inner_products(embeddings) * self.kernel
        left, right = gather_pairs(embeddings)  # [P, B, k] each
        if self.kernel_type == "mat":
            left = ops.matmul(left, self.kernel)  # v_i^T W_ij, batched over pairs: [P, B, k]
        else:
            left = left * self.kernel[:, None, :]
        return ops.transpose(ops.sum(left * right, axis=2))  # [B, P]

    def summed(self, embeddings):
        """sum_{i<j} kp_ij: [B, 1]. For `vec`, sum_i v_i . (sum_j U_ij * v_j) with U the
        [F, F, k] upper-triangular kernel: [B, F, k] intermediates instead of three [P, B, k]
        pair tensors (1.2 GB each at B = 2048, 69 fields, k = 64; KFM needs only the sum)."""
        if self.kernel_type != "vec":
            return ops.sum(self(embeddings), axis=1, keepdims=True)
        rows, cols = pair_indices(self.num_fields)
        slots = np.zeros((self.num_fields, self.num_fields), "int32")  # 0: no pair (a zero row)
        slots[rows, cols] = np.arange(1, len(rows) + 1)
        padded = ops.concatenate([ops.zeros_like(self.kernel[:1]), self.kernel], axis=0)
        upper = ops.take(padded, slots, axis=0)  # [F, F, k]
        partner_sums = ops.einsum("ijd,bjd->bid", upper, embeddings)  # [B, F, k]
        return ops.sum(embeddings * partner_sums, axis=(1, 2))[:, None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], num_pairs(self.num_fields))

    def get_config(self):
        return {**super().get_config(), "num_fields": self.num_fields,
                "embedding_dim": self.embedding_dim, "kernel_type": self.kernel_type,
                "kernel_l2": self.kernel_l2}
