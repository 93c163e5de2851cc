"""`SparseEmbedding`: every id-indexed table of every model (linear weights, embeddings, FFM vectors).

Why one class: the training runner updates only the rows a batch touches (paper §4.4.1; stock Keras
optimizers rewrite the whole 1M-row table every step). It does so by gathering the batch's unique
rows itself, handing them to the layer through its `batch_rows` hook, and differentiating with
respect to those rows only. While `batch_rows` is set (by `models/engine/common.compact_rows`) a
`SparseEmbedding` looks up `batch_rows[compact_ids]` instead of `table[global_ids]`; otherwise
(inference, `model.fit`, saved models) it is a plain embedding.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="criteo_pnn")
class SparseEmbedding(keras.layers.Layer):
    """Lookup table [vocabulary_size, output_dim] indexed by global feature ids.

    Args:
        vocabulary_size: rows (the field spec's total_vocabulary_size).
        output_dim: width of a row (1 for linear weights, k for embeddings).
        initializer: Keras initializer name or instance for the table.
        sparse_l2: L2 strength applied by the runner to looked-up rows only.
    Input: int ids [...]. Output: [..., output_dim].

    `batch_rows`: None, or the rows `table[unique_ids]` [U, output_dim] of the training batch,
    set by the training engine around its forward pass; the ids are then positions into
    `unique_ids` (compact ids), not global ids.
    """

    def __init__(self, vocabulary_size: int, output_dim: int, initializer="glorot_uniform",
                 sparse_l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.output_dim = int(output_dim)
        self.initializer = keras.initializers.get(initializer)
        self.sparse_l2 = float(sparse_l2)
        self.embeddings = self.add_weight(shape=(self.vocabulary_size, self.output_dim),
                                          initializer=self.initializer, name="embeddings")
        self.batch_rows = None

    def call(self, ids):
        table = self.embeddings if self.batch_rows is None else self.batch_rows
        return ops.take(table, ops.cast(ids, "int32"), axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "output_dim": self.output_dim,
                "initializer": keras.initializers.serialize(self.initializer),
                "sparse_l2": self.sparse_l2}


def sparse_embeddings(model: keras.Model) -> list[SparseEmbedding]:
    """All SparseEmbedding layers of `model`, in a stable order."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, SparseEmbedding)]
