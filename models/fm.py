"""FM: factorization machine (Rendle 2010), a shallow baseline of Qu et al. 2018."""

from __future__ import annotations

import keras

from models.layers.embedding import SparseEmbedding
from models.layers.inner_product import fm_interaction
from models.layers.linear import LinearTerm
from models.registry import FieldModel, register


@register("fm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class FM(FieldModel):
    """logit = b + sum_f w[x_f] + sum_{i<j} <v_i, v_j>, the pair sum by the square-of-sum identity.

    `linear` and `embedding` are the attribute names `FNN.load_fm` copies from.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        sparse_l2: L2 on looked-up rows of both tables (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.linear = LinearTerm(self.total_vocabulary_size, sparse_l2=sparse_l2, name="linear")
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")

    def call(self, field_ids, training=None):
        return self.linear(field_ids) + fm_interaction(self.embedding(field_ids))
