"""Adam and AdaGrad as pure functions of (parameter, gradient, slots), for rows and dense weights.

The engine (`models/engine/`) applies them to the rows a batch touches and to whole dense weights;
written with `keras.ops`, so TensorFlow and JAX share the maths.

Sparse ("lazy") Adam semantics, chosen deliberately:
- Only touched rows change: a row absent from a batch keeps its value *and* its moments. Dense Adam
  (and the authors' TF1 `AdamOptimizer`, whose sparse apply still decays every row's moments) keeps
  moving absent rows by their old momentum.
- Bias correction is **per row**: each row carries a `count` slot (the number of batches that
  touched it) and is corrected with beta**count, so every row's update sequence is exactly dense
  Adam run on that row's own gradient subsequence. TF Addons' LazyAdam and torch's SparseAdam
  correct with the *global* step instead, which makes a rare row's first update
  (1 - beta_1) / sqrt(1 - beta_2) ~ 3.2 times larger than Adam's first step (lr * sign(g)).
- Dense weights are touched every step, so their `count` is the global step and this is plain Adam.

AdaGrad follows TF1 `tf.train.AdagradOptimizer` (the authors' Kaggle KFM): accumulator starts at
`initial_accumulator`, no epsilon, duplicate ids summed before the update. A zero gradient leaves
row and accumulator unchanged, so sparse and dense AdaGrad are the same algorithm.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    name: str  # "adam" | "adagrad"
    learning_rate: float
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    initial_accumulator: float = 0.1

    def __post_init__(self):
        if self.name not in ("adam", "adagrad"):
            raise ValueError(f"optimizer {self.name!r}: expected 'adam' or 'adagrad'")


def initial_slots(settings: OptimizerSettings, shape: tuple,
                  per_row: bool) -> dict[str, np.ndarray]:
    """Zeroed slots for a parameter of `shape`.

    `per_row` (embedding tables) gives Adam a count per row [rows, 1]; dense weights share the
    global step as their count, so they get none.
    """
    if settings.name == "adagrad":
        return {"accumulator": np.full(shape, settings.initial_accumulator, np.float32)}
    slots = {"m": np.zeros(shape, np.float32), "v": np.zeros(shape, np.float32)}
    if per_row:
        slots["count"] = np.zeros((shape[0], 1), np.float32)
    return slots


def apply(settings: OptimizerSettings, parameter, gradient, slots: dict, step=None,
          learning_rate=None):
    """One update. Returns (new_parameter, new_slots).

    Args:
        parameter, gradient: same shape (rows [U, D] or a dense weight).
        slots: the slot values for exactly these rows (see `initial_slots`).
        step: the global step *after* this update (1 on the first step); used as Adam's count
            when `slots` has no per-row "count".
        learning_rate: the rate of this step, a float32 scalar of the training state (the
            runner's decay on plateau changes it without a recompile); None:
            `settings.learning_rate`.
    """
    rate = settings.learning_rate if learning_rate is None else learning_rate
    if settings.name == "adagrad":
        accumulator = slots["accumulator"] + gradient * gradient
        parameter = parameter - rate * gradient * ops.rsqrt(accumulator)
        return parameter, {"accumulator": accumulator}
    m = settings.beta_1 * slots["m"] + (1.0 - settings.beta_1) * gradient
    v = settings.beta_2 * slots["v"] + (1.0 - settings.beta_2) * gradient * gradient
    new_slots = {"m": m, "v": v}
    if "count" in slots:
        count = slots["count"] + 1.0
        new_slots["count"] = count
    else:
        count = ops.cast(step, "float32")
    # Adam as written in Kingma & Ba / Keras: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t),
    # epsilon added to sqrt(v) (not to the bias-corrected v_hat).
    corrected_rate = rate * ops.sqrt(1.0 - ops.power(settings.beta_2, count)) \
        / (1.0 - ops.power(settings.beta_1, count))
    parameter = parameter - corrected_rate * m / (ops.sqrt(v) + settings.epsilon)
    return parameter, new_slots
