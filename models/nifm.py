"""NIFM: network-in-FM (Qu et al. 2018, §3.4; the authors' class `NFM`, not He & Chua's NFM)."""

from __future__ import annotations

import keras
from keras import ops

from models.layers.adaptive_embedding import field_width_mask
from models.layers.embedding import SparseEmbedding
from models.layers.linear import LinearTerm
from models.layers.micro_network import PairwiseMicroNetwork
from models.registry import FieldModel, register


@register("nifm")
@keras.saving.register_keras_serializable(package="criteo_pnn")
class NIFM(FieldModel):
    """logit = b + sum_f w[x_f] + sum_{i<j} sum_u subnet_ij([v_i, v_j])_u.

    FM with each inner product replaced by a per-pair sub-network on the two embeddings
    (models/layers/micro_network.py). The sub-net output is not layer-normalised: normalised
    outputs would sum to a constant over the pairs.

    The logit sums P = F(F-1)/2 sub-net outputs (741 at F = 39), so their scale at the start
    decides whether training works. The output kernels start at zero: an untrained NIFM is LR,
    as an untrained KFM is FM. (Glorot output kernels gave a logit std of 19 at F = 39 and a
    demo validation logloss of 1-8 against 0.55 for a constant.) The authors' fused layer norm
    in the sub-net is off by default: it rescales the tiny hidden activations of small initial
    embeddings to unit variance, and Adam then moves each of the P x units output weights by
    ~lr per step in the same direction (ReLU outputs are >= 0), up to lr * P * units * 0.4,
    about 12 logits per step at the paper setting; the demo overshot to 0.64 after one epoch.

    Args:
        vocabulary_sizes: ids per field.
        embedding_dim: k (paper, Criteo: 20), the cap K when `adaptive_embedding` is set.
        subnet_units: sub-net widths, the last being its output (paper, Criteo: [40, 1]).
        layer_norm: fused layer norm after the sub-net's hidden layers (the authors' PIN sub-net
            default; off here, see above).
        adaptive_embedding: {"c": float, "max_dim": int} for per-field sizes, zero-padded to K
            (models/layers/adaptive_embedding.py; paper Table 7); None for k everywhere.
        sparse_l2: L2 on looked-up rows (applied by the training runner).
    Input: field_ids int32 [B, F] global ids. Output: logits [B, 1].
    """

    def __init__(self, vocabulary_sizes: list[int], *, embedding_dim: int = 20,
                 subnet_units=(40, 1), layer_norm: bool = False,
                 adaptive_embedding: dict | None = None, sparse_l2: float = 0.0, **kwargs):
        super().__init__(vocabulary_sizes, **kwargs)
        self.width_mask = field_width_mask(vocabulary_sizes, embedding_dim, adaptive_embedding)
        self.linear = LinearTerm(self.total_vocabulary_size, sparse_l2=sparse_l2, name="linear")
        self.embedding = SparseEmbedding(self.total_vocabulary_size, embedding_dim,
                                         sparse_l2=sparse_l2, name="embedding")
        self.subnet = PairwiseMicroNetwork(self.num_fields, embedding_dim, subnet_units,
                                           use_product=False, layer_norm=layer_norm,
                                           output_layer_norm=False, zero_output=True,
                                           name="subnet")

    def call(self, field_ids, training=None):
        embeddings = self.embedding(field_ids)  # [B, F, k]
        if self.width_mask is not None:
            embeddings = embeddings * self.width_mask
        pair_outputs = self.subnet(embeddings)  # [B, P, U]
        return self.linear(field_ids) + ops.sum(pair_outputs, axis=(1, 2))[:, None]
