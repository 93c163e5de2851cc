"""The planted label model: the seed's parameters, the base rate and the true click probability.

The true click probability of a row on day d (train rows spread over days [0, TRAIN_DAYS), test
rows over [TRAIN_DAYS, TRAIN_DAYS + 1)) is sigmoid(bias + BIAS_WAVE sin(2 pi d / TRAIN_DAYS)
+ logit), with

    logit = sum over the 39 fields f of w[f, i_f] + (d - TRAIN_DAYS / 2) dw[f, i_f]
          + sum over planted pairs p = (a, b) of s_p / sqrt(LATENT_DIM) <u[p, 0, i_a], u[p, 1, i_b]>
          + sum over planted triples t = (a, b, c) of s_t v[t, 0, i_a] v[t, 1, i_b] v[t, 2, i_c]

(field-aware pairwise terms on a sparse set of field pairs: the structure FFM and KFM assume).
i_f, the row's table index in field f, is the top TABLE_BITS of a categorical's hex token (a
missing value has a token too) or an integer's bucket (`bucket_of`; 0 if missing), so the model
stays small for 10M-value fields and the truth is a function of the visible row and its day.
The per-row sum is compiled into the row kernel (`kernels.planted_logit`); this module draws its
parameters, solves the bias for the target click rate and turns logits into probabilities.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.optimize
import scipy.special

from preprocessing import schema
from preprocessing.synthetic import distributions, laws

TRAIN_DAYS = 7
# Pairs and triples use fields whose values repeat enough to be learnable.
PLANTED_PAIRS = (("C6", "C20"), ("C14", "C17"), ("C22", "C23"), ("C5", "C23"), ("C1", "C14"),
                 ("C2", "C17"), ("C8", "C22"), ("C14", "C25"), ("I1", "C17"), ("I6", "C23"),
                 ("I11", "C5"), ("C10", "C14"), ("C13", "C23"), ("C19", "C6"), ("C3", "C20"),
                 ("C24", "C17"))
PLANTED_TRIPLES = (("C6", "C17", "C23"), ("I7", "C14", "C20"))
LATENT_DIM = 4
FIRST_ORDER_SCALE = (0.06, 0.28)  # per-field weight sd, drawn uniformly in this range
PAIR_STRENGTH = (0.18, 0.36)  # per-pair sd of the pairwise term
TRIPLE_STRENGTH = (0.30, 0.50)
INT_TREND_SCALE = 0.25  # sd of the per-field slope on the standardised ln(value) of a bucket
INT_NOISE_SHARE = 0.5  # integer bucket weights: trend + this share of the field's random weights
WEIGHT_DRIFT_SCALE = 0.15  # per-value weight change from day 0 to day 7, relative to its field sd
BIAS_WAVE = 0.08  # base-rate change over the week (logits)
TABLE_BITS = 8  # per-value parameters: table rows indexed by a token's top bits (ints: bucket)
TABLE_SIZE = 1 << TABLE_BITS
PILOT_ROWS = 1 << 15  # train rows used to solve the base rate for the target click rate
FIELD_INDEX = {name: f for f, name in enumerate(schema.FIELD_NAMES)}


def bucket_of(values: np.ndarray) -> np.ndarray:
    """The winners' integer keys as ids < TABLE_SIZE: v + 4 for v <= 2, else 7 + floor(ln(v)^2)
    (0 is kept for missing)."""
    logs = np.log(np.maximum(values, 3).astype(np.float64))
    return np.where(values <= 2, values + 4, 7 + (logs * logs).astype(np.int64))


def bucket_levels(field: str) -> np.ndarray:
    """float64 [TABLE_SIZE]: standardised ln(1 + value) of each integer bucket, 0 if missing."""
    buckets = np.arange(TABLE_SIZE)
    levels = np.where(buckets >= 7, np.sqrt(np.maximum(buckets - 6.5, 0)),
                      np.log1p(np.clip(buckets - 4, 0, None)))
    grid = (np.arange(4096) + 0.5) / 4096
    typical = levels[bucket_of(np.floor(distributions.int_inverse(grid, field)).astype(np.int64))]
    standardised = (levels - typical.mean()) / (typical.std() or 1.0)
    standardised[0] = 0.0
    return standardised


@functools.cache
def parameters(seed: int) -> dict:
    """The seed's label-model parameters (first order, pairs, triples), in the kernel's layout."""
    rng = np.random.default_rng([seed, 7])
    scales = rng.uniform(*FIRST_ORDER_SCALE, size=schema.NUM_FIELDS)
    weights = rng.standard_normal((schema.NUM_FIELDS, TABLE_SIZE)) * scales[:, None]
    drift = (rng.standard_normal((schema.NUM_FIELDS, TABLE_SIZE)) * scales[:, None]
             * WEIGHT_DRIFT_SCALE / TRAIN_DAYS)
    slopes = rng.standard_normal(schema.NUM_INT_FIELDS) * INT_TREND_SCALE
    for j, name in enumerate(schema.INT_NAMES):
        weights[j] = INT_NOISE_SHARE * weights[j] + slopes[j] * bucket_levels(name)
    pair_strengths = rng.uniform(*PAIR_STRENGTH, size=len(PLANTED_PAIRS))
    return {
        "weights": np.stack([weights, drift], axis=2).astype(np.float32),
        "pair_fields": np.array([[FIELD_INDEX[name] for name in pair] for pair in PLANTED_PAIRS]),
        "pair_strengths": pair_strengths,
        "pair_scales": pair_strengths / np.sqrt(LATENT_DIM),
        "pair_vectors": rng.standard_normal(
            (len(PLANTED_PAIRS), 2, TABLE_SIZE, LATENT_DIM)).astype(np.float32),
        "triple_fields": np.array([[FIELD_INDEX[name] for name in triple]
                                   for triple in PLANTED_TRIPLES]),
        "triple_strengths": rng.uniform(*TRIPLE_STRENGTH, size=len(PLANTED_TRIPLES)),
        "triple_factors": rng.standard_normal(
            (len(PLANTED_TRIPLES), 3, TABLE_SIZE)).astype(np.float32),
    }


def summary(seed: int, bias: float) -> dict:
    """The planted structure as truth.json states it."""
    planted = parameters(seed)
    return {
        "pairs": [{"fields": list(pair), "strength": round(float(strength), 4),
                   "latent_dim": LATENT_DIM}
                  for pair, strength in zip(PLANTED_PAIRS, planted["pair_strengths"])],
        "triples": [{"fields": list(fields), "strength": round(float(strength), 4)}
                    for fields, strength in zip(PLANTED_TRIPLES, planted["triple_strengths"])],
        "first_order_sd": {name: round(float(np.std(planted["weights"][f, :, 0])), 4)
                           for f, name in enumerate(schema.FIELD_NAMES)},
        "bias": round(bias, 6),
        "bias_wave": BIAS_WAVE,
        "days": {"train": TRAIN_DAYS, "test": 1},
    }


def bias_wave(days: np.ndarray) -> np.ndarray:
    return BIAS_WAVE * np.sin(2 * np.pi * days / TRAIN_DAYS)


def pilot_rows(train_rows: int) -> np.ndarray:
    """The strided train rows (int64) whose logits fix the bias."""
    return np.unique(np.linspace(0, train_rows - 1, min(PILOT_ROWS, train_rows)).astype(np.int64))


def solve_bias(logits: np.ndarray, days: np.ndarray) -> float:
    """Base logit that gives TARGET_CLICK_RATE on rows with these bias-free logits and days."""
    logits = logits + bias_wave(days)
    return scipy.optimize.brentq(
        lambda bias: np.mean(scipy.special.expit(logits + bias)) - laws.TARGET_CLICK_RATE,
        -20.0, 20.0)


def click_probability(logits: np.ndarray, days: np.ndarray, bias: float) -> np.ndarray:
    """float32: the true click probability of rows with these bias-free logits and days."""
    return scipy.special.expit(logits + bias + bias_wave(days)).astype(np.float32)
