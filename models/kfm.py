"""KFM: kernel factorization machine (Qu et al. 2018, §3.3), FM with a kernel per field pair."""

from __future__ import annotations

import math

import keras

from models.layers.adaptive_embedding import field_width_mask
from models.layers.embedding import SparseEmbedding
from models.layers.kernel_product import KernelProduct
from models.layers.linear import LinearTerm
from models.registry import FieldModel, register


@register("kfm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class KFM(FieldModel):
    """logit = b + sum_f w[x_f] + sum_{i<j} v_i^T W_ij v_j.

    Features share one k-vector (as in FM) and each field pair has a kernel W_ij (`mat`: k x k,
    `vec`: diagonal, `num`: scalar; models/layers/kernel_product.py). The kernels start as
    identities, so an untrained KFM equals an FM with the same tables. The authors' Kaggle KFM
    used `vec`; their `unit_kernel` and `fix_kernel` options (off there) are not carried over.

    Their Kaggle run also set `input_norm` (looked-up vectors and linear weights divided by
    sqrt(F), so every pair product carries libffm's instance normalisation 1/F for one-hot rows,
    and the sparse L2 applies to the scaled rows: l2 / F on the stored ones) and `init_sparse`
    (libffm's initialisation: w ~ U(0, 1), v ~ U(0, 1/sqrt(k))).

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20), the cap K when `adaptive_embedding` is set.
        kernel_type: "mat", "vec" or "num".
        kernel_l2: L2 on the kernel (a regular Keras regulariser).
        adaptive_embedding: {"c": float, "max_dim": int} for per-field sizes
            k_i = min(max(1, round(c ln N_i)), max_dim), zero-padded to K (Table 7;
            models/layers/adaptive_embedding.py); None for k everywhere.
        sparse_l2: L2 on looked-up rows (applied by the training runner); with `input_norm`, on
            the scaled rows, as the authors.
        input_norm: divide looked-up vectors and linear weights by sqrt(F).
        init_sparse: w ~ U(0, 1) and v ~ U(0, 1/sqrt(k)) instead of zeros and Glorot.
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 kernel_type: str = "vec", kernel_l2: float = 0.0,
                 adaptive_embedding: dict | None = None, sparse_l2: float = 0.0,
                 input_norm: bool = False, init_sparse: bool = False, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.width_mask = field_width_mask(vocabulary_sizes, embedding_dim, adaptive_embedding)
        self.input_scale = 1.0 / math.sqrt(self.num_fields) if input_norm else 1.0
        row_l2 = sparse_l2 * self.input_scale ** 2  # L2 of the scaled rows
        self.linear = LinearTerm(
            self.total_vocabulary_size, sparse_l2=row_l2, scale=self.input_scale,
            initializer=keras.initializers.RandomUniform(0.0, 1.0) if init_sparse else "zeros",
            name="linear")
        self.embedding = SparseEmbedding(
            self.total_vocabulary_size, embedding_dim, sparse_l2=row_l2,
            initializer=keras.initializers.RandomUniform(0.0, 1.0 / math.sqrt(embedding_dim))
            if init_sparse else "glorot_uniform", name="embedding")
        self.kernel_product = KernelProduct(self.num_fields, embedding_dim, kernel_type,
                                            kernel_l2=kernel_l2, name="kernel_product")
        # called through `summed`, not __call__: mark it built here (its weights already exist)
        self.kernel_product.build((None, self.num_fields, embedding_dim))

    def call(self, field_ids, training=None):
        embeddings = self.embedding(field_ids)  # [B, F, k]
        if self.width_mask is not None:
            embeddings = embeddings * self.width_mask
        if self.input_scale != 1.0:
            embeddings = embeddings * self.input_scale
        return self.linear(field_ids) + self.kernel_product.summed(embeddings)
