"""KPNN: kernel-product-based neural network (Qu et al. 2018, §3.3)."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.adaptive_embedding import field_width_mask
from models.layers.embedding import SparseEmbedding
from models.layers.kernel_product import KernelProduct
from models.layers.mlp import MLP
from models.registry import FieldModel, register


@register("kpnn")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class KPNN(FieldModel):
    """logit = MLP([flattened embeddings, v_i^T W_ij v_j for all i < j]).

    IPNN with kernel products (models/layers/kernel_product.py); the kernels start as identities,
    so an untrained KPNN computes IPNN's product features. This is DeepCTR's "outer product" PNN
    with the authors' identity/ones initialisation.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20), the cap K when `adaptive_embedding` is set.
        kernel_type: "mat", "vec" or "num".
        kernel_l2: L2 on the kernel (a regular Keras regulariser).
        adaptive_embedding: {"c": float, "max_dim": int} for per-field sizes, zero-padded to K
            (models/layers/adaptive_embedding.py); None for k everywhere.
        hidden_units, layer_norm, dropout_rate: the MLP (paper, Criteo: 700 x 5 with layer norm).
        sparse_l2: L2 on looked-up embedding rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 kernel_type: str = "vec", kernel_l2: float = 0.0,
                 adaptive_embedding: dict | None = None, hidden_units=(700,) * 5,
                 layer_norm: bool = True, dropout_rate: float = 0.0, sparse_l2: float = 0.0,
                 **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.width_mask = field_width_mask(vocabulary_sizes, embedding_dim, adaptive_embedding)
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.kernel_product = KernelProduct(self.num_fields, embedding_dim, kernel_type,
                                            kernel_l2=kernel_l2, name="kernel_product")
        self.mlp = MLP(hidden_units, layer_norm=layer_norm, dropout_rate=dropout_rate, name="mlp")

    def call(self, field_ids, training=None):
        embeddings = self.embedding(field_ids)  # [B, F, k]
        if self.width_mask is not None:
            embeddings = embeddings * self.width_mask
        flat = ops.reshape(embeddings, (-1, embeddings.shape[1] * embeddings.shape[2]))
        products = self.kernel_product(embeddings)  # [B, P]
        return self.mlp(ops.concatenate([flat, products], axis=1), training=training)
