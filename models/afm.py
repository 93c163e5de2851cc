"""AFM: attentional factorization machine (Xiao et al. 2017); the authors' code has none."""

from __future__ import annotations

import keras

from models.layers.attention import AttentionalPooling
from models.layers.embedding import SparseEmbedding
from models.layers.linear import LinearTerm
from models.registry import FieldModel, register


@register("afm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class AFM(FieldModel):
    """logit = b + sum_f w[x_f] + p^T sum_{i<j} a_ij (v_i * v_j) (Xiao et al. 2017, eq. 5).

    The attention a_ij is a softmax over pairs of an h-unit network's scores divided by a
    temperature t (models/layers/attention.py). Dropout, as Xiao et al., acts on the pooled
    interaction vector.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        attention_units: h (paper, Criteo: 32).
        temperature: t (paper, Criteo: 0.01).
        dropout_rate: dropout on the pooled vector.
        sparse_l2: L2 on looked-up rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 attention_units: int = 32, temperature: float = 0.01, dropout_rate: float = 0.0,
                 sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.linear = LinearTerm(self.total_vocabulary_size, sparse_l2=sparse_l2, name="linear")
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.pooling = AttentionalPooling(embedding_dim, attention_units, temperature,
                                          name="attention")
        self.dropout = keras.layers.Dropout(dropout_rate, name="dropout")
        self.projection = keras.layers.Dense(1, use_bias=False, name="projection")

    def call(self, field_ids, training=None):
        pooled = self.pooling(self.embedding(field_ids))  # [B, k]
        pooled = self.dropout(pooled, training=training)
        return self.linear(field_ids) + self.projection(pooled)
