"""DeepFM (Guo et al. 2017): FM and an MLP sharing one embedding table."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding
from models.layers.inner_product import fm_interaction
from models.layers.linear import LinearTerm
from models.layers.mlp import MLP
from models.registry import FieldModel, register


@register("deepfm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class DeepFM(FieldModel):
    """logit = sum_f w[x_f] + sum_{i<j} <v_i, v_j> + MLP(flattened embeddings).

    No separate bias: the MLP's output layer has one (the authors' code).

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        hidden_units, layer_norm, dropout_rate: the MLP (paper, Criteo: 700 x 5 with layer norm).
        sparse_l2: L2 on looked-up rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 hidden_units=(700,) * 5, layer_norm: bool = True, dropout_rate: float = 0.0,
                 sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.linear = LinearTerm(self.total_vocabulary_size, use_bias=False, sparse_l2=sparse_l2,
                                 name="linear")
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.mlp = MLP(hidden_units, layer_norm=layer_norm, dropout_rate=dropout_rate, name="mlp")

    def call(self, field_ids, training=None):
        embeddings = self.embedding(field_ids)  # [B, F, k]
        flat = ops.reshape(embeddings, (-1, embeddings.shape[1] * embeddings.shape[2]))
        deep = self.mlp(flat, training=training)
        return self.linear(field_ids) + fm_interaction(embeddings) + deep
