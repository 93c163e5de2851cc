"""PIN: product-network in network (Qu et al. 2018, §3.4)."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.embedding import SparseEmbedding
from models.layers.micro_network import PairwiseMicroNetwork
from models.layers.mlp import MLP
from models.registry import FieldModel, register


@register("pin")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class PIN(FieldModel):
    """logit = MLP(flatten over pairs of subnet_ij([v_i, v_j, v_i * v_j])).

    Each pair's sub-network (models/layers/micro_network.py) is Dense -> fused LN -> ReLU ->
    Dense -> fused LN, the authors' layout. Their `wide=True` default also builds a linear + FM
    logit that is never added to the output (dead code whose only effect is an L2 penalty on
    the unused linear weights); it is left out, which changes nothing the model computes.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20).
        subnet_units: sub-net widths, the last being its output (paper, Criteo: [40, 5]).
        use_product: feed v_i * v_j to the sub-nets (the authors' `prod` flag).
        hidden_units, dropout_rate: the main MLP (paper, Criteo: 700 x 5).
        layer_norm: layer norm in the main MLP and fused layer norm in the sub-nets.
        sparse_l2: L2 on looked-up embedding rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 subnet_units=(40, 5), use_product: bool = True, hidden_units=(700,) * 5,
                 layer_norm: bool = True, dropout_rate: float = 0.0, sparse_l2: float = 0.0,
                 **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.subnet = PairwiseMicroNetwork(self.num_fields, embedding_dim, subnet_units,
                                           use_product=use_product, layer_norm=layer_norm,
                                           output_layer_norm=layer_norm, name="subnet")
        self.mlp = MLP(hidden_units, layer_norm=layer_norm, dropout_rate=dropout_rate, name="mlp")

    def call(self, field_ids, training=None):
        pair_outputs = self.subnet(self.embedding(field_ids))  # [B, P, U]
        flat = ops.reshape(pair_outputs, (-1, pair_outputs.shape[1] * pair_outputs.shape[2]))
        return self.mlp(flat, training=training)
