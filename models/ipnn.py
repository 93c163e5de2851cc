"""IPNN: inner-product-based neural network (Qu et al. 2016, 2018)."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding
from models.layers.inner_product import pairwise_inner_products
from models.layers.mlp import MLP
from models.registry import FieldModel, register


@register("ipnn")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class IPNN(FieldModel):
    """logit = MLP([flattened embeddings, <v_i, v_j> for all i < j]).

    A Dense layer over the concatenation equals the paper's l1 = W_z z + W_p p + b, so the
    product layer is not a separate weight. No first-order term, as in the paper.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        hidden_units, layer_norm, dropout_rate: the MLP (paper, Criteo: 700 x 5 with layer norm).
        sparse_l2: L2 on looked-up embedding rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 hidden_units=(700,) * 5, layer_norm: bool = True, dropout_rate: float = 0.0,
                 sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.mlp = MLP(hidden_units, layer_norm=layer_norm, dropout_rate=dropout_rate, name="mlp")

    def call(self, field_ids, training=None):
        embeddings = self.embedding(field_ids)  # [B, F, k]
        flat = ops.reshape(embeddings, (-1, embeddings.shape[1] * embeddings.shape[2]))
        products = pairwise_inner_products(embeddings)  # [B, P]
        return self.mlp(ops.concatenate([flat, products], axis=1), training=training)
