"""FNN: factorization-machine supported neural network (Zhang et al. 2016)."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding
from models.layers.mlp import MLP
from models.registry import FieldModel, register


@register("fnn")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class FNN(FieldModel):
    """logit = MLP(flattened embeddings), embeddings optionally initialised from a trained FM.

    The authors' FNN feeds the k-vectors only; `linear_input=True` feeds z_i = [w_i, v_i] per
    field as Zhang et al. do. `load_fm` is the paper's pre-training step.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        linear_input: prepend a per-id scalar w_i to each field's vector.
        hidden_units, layer_norm, dropout_rate: the MLP (paper, Criteo: 700 x 5 with layer norm).
        sparse_l2: L2 on looked-up rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 linear_input: bool = False, hidden_units=(700,) * 5, layer_norm: bool = True,
                 dropout_rate: float = 0.0, sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.linear_weights = SparseEmbedding(self.total_vocabulary_size, 1, initializer="zeros",
                                              sparse_l2=sparse_l2,
                                              name="linear_weights") if linear_input else None
        self.mlp = MLP(hidden_units, layer_norm=layer_norm, dropout_rate=dropout_rate, name="mlp")

    def call(self, field_ids, training=None):
        fields = self.embedding(field_ids)  # [B, F, k]
        if self.linear_weights is not None:
            fields = ops.concatenate([self.linear_weights(field_ids), fields], axis=2)
        return self.mlp(ops.reshape(fields, (-1, fields.shape[1] * fields.shape[2])),
                        training=training)

    def load_fm(self, fm: keras.Model) -> None:
        """Copies a trained FM's embedding table (and linear weights if `linear_input`).

        Args:
            fm: a model with `embedding` (SparseEmbedding [n, k]) and `linear.weights_table`
                ([n, 1]) attributes, i.e. models.fm.FM, built for the same field spec.
        """
        pairs = [(self.embedding, fm.embedding)]
        if self.linear_weights is not None:
            pairs.append((self.linear_weights, fm.linear.weights_table))
        for own, source in pairs:
            if tuple(own.embeddings.shape) != tuple(source.embeddings.shape):
                raise ValueError(f"FNN.load_fm: {source.name} has shape "
                                 f"{tuple(source.embeddings.shape)}, this FNN's {own.name} "
                                 f"{tuple(own.embeddings.shape)}")
            own.embeddings.assign(source.embeddings)
