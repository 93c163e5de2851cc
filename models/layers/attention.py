"""Attention-based pooling of pairwise interactions (AFM, Xiao et al. 2017, §3.1)."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.pairs import gather_pairs


@keras.saving.register_keras_serializable(package="criteo_pnn")
class AttentionalPooling(keras.layers.Layer):
    """sum_{i<j} a_ij (v_i * v_j) with a = softmax over pairs of h^T relu(W (v_i * v_j) + b) / t.

    The temperature t (Qu et al. 2018 use t = 0.01 on Criteo) divides the attention logits before
    the softmax; t = 1 is Xiao et al.'s original.

    Args:
        embedding_dim: k.
        attention_units: width h of the attention network (Criteo: 32).
        temperature: t > 0.
    Input: [B, F, k]. Output: [B, k].
    """

    def __init__(self, embedding_dim: int, attention_units: int = 32, temperature: float = 0.01,
                 **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.attention_units = int(attention_units)
        self.temperature = float(temperature)
        if self.temperature <= 0:
            raise ValueError(f"AttentionalPooling: temperature must be > 0, got {temperature}")
        self.attention_kernel = self.add_weight(
            shape=(self.embedding_dim, self.attention_units), initializer="glorot_uniform",
            name="attention_kernel")
        self.attention_bias = self.add_weight(shape=(self.attention_units,),
                                              initializer="zeros", name="attention_bias")
        self.projection = self.add_weight(shape=(self.attention_units, 1),
                                          initializer="glorot_uniform", name="projection")

    def call(self, embeddings):
        left, right = gather_pairs(embeddings)
        interactions = left * right  # [P, B, k]
        hidden = ops.relu(ops.matmul(interactions, self.attention_kernel) + self.attention_bias)
        scores = ops.matmul(hidden, self.projection) / self.temperature  # [P, B, 1]
        attention = ops.softmax(scores, axis=0)  # over pairs
        return ops.sum(attention * interactions, axis=0)  # [B, k]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "attention_units": self.attention_units, "temperature": self.temperature}
