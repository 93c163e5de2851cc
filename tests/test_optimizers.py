"""Sparse row updates of the training step against a NumPy reference written out by hand.

The model is a tiny logistic regression (defined here), whose gradient is easy to write: for the
mean loss, d loss / d w[u] = sum over lookups of u of (sigmoid(z) - y) / B, plus the authors'
sparse L2 l2 * w[u] per lookup. Backend-neutral: `test_runner.py` reruns this file with
KERAS_BACKEND=jax.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from keras import ops

from models import data, optimizers
from models.layers.embedding import SparseEmbedding
from models.engine import create_train_step

VOCABULARY = 40
BATCH, FIELDS = 8, 3


@keras.saving.register_keras_serializable(package="test_optimizers")
class TinyLR(keras.Model):
    """logit = b + sum_f w[x_f]; w [VOCABULARY, 1] is a SparseEmbedding, b a dense weight."""

    def __init__(self, sparse_l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.table = SparseEmbedding(VOCABULARY, 1, sparse_l2=sparse_l2, name="table",
                                     initializer=keras.initializers.RandomNormal(0.0, 0.3, seed=3))
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def call(self, ids):
        return ops.sum(self.table(ids), axis=1) + self.bias  # [B, 1]


def batches(count=3, seed=0):
    """Ids drawn from the first half of the vocabulary only, so rows 20..39 are never touched."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, VOCABULARY // 2, (BATCH, FIELDS)).astype(np.int32),
             rng.integers(0, 2, BATCH).astype(np.float32)) for _ in range(count)]


def run_step(settings, sparse_l2, reduction, pad, learning_rate=None):
    """Trains TinyLR on `batches()` with the runner's step (at `learning_rate`, set on the step
    after it is built, when given).

    Returns (initial, final) states, renamed: "table", "bias", "table/<slot>", and the step."""
    keras.utils.set_random_seed(0)
    model = TinyLR(sparse_l2=sparse_l2)
    model(np.zeros((1, FIELDS), np.int32))
    step = create_train_step(model, settings, reduction, jit_compile=pad, eval_batch_size=16)
    if learning_rate is not None:
        step.learning_rate = learning_rate
    index = step.table_indices[0]
    names = {f"trainable/{index}": "table", f"trainable/{1 - index}": "bias",
             **{f"slot/{index}/{slot}": f"table/{slot}"
                for slot in optimizers.initial_slots(settings, (1, 1), per_row=True)}}

    def renamed(state):
        return {name: state[key] for key, name in names.items()}

    initial = renamed(step.state())
    pad_limit = BATCH * FIELDS if step.pads_unique else None
    for number, (ids, labels) in enumerate(batches(), 1):
        step.step(data.compact_batch(ids, labels, number, pad_limit))
    return initial, renamed(step.state()), step


def reference(settings, table, bias, sparse_l2, reduction):
    """Dense NumPy float64 re-derivation of the sparse update (see models/optimizers.py)."""
    table, bias = table[:, 0].astype(np.float64), bias.astype(np.float64)
    first, second = np.zeros_like(table), np.zeros_like(table)
    counts = np.zeros_like(table)
    accumulator = np.full_like(table, settings.initial_accumulator)
    bias_slots = [np.zeros(1), np.zeros(1), np.full(1, settings.initial_accumulator)]
    for step, (ids, labels) in enumerate(batches(), 1):
        residual = 1 / (1 + np.exp(-(table[ids].sum(1) + bias))) - labels
        residual /= len(labels) if reduction == "mean" else 1
        gradient = np.zeros_like(table)
        np.add.at(gradient, ids, residual[:, None] + sparse_l2 * table[ids])
        touched = np.unique(ids)
        if settings.name == "adagrad":
            accumulator[touched] += gradient[touched] ** 2
            table[touched] -= settings.learning_rate * gradient[touched] / np.sqrt(
                accumulator[touched])
            bias_slots[2] += residual.sum() ** 2
            bias = bias - settings.learning_rate * residual.sum() / np.sqrt(bias_slots[2])
            continue
        counts[touched] += 1
        table[touched], first[touched], second[touched] = adam(
            settings, table[touched], gradient[touched], first[touched], second[touched],
            counts[touched])
        bias, bias_slots[0], bias_slots[1] = adam(settings, bias, residual.sum(), bias_slots[0],
                                                  bias_slots[1], step)
    return table, bias, accumulator, counts


def adam(settings, value, gradient, first, second, count):
    first = settings.beta_1 * first + (1 - settings.beta_1) * gradient
    second = settings.beta_2 * second + (1 - settings.beta_2) * gradient ** 2
    rate = settings.learning_rate * np.sqrt(1 - settings.beta_2 ** count) / (
        1 - settings.beta_1 ** count)
    return value - rate * first / (np.sqrt(second) + settings.epsilon), first, second


