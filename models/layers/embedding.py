"""`SparseEmbedding`: every id-indexed table of every model (linear weights, embeddings, FFM vectors).

Why one class: the training runner updates only the rows a batch touches (paper §4.4.1; stock Keras
optimizers rewrite the whole 1M-row table every step). It does so by gathering the batch's unique
rows itself, handing them to the model through `compact_rows`, and differentiating with respect to
those rows only. Inside that context a `SparseEmbedding` looks up `rows[compact_ids]` instead of
`table[global_ids]`; outside it (inference, `model.fit`, saved models) it is a plain embedding.
"""

from __future__ import annotations

import contextlib
import threading

import keras
from keras import ops

_OVERRIDES = threading.local()


@contextlib.contextmanager
def compact_rows(rows_by_layer: dict):
    """Within this context each listed layer reads its rows from `rows_by_layer[layer]`.

    Args:
        rows_by_layer: SparseEmbedding -> tensor [num_unique, output_dim], the rows
            `table[unique_ids]`; the ids fed to the model must then be positions into
            `unique_ids` (compact ids), not global ids.
    """
    previous = getattr(_OVERRIDES, "mapping", None)
    _OVERRIDES.mapping = {id(layer): rows for layer, rows in rows_by_layer.items()}
    try:
        yield
    finally:
        _OVERRIDES.mapping = previous


@keras.saving.register_keras_serializable(package="criteo_pnn")
class SparseEmbedding(keras.layers.Layer):
    """Lookup table [vocabulary_size, output_dim] indexed by global feature ids.

    Args:
        vocabulary_size: rows (the field spec's total_vocabulary_size).
        output_dim: width of a row (1 for linear weights, k for embeddings).
        initializer: Keras initializer name or instance for the table.
        sparse_l2: L2 strength applied by the runner to looked-up rows only.
    Input: int ids [...]. Output: [..., output_dim].
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

    def call(self, ids):
        mapping = getattr(_OVERRIDES, "mapping", None)
        rows = mapping.get(id(self)) if mapping else None
        table = self.embeddings if rows is None else rows
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
