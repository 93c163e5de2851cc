"""The deep part of FNN, CCPM, DeepFM, IPNN, KPNN and PIN: Dense -> LayerNorm -> ReLU -> Dropout."""

from __future__ import annotations

import keras

# The authors' layer norm divides by sqrt(var) with no epsilon (NaN when var = 0). We add one,
# but a small one: at init the embeddings of a 1M-row Glorot table have std ~1e-3, so the first
# pre-activations have variance ~1e-6, and Keras' default epsilon (1e-3) would shrink them ~30x
# instead of normalising them, which is the reason the authors use layer norm at all.
LAYER_NORM_EPSILON = 1e-8


@keras.saving.register_keras_serializable(package="criteo_pnn")
class MLP(keras.layers.Layer):
    """Hidden layers Dense(units) -> [LayerNorm] -> ReLU -> [Dropout], then Dense(output_units).

    The authors' layer spec ("full, ln, act, drop"): Glorot-uniform weights, zero biases,
    layer norm over the units of each example before the activation.

    Args:
        hidden_units: widths of the hidden layers (paper, Criteo: 700 x 5); may be empty.
        layer_norm: layer norm after each hidden Dense.
        dropout_rate: dropout after each hidden activation (0 disables it).
        output_units: width of the last, linear layer (1: a logit).
    Input: [B, D]. Output: [B, output_units].
    """

    def __init__(self, hidden_units=(), layer_norm: bool = True, dropout_rate: float = 0.0,
                 output_units: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = [int(units) for units in hidden_units]
        self.layer_norm = bool(layer_norm)
        self.dropout_rate = float(dropout_rate)
        self.output_units = int(output_units)
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"MLP: dropout_rate must be in [0, 1), got {self.dropout_rate}")
        self.hidden_layers = []
        for index, units in enumerate(self.hidden_units):
            self.hidden_layers.append(keras.layers.Dense(units, name=f"dense_{index}"))
            if self.layer_norm:
                self.hidden_layers.append(keras.layers.LayerNormalization(
                    epsilon=LAYER_NORM_EPSILON, name=f"layer_norm_{index}"))
            self.hidden_layers.append(keras.layers.ReLU(name=f"relu_{index}"))
            if self.dropout_rate > 0:
                self.hidden_layers.append(keras.layers.Dropout(self.dropout_rate,
                                                               name=f"dropout_{index}"))
        self.output_layer = keras.layers.Dense(self.output_units, name="output")

    def call(self, inputs):
        hidden = inputs
        for layer in self.hidden_layers:  # Keras passes `training` on to Dropout by itself
            hidden = layer(hidden)
        return self.output_layer(hidden)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_units)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "layer_norm": self.layer_norm, "dropout_rate": self.dropout_rate,
                "output_units": self.output_units}
