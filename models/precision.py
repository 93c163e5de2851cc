"""Mixed precision by config: `train.precision: float32 | mixed_bfloat16 | mixed_float16`.

The model is built under the Keras dtype policy of that name (`dtype_policy`), so every weight,
embedding tables included, stays float32 while layers compute in bfloat16 or float16. The
training steps (`models/engine/`) then
- gather the batch's embedding rows in float32, so the sparse optimiser maths and its slots stay
  float32, and hand the model those rows cast to its compute dtype (`compute_rows`);
- cast the logits to float32 before the loss and the sigmoid (`float32_logits`), so the loss,
  validation predictions and metrics are float32;
- with float16 only, whose range is too small for small gradients, multiply the loss by a dynamic
  loss scale, unscale the gradients and skip the update of a step whose gradients overflowed
  (`unscale`, `next_loss_scale`; the scheme of `keras.optimizers.LossScaleOptimizer`).
bfloat16 has float32's range and needs no loss scale.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000  # overflow-free steps before the scale doubles


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"config.train.precision: {precision!r} is not one of {PRECISIONS}")


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Layers created inside this context use the Keras dtype policy `precision`."""
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def needs_loss_scale(model: keras.Model) -> bool:
    return model.dtype_policy.compute_dtype == "float16"


def compute_rows(layers, rows):
    """float32 gathered rows -> the dtype each embedding layer computes in (no-op in float32)."""
    return [ops.cast(layer_rows, layer.compute_dtype) for layer, layer_rows in zip(layers, rows)]


def float32_logits(logits):
    return ops.cast(logits, "float32")


def unscale(gradients, loss_scale):
    """(gradients / loss_scale, whether every gradient is finite)."""
    gradients = [gradient / loss_scale for gradient in gradients]
    finite = ops.all(ops.stack([ops.all(ops.isfinite(gradient)) for gradient in gradients]))
    return gradients, finite


def next_loss_scale(loss_scale, good_steps, finite):
    """Halves the scale after an overflow (floor 1), doubles it after LOSS_SCALE_GROWTH_STEPS
    finite steps in a row. Returns (new scale float32, new good-step count int32)."""
    grow = ops.logical_and(finite, good_steps + 1 >= LOSS_SCALE_GROWTH_STEPS)
    scale = ops.where(finite, ops.where(grow, loss_scale * 2.0, loss_scale),
                      ops.maximum(loss_scale * 0.5, 1.0))
    good_steps = ops.where(ops.logical_and(finite, ops.logical_not(grow)), good_steps + 1, 0)
    return ops.cast(scale, "float32"), ops.cast(good_steps, "int32")
