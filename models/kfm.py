"""KFM: kernel factorization machine (Qu et al. 2018, §3.3), FM with a kernel per field pair."""

from __future__ import annotations

import keras
from keras import ops

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

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20), the cap K when `adaptive_embedding` is set.
        kernel_type: "mat", "vec" or "num".
        kernel_l2: L2 on the kernel (a regular Keras regulariser).
        adaptive_embedding: {"c": float, "max_dim": int} for per-field sizes
            k_i = min(max(1, round(c ln N_i)), max_dim), zero-padded to K (Table 7;
            models/layers/adaptive_embedding.py); None for k everywhere.
        sparse_l2: L2 on looked-up rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 kernel_type: str = "vec", kernel_l2: float = 0.0,
                 adaptive_embedding: dict | None = None, sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.width_mask = field_width_mask(vocabulary_sizes, embedding_dim, adaptive_embedding)
        self.linear = LinearTerm(self.total_vocabulary_size, sparse_l2=sparse_l2, name="linear")
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.kernel_product = KernelProduct(self.num_fields, embedding_dim, kernel_type,
                                            kernel_l2=kernel_l2, name="kernel_product")

    def call(self, field_ids, training=None):
        embeddings = self.embedding(field_ids)  # [B, F, k]
        if self.width_mask is not None:
            embeddings = embeddings * self.width_mask
        products = self.kernel_product(embeddings)  # [B, P]
        return self.linear(field_ids) + ops.sum(products, axis=1, keepdims=True)
