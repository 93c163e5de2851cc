"""Per-pair sub-networks of PIN and NIFM (Qu et al. 2018, §3.4), all pairs in one batched matmul.

Every pair (i, j) has its own weights (the authors' unshared sub-nets): a layer's kernel is
[P, in, out] and its bias [P, 1, out], applied to pair-major activations [P, B, in] by one
batched matmul. The first layer sees [v_i, v_j] (NIFM) or [v_i, v_j, v_i * v_j] (PIN); its kernel
is applied block by block so that the concatenated [P, B, 3k] input is never built.
"""

from __future__ import annotations

import itertools
import math

import keras
from keras import ops

from models.layers.mlp import LAYER_NORM_EPSILON
from models.layers.pairs import gather_pairs, num_pairs


@keras.saving.register_keras_serializable(package="criteo_pnn")
class FusedLayerNormalization(keras.layers.Layer):
    """The authors' sub-net layer norm: per example, over all pairs and units together.

    Statistics over axes (pair, unit) of a [P, B, U] tensor, scale and shift shared by the pairs
    ([U]). The authors divide by sqrt(var) without an epsilon; we add LAYER_NORM_EPSILON.

    Args:
        units: U.
    Input and output: [P, B, U].
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")
        self.shift = self.add_weight(shape=(self.units,), initializer="zeros", name="shift")

    def call(self, inputs):
        mean = ops.mean(inputs, axis=(0, 2), keepdims=True)  # [1, B, 1]
        variance = ops.var(inputs, axis=(0, 2), keepdims=True)
        return (inputs - mean) * ops.rsqrt(variance + LAYER_NORM_EPSILON) * self.scale + self.shift

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="criteo_pnn")
class PairwiseMicroNetwork(keras.layers.Layer):
    """Sub-net per field pair: (Dense -> [fused LN] -> ReLU) per hidden layer, then Dense [-> LN].

    Weights are Glorot-uniform per pair, limit sqrt(6 / (in + out)) (the authors' default, not
    Glorot over the 3-D shape, which would shrink them by sqrt(P)); with `zero_output` the output
    layer's kernel starts at zero instead, so every pair outputs exactly its (zero) bias.

    Args:
        num_fields: F.
        embedding_dim: k.
        units: widths of the sub-net layers, the last one being the output (PIN: [40, 5]).
        use_product: feed v_i * v_j besides v_i and v_j (PIN: True, NIFM: False).
        layer_norm: fused layer norm after each hidden layer.
        output_layer_norm: fused layer norm after the output layer too (the authors' PIN does;
            NIFM must not, as the sum over pairs of normalised 1-unit outputs is a constant).
        zero_output: zero-initialised output kernel (NIFM, whose logit sums the P outputs:
            Glorot outputs of unit scale would start it at logit std ~sqrt(P), 19 at F = 39).
    Input: [B, F, k]. Output: [B, P, units[-1]].
    """

    def __init__(self, num_fields: int, embedding_dim: int, units=(40, 5),
                 use_product: bool = True, layer_norm: bool = True,
                 output_layer_norm: bool = True, zero_output: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_fields = int(num_fields)
        self.embedding_dim = int(embedding_dim)
        self.units = [int(width) for width in units]
        self.use_product = bool(use_product)
        self.layer_norm = bool(layer_norm)
        self.output_layer_norm = bool(output_layer_norm)
        self.zero_output = bool(zero_output)
        if not self.units or min(self.units) < 1:
            raise ValueError(f"PairwiseMicroNetwork: units must be positive widths, got {units}")
        pairs = num_pairs(self.num_fields)
        widths = [(3 if self.use_product else 2) * self.embedding_dim] + self.units
        self.kernels, self.biases, self.norms = [], [], []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            is_output = index == len(self.units) - 1
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            initializer = "zeros" if is_output and self.zero_output else \
                keras.initializers.RandomUniform(-limit, limit)
            self.kernels.append(self.add_weight(shape=(pairs, fan_in, fan_out),
                                                initializer=initializer, name=f"kernel_{index}"))
            self.biases.append(self.add_weight(shape=(pairs, 1, fan_out), initializer="zeros",
                                               name=f"bias_{index}"))
            if (self.output_layer_norm if is_output else self.layer_norm):
                self.norms.append(FusedLayerNormalization(fan_out, name=f"layer_norm_{index}"))
            else:
                self.norms.append(None)

    def build(self, input_shape):
        if tuple(input_shape[1:]) != (self.num_fields, self.embedding_dim):
            raise ValueError(f"PairwiseMicroNetwork: expected input [B, {self.num_fields}, "
                             f"{self.embedding_dim}], got {tuple(input_shape)}")

    def _first_layer(self, left, right):
        """[v_i, v_j(, v_i * v_j)] @ W without building the concatenation: [P, B, units[0]]."""
        dim, kernel = self.embedding_dim, self.kernels[0]
        hidden = ops.matmul(left, kernel[:, :dim]) + ops.matmul(right, kernel[:, dim:2 * dim])
        if self.use_product:
            hidden = hidden + ops.matmul(left * right, kernel[:, 2 * dim:])
        return hidden + self.biases[0]

    def call(self, embeddings):
        left, right = gather_pairs(embeddings)  # [P, B, k] each
        hidden = self._first_layer(left, right)
        for index in range(len(self.units)):
            if index > 0:
                hidden = ops.matmul(hidden, self.kernels[index]) + self.biases[index]
            if self.norms[index] is not None:
                hidden = self.norms[index](hidden)
            if index < len(self.units) - 1:
                hidden = ops.relu(hidden)
        return ops.transpose(hidden, (1, 0, 2))  # [B, P, units[-1]]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], num_pairs(self.num_fields), self.units[-1])

    def get_config(self):
        return {**super().get_config(), "num_fields": self.num_fields,
                "embedding_dim": self.embedding_dim, "units": self.units,
                "use_product": self.use_product, "layer_norm": self.layer_norm,
                "output_layer_norm": self.output_layer_norm, "zero_output": self.zero_output}
