"""CCPM: convolutional click prediction model (Liu et al. 2015), as in Qu et al. 2018."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding
from models.layers.mlp import MLP
from models.registry import FieldModel, register


@register("ccpm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class CCPM(FieldModel):
    """logit = MLP(flatten(conv stack over the field axis of the [F, k] embedding matrix)).

    As the authors' TOIS code: 1-D convolutions along the fields (embedding dims as channels),
    VALID padding, no bias, then flatten and an MLP; their distributed version drops Liu et al.'s
    flexible p-max pooling, and so does this one. Table 5's "7 x 256" is read as one layer of
    256 filters of width 7 fields; tanh follows each convolution, as in Liu et al.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        conv_layers: [kernel_width, filters] per convolution (paper, Criteo: [[7, 256]]).
        hidden_units, layer_norm, dropout_rate: the MLP (paper, Criteo: 256 x 3).
        sparse_l2: L2 on looked-up embedding rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 conv_layers=((7, 256),), hidden_units=(256,) * 3, layer_norm: bool = True,
                 dropout_rate: float = 0.0, sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        remaining_fields = self.num_fields - sum(int(width) - 1 for width, _ in conv_layers)
        if remaining_fields < 1:
            raise ValueError(f"CCPM: conv_layers {conv_layers} are wider than the "
                             f"{self.num_fields} fields")
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.convolutions = [
            keras.layers.Conv1D(int(filters), int(width), padding="valid", use_bias=False,
                                activation="tanh", name=f"conv_{index}")
            for index, (width, filters) in enumerate(conv_layers)]
        self.mlp = MLP(hidden_units, layer_norm=layer_norm, dropout_rate=dropout_rate, name="mlp")

    def call(self, field_ids, training=None):
        hidden = self.embedding(field_ids)  # [B, F, k]
        for convolution in self.convolutions:
            hidden = convolution(hidden)  # [B, F - width + 1, filters]
        flat = ops.reshape(hidden, (-1, hidden.shape[1] * hidden.shape[2]))
        return self.mlp(flat, training=training)
