"""LR: logistic regression on one-hot fields, the paper's shallow baseline."""

from __future__ import annotations

import keras

from models.layers.linear import LinearTerm
from models.registry import FieldModel, register


@register("lr")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class LR(FieldModel):
    """Logistic regression: logit = b + sum_f w[x_f] (Qu et al. 2018, §5.1.2 baselines).

    Args:
        vocabulary_sizes: ids per field.
        sparse_l2: L2 on looked-up weights (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.linear = LinearTerm(self.total_vocabulary_size, sparse_l2=sparse_l2, name="linear")

    def call(self, field_ids, training=None):
        return self.linear(field_ids)
