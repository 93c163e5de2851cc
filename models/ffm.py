"""FFM: field-aware factorization machine (Juan et al. 2016), the 2014 Criteo winners' model."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding
from models.layers.field_aware import field_aware_interaction
from models.layers.linear import LinearTerm
from models.registry import FieldModel, register


@register("ffm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class FFM(FieldModel):
    """logit = [b + sum_f w[x_f]] + sum_{i<j} <V[x_i][j], V[x_j][i]>.

    Each id owns one k-vector per partner field: a [n, F * k] table (one slot per field, the
    own-field slot unused; the authors keep F - 1 slots, 1/F fewer parameters but an index shift).
    The bias and linear term follow the authors' code; libffm (and the winners) have neither:
    `use_linear=False` gives libffm's model.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k per field-aware vector (paper, Criteo: 4, as the winners).
        use_linear: include b + sum w.
        sparse_l2: L2 on looked-up rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 4,
                 use_linear: bool = True, sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.embedding_dim = embedding_dim
        self.linear = LinearTerm(self.total_vocabulary_size, sparse_l2=sparse_l2,
                                 name="linear") if use_linear else None
        self.embedding = SparseEmbedding(self.total_vocabulary_size,
                                         self.num_fields * embedding_dim, sparse_l2=sparse_l2,
                                         name="field_aware_embedding")

    def call(self, field_ids, training=None):
        vectors = ops.reshape(self.embedding(field_ids),  # one gather: [B, F, F, k]
                              (-1, self.num_fields, self.num_fields, self.embedding_dim))
        logit = field_aware_interaction(vectors)
        return logit if self.linear is None else logit + self.linear(field_ids)
