"""Shared model maths (models/layers/) against slow NumPy references on tiny tensors."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from models.layers.adaptive_embedding import adaptive_dims, field_width_mask
from models.layers.attention import AttentionalPooling
from models.layers.field_aware import field_aware_interaction
from models.layers.inner_product import fm_interaction, pairwise_inner_products
from models.layers.kernel_product import KernelProduct
from models.layers.micro_network import FusedLayerNormalization, PairwiseMicroNetwork
from models.layers.mlp import MLP
from models.layers.pairs import num_pairs, pair_indices, upper_triangle

BATCH, FIELDS, DIM = 3, 5, 4
PAIRS = list(itertools.combinations(range(FIELDS), 2))


@pytest.fixture
def embeddings() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(BATCH, FIELDS, DIM)).astype("float32")


def close(actual, expected, tolerance=1e-5):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(actual), expected, rtol=tolerance,
                               atol=tolerance)


def test_pair_indices_are_row_major_upper_triangle():
    rows, cols = pair_indices(FIELDS)
    assert list(zip(rows, cols)) == PAIRS
    assert num_pairs(39) == 741 == len(pair_indices(39)[0])
    with pytest.raises(ValueError, match="at least 2 fields"):
        pair_indices(1)


def test_upper_triangle(embeddings):
    matrix = np.random.default_rng(1).normal(size=(BATCH, FIELDS, FIELDS)).astype("float32")
    close(upper_triangle(matrix), np.stack([matrix[:, i, j] for i, j in PAIRS], axis=1))


def test_inner_products_and_fm_term_equal_brute_force(embeddings):
    brute = np.stack([(embeddings[:, i] * embeddings[:, j]).sum(1) for i, j in PAIRS], axis=1)
    close(pairwise_inner_products(embeddings), brute)
    close(fm_interaction(embeddings), brute.sum(1, keepdims=True))


@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_kernel_product_at_init_is_the_inner_product(embeddings, kernel_type):
    layer = KernelProduct(FIELDS, DIM, kernel_type)
    close(layer(embeddings), keras.ops.convert_to_numpy(pairwise_inner_products(embeddings)))


@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_kernel_product_equals_per_pair_reference(embeddings, kernel_type):
    layer = KernelProduct(FIELDS, DIM, kernel_type)
    kernel = np.random.default_rng(2).normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(kernel)
    if kernel_type == "mat":
        matrices = kernel
    elif kernel_type == "vec":
        matrices = [np.diag(row) for row in kernel]
    else:
        matrices = [value * np.eye(DIM) for value in kernel]
    expected = np.stack([np.einsum("bd,de,be->b", embeddings[:, i], matrices[p], embeddings[:, j])
                         for p, (i, j) in enumerate(PAIRS)], axis=1)
    close(layer(embeddings), expected, 1e-4)


def test_kernel_product_rejects_bad_type_and_shape(embeddings):
    with pytest.raises(ValueError, match="kernel_type"):
        KernelProduct(FIELDS, DIM, "outer")
    with pytest.raises(ValueError, match="expected input"):
        KernelProduct(FIELDS + 1, DIM)(embeddings)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="inspects a TF graph")
@pytest.mark.parametrize("kernel_type", ["mat", "vec"])
def test_kernel_product_largest_tensor_is_batch_pairs_dim(kernel_type):
    """At batch 4096, 39 fields, k 16, no tensor of forward and backward exceeds 2 B P k floats
    (TF concatenates the two pair gathers' gradients; the B x k x P x k broadcast would be 8x
    that). Traced only, so it is cheap."""
    import tensorflow as tf

    batch, fields, dim = 4096, 39, 16
    layer = KernelProduct(fields, dim, kernel_type)

    @tf.function
    def forward_backward(embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = tf.reduce_sum(layer(embeddings))
        return tape.gradient(loss, [embeddings, layer.kernel])

    graph = forward_backward.get_concrete_function(
        tf.TensorSpec((batch, fields, dim), tf.float32)).graph
    sizes = [output.shape.num_elements() or 0 for op in graph.get_operations()
             for output in op.outputs]
    assert max(sizes) <= 2 * batch * num_pairs(fields) * dim


def test_field_aware_interaction_equals_brute_force():
    vectors = np.random.default_rng(3).normal(size=(BATCH, FIELDS, FIELDS, DIM)).astype("float32")
    expected = sum((vectors[:, i, j] * vectors[:, j, i]).sum(1) for i, j in PAIRS)
    close(field_aware_interaction(vectors), expected[:, None], 1e-4)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape")
def test_field_aware_interaction_hand_written_gradient():
    """d/dV[x_i][j] of the pair sum is V[x_j][i] off the diagonal, 0 on it, times the upstream."""
    import tensorflow as tf

    vectors = tf.constant(np.random.default_rng(3).normal(size=(BATCH, FIELDS, FIELDS, DIM)),
                          tf.float32)
    upstream = np.arange(1, BATCH + 1, dtype="float32")[:, None]
    with tf.GradientTape() as tape:
        tape.watch(vectors)
        loss = tf.reduce_sum(field_aware_interaction(vectors) * upstream)
    expected = vectors.numpy().transpose(0, 2, 1, 3) * upstream[:, :, None, None]
    expected[:, np.arange(FIELDS), np.arange(FIELDS)] = 0.0
    close(tape.gradient(loss, vectors), expected)


def fused_norm_reference(hidden, scale, shift):
    """hidden [P, B, U]: per-example statistics over pairs and units."""
    mean = hidden.mean(axis=(0, 2), keepdims=True)
    variance = hidden.var(axis=(0, 2), keepdims=True)
    return (hidden - mean) / np.sqrt(variance + 1e-8) * scale + shift


def test_fused_layer_norm_statistics_span_pairs_and_units():
    hidden = np.random.default_rng(4).normal(size=(len(PAIRS), BATCH, 3)).astype("float32")
    layer = FusedLayerNormalization(3)
    layer.scale.assign(np.array([1.0, 2.0, 3.0], "float32"))
    close(layer(hidden), fused_norm_reference(hidden, np.array([1.0, 2.0, 3.0]), 0.0), 1e-4)


@pytest.mark.parametrize("use_product", [True, False])
def test_micro_network_equals_per_pair_loop(embeddings, use_product):
    layer = PairwiseMicroNetwork(FIELDS, DIM, units=(6, 2), use_product=use_product)
    rng = np.random.default_rng(5)
    for bias in layer.biases:  # non-zero biases so the reference checks them too
        bias.assign(rng.normal(size=bias.shape).astype("float32"))
    kernels = [keras.ops.convert_to_numpy(kernel) for kernel in layer.kernels]
    biases = [keras.ops.convert_to_numpy(bias) for bias in layer.biases]
    hidden = []
    for p, (i, j) in enumerate(PAIRS):
        left, right = embeddings[:, i], embeddings[:, j]
        inputs = [left, right, left * right] if use_product else [left, right]
        hidden.append(np.concatenate(inputs, axis=1) @ kernels[0][p] + biases[0][p])
    hidden = np.maximum(fused_norm_reference(np.stack(hidden), 1.0, 0.0), 0.0)  # [P, B, 6]
    output = np.stack([hidden[p] @ kernels[1][p] + biases[1][p] for p in range(len(PAIRS))])
    expected = fused_norm_reference(output, 1.0, 0.0).transpose(1, 0, 2)  # [B, P, 2]
    result = layer(embeddings)
    assert tuple(result.shape) == (BATCH, len(PAIRS), 2)
    close(result, expected, 1e-4)


def test_micro_network_rejects_wrong_fields(embeddings):
    with pytest.raises(ValueError, match="expected input"):
        PairwiseMicroNetwork(FIELDS - 1, DIM)(embeddings)


def test_attentional_pooling_equals_reference(embeddings):
    layer = AttentionalPooling(DIM, attention_units=3, temperature=0.5)
    weights = [keras.ops.convert_to_numpy(w) for w in
               (layer.attention_kernel, layer.attention_bias, layer.projection)]
    interactions = np.stack([embeddings[:, i] * embeddings[:, j] for i, j in PAIRS])  # [P, B, k]
    scores = (np.maximum(interactions @ weights[0] + weights[1], 0) @ weights[2]) / 0.5
    attention = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
    result = layer(embeddings)
    assert tuple(result.shape) == (BATCH, DIM)
    close(result, (attention * interactions).sum(0), 1e-4)
    with pytest.raises(ValueError, match="temperature"):
        AttentionalPooling(DIM, temperature=0.0)


def test_mlp_layer_norm_normalises_tiny_inputs():
    """With the small epsilon, inputs at the scale of a 1M-row Glorot table (~1e-3) still come
    out of the first layer norm with unit variance (Keras' default epsilon would shrink them)."""
    mlp = MLP([16], layer_norm=True)
    inputs = np.random.default_rng(6).normal(scale=1e-3, size=(8, 10)).astype("float32")
    assert tuple(mlp(inputs).shape) == (8, 1)
    dense, norm = mlp.hidden_layers[0], mlp.hidden_layers[1]
    normalised = keras.ops.convert_to_numpy(norm(dense(inputs)))
    assert normalised.std(axis=1).min() > 0.95  # epsilon 1e-3 would give ~0.03
    with pytest.raises(ValueError, match="dropout_rate"):
        MLP([4], dropout_rate=1.0)


def test_adaptive_dims_and_mask():
    sizes = [2, 100, 1_000_000]
    assert adaptive_dims(sizes, 8, {"c": 1.0}) == [1, 5, 8]
    assert adaptive_dims(sizes, 8, {"c": 1.0, "max_dim": 6}) == [1, 5, 6]
    mask = field_width_mask(sizes, 8, {"c": 1.0})
    assert mask.shape == (3, 8) and mask.sum(axis=1).tolist() == [1, 5, 8]
    assert field_width_mask(sizes, 8, None) is None
    for bad in ({"scale": 1.0}, {"c": 0.0}, {"c": 1.0, "max_dim": 9}):
        with pytest.raises(ValueError, match="adaptive_embedding"):
            adaptive_dims(sizes, 8, bad)


@pytest.mark.parametrize("layer", [
    KernelProduct(FIELDS, DIM, "mat", kernel_l2=1e-5), MLP([4, 2], dropout_rate=0.1),
    PairwiseMicroNetwork(FIELDS, DIM, units=(3, 1), use_product=False),
    AttentionalPooling(DIM, 3, 0.1), FusedLayerNormalization(3)])
def test_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