SETTINGS = [optimizers.OptimizerSettings("adam", 0.05),
            optimizers.OptimizerSettings("adagrad", 0.3, initial_accumulator=0.1)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("pad", [False, True], ids=["exact", "padded"])
def test_sparse_update_matches_numpy_reference(settings, reduction, pad):
    initial, final, _ = run_step(settings, sparse_l2=0.1, reduction=reduction, pad=pad)
    table, bias, accumulator, counts = reference(
        settings, initial["table"], initial["bias"], 0.1, reduction)
    np.testing.assert_allclose(final["table"][:, 0], table, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(final["bias"], bias, rtol=2e-5, atol=1e-6)
    if settings.name == "adam":
        np.testing.assert_array_equal(final["table/count"][:, 0], counts)
    else:
        np.testing.assert_allclose(final["table/accumulator"][:, 0], accumulator, rtol=2e-5)


def traces(step) -> int:
    """How often the step's training function was compiled (traced) so far."""
    train = step._train
    if hasattr(train, "experimental_get_tracing_count"):  # tf.function
        return train.experimental_get_tracing_count()
    return train._cache_size()  # jax.jit


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("pad", [False, True], ids=["exact", "padded"])
def test_the_learning_rate_is_state_that_the_compiled_step_reads(settings, pad):
    """A rate set on the step is the one its updates use (the reference at that rate), it is in
    the checkpoint state, and changing it between steps compiles nothing new: at rate 0 the
    next step leaves every weight as it was."""
    half = dataclasses.replace(settings, learning_rate=settings.learning_rate / 2)
    initial, final, step = run_step(settings, sparse_l2=0.1, reduction="mean", pad=pad,
                                    learning_rate=half.learning_rate)
    table, bias, _, _ = reference(half, initial["table"], initial["bias"], 0.1, "mean")
    np.testing.assert_allclose(final["table"][:, 0], table, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(final["bias"], bias, rtol=2e-5, atol=1e-6)
    assert step.learning_rate == np.float32(half.learning_rate)
    assert step.state()["learning_rate"] == np.float32(half.learning_rate)

    compiled = traces(step)
    step.learning_rate = 0.0
    ids, labels = batches()[-1]  # shapes the step has compiled for
    step.step(data.compact_batch(ids, labels, 4, BATCH * FIELDS if step.pads_unique else None))
    weights = step.weights()
    for name in weights:
        np.testing.assert_array_equal(weights[name], final["table" if name.endswith(
            f"/{step.table_indices[0]}") else "bias"], err_msg=name)
    assert traces(step) == compiled
    step.load_state({**step.state(), "learning_rate": np.float32(0.25)})
    assert step.learning_rate == 0.25


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.name)
def test_only_touched_rows_and_slots_change(settings):
    initial, final, _ = run_step(settings, sparse_l2=0.5, reduction="mean", pad=False)
    untouched = slice(VOCABULARY // 2, None)
    for name in initial:
        if name.startswith("table"):
            np.testing.assert_array_equal(final[name][untouched], initial[name][untouched],
                                          err_msg=name)
    assert (final["table"][: VOCABULARY // 2] != initial["table"][: VOCABULARY // 2]).sum() >= 10, \
        "touched rows should move"


def test_sparse_l2_pulls_looked_up_rows_towards_zero():
    """A strong sparse L2 shrinks the touched rows and leaves the others exactly as they were."""
    settings = optimizers.OptimizerSettings("adagrad", 0.1)
    _, plain, _ = run_step(settings, sparse_l2=0.0, reduction="sum", pad=False)
    _, regularised, _ = run_step(settings, sparse_l2=5.0, reduction="sum", pad=False)
    touched = slice(0, VOCABULARY // 2)
    assert np.abs(regularised["table"][touched]).sum() < np.abs(plain["table"][touched]).sum()
    np.testing.assert_array_equal(regularised["table"][VOCABULARY // 2:],
                                  plain["table"][VOCABULARY // 2:])


def test_first_adam_step_of_a_row_is_learning_rate_times_sign():
    """Per-row bias correction: a row's first update is lr * sign(g) whatever the global step."""
    settings = optimizers.OptimizerSettings("adam", 0.01)
    row, gradient = np.array([[0.5, -0.2]], np.float32), np.array([[3.0, -0.004]], np.float32)
    slots = {"m": np.zeros((1, 2), np.float32), "v": np.zeros((1, 2), np.float32),
             "count": np.zeros((1, 1), np.float32)}
    new_row, new_slots = optimizers.apply(settings, row, gradient, slots, step=1000)
    np.testing.assert_allclose(ops.convert_to_numpy(new_row), row - 0.01 * np.sign(gradient),
                               rtol=1e-4)
    assert float(ops.convert_to_numpy(new_slots["count"])[0, 0]) == 1.0
