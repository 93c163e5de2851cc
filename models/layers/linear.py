"""First-order term b + sum_f w[x_f], shared by LR, FM, FFM, KFM, NIFM, DeepFM and AFM."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding


@keras.saving.register_keras_serializable(package="criteo_pnn")
class LinearTerm(keras.layers.Layer):
    """Sum of per-id weights (a [n, 1] SparseEmbedding, zero-initialised as in libffm) plus a bias.

    Args:
        vocabulary_size: rows of the weight table (all fields together).
        use_bias: add a scalar bias (DeepFM has none: its MLP output layer carries one).
        sparse_l2: L2 on looked-up weights, applied by the training runner.
        initializer: of the weight table (the authors' Kaggle KFM: U(0, 1)).
        scale: looked-up weights are multiplied by it (the authors' input_norm: 1/sqrt(F)).
    Input: field_ids int [B, F]. Output: [B, 1].
    """

    def __init__(self, vocabulary_size: int, use_bias: bool = True, sparse_l2: float = 0.0,
                 initializer="zeros", scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.use_bias = bool(use_bias)
        self.sparse_l2 = float(sparse_l2)
        self.scale = float(scale)
        self.weights_table = SparseEmbedding(self.vocabulary_size, 1, initializer=initializer,
                                             sparse_l2=self.sparse_l2, name="weights")
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias") \
            if self.use_bias else None

    def call(self, field_ids):
        logit = ops.sum(self.weights_table(field_ids), axis=1)  # [B, 1]
        if self.scale != 1.0:
            logit = logit * self.scale
        return logit + self.bias if self.use_bias else logit

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "use_bias": self.use_bias, "sparse_l2": self.sparse_l2,
                "initializer": keras.initializers.serialize(
                    self.weights_table.initializer), "scale": self.scale}
