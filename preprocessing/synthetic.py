"""Synthetic Criteo: raw Kaggle-format train.txt/test.txt with labels drawn from a planted model.

Writes into `out_dir`:
* `train.txt` (label, I1..I13, C1..C26) and `test.txt` (no label): TSV, no header, '\n' line ends,
  integers in decimal, categoricals as 8 lowercase hex digits, empty = missing;
* `train.truth.npy`, `test.truth.npy`: float32 [rows], the true click probability of every row;
* `truth.json`: the planted structure, the sizes and seed, the realised click rate and the
  Bayes-optimal logloss/AUC (the truth as the prediction) on train and on its last 1/7 (valid).

The data is shaped like the real files:
* Categorical values follow a two-piece Zipf-Mandelbrot law per field (a head of the values that
  are frequent at full scale and a thinner long tail), fitted so that at 45,840,617 rows the
  expected raw distinct count and the count of values seen >= 10 times match the real data, and
  the most common value's share matches the real sample. Smaller files are draws from the same
  law, so their vocabularies shrink the way a prefix of the real file's would.
* Integers come from per-field distributions measured on the real sample (exact small values,
  log-quantiles above), linked across fields by a shared row-level "activity" draw.
* Missing values follow the nested groups seen in the real sample (e.g. I1 and I10 are missing
  together; a row missing I5 also misses I1, I6, I10 and I12).
* Row order is time: train rows span 7 "days", test rows an 8th. Value popularity drifts
  (ranks reshuffle within each octave of the popularity order), as do per-value weights and the
  base rate.

The label of a row is Bernoulli(sigmoid(logit)), logit = bias(day) + first-order weights of
every field + field-aware pairwise terms <u[i, value_i, j], u[j, value_j, i]> on a sparse set of
field pairs (the structure FFM and KFM assume) + a few 3-way products. Per-value parameters are
table rows picked by the top bits of a categorical's hex token (or an integer's log^2 bucket), so
the model stays small for 10M-value fields and the truth is a function of the visible row and its
day. All randomness comes from hashing (seed, file, stream, row index), so the output does not
depend on `chunk_rows` or threads, and the same seed and sizes give byte-identical files.

Rows are drawn and formatted by two numba kernels (compiled once, then cached), in parallel
blocks of rows: numpy passes over 39 columns cost more than the text itself.

Usage: python -m preprocessing.synthetic --out DIR --train-rows N --test-rows M [--seed S]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import typing
from pathlib import Path

import numba
import numpy as np
import scipy.optimize
import scipy.special

from preprocessing import schema

TARGET_CLICK_RATE = 0.2562  # Kaggle train.txt
TRAIN_DAYS = 7
VALID_FRACTION = 1 / 7  # the pipeline's default validation split (the last "day")
DEFAULT_SEED = 2014
DEFAULT_CHUNK_ROWS = 1 << 17
AUC_MAX_ROWS = 4_000_000  # bigger sets are scored on evenly strided rows (sklearn needs ~50 B/row)
PILOT_ROWS = 1 << 15  # train rows used to solve the base rate for the target click rate

# Categorical value law, per field: (exponent, offset, head_ranks, tail_scale, support).
# Rank r has mass proportional to the integral over [r, r+1) of (x + offset)^-exponent, times
# tail_scale for r >= head_ranks; ranks run over [0, support). Fitted (least squares on logs) to
# three targets at 45,840,617 rows: the raw distinct count per field (the widely quoted Kaggle
# train.txt counts, less one for the empty value), the count of values seen >= 10 times (the
# per-field sizes of the winners' features after their count filter, less the "less" and empty
# tokens), and the top value's share in the real sample (rows 0-9,999 of train.txt). Small closed
# vocabularies (head = support) only fit the top share. tests/test_synthetic.py recomputes the
# full-scale counts from these laws.
CAT_VALUE_LAWS = {
    "C1": (1.9990, 1.0000, 1456, 0.219, 1460),
    "C2": (1.0417, 1.0000, 554, 9.81e-05, 598),
    "C3": (0.9238, 0.3191, 176371, 0.265, 525425531),
    "C4": (1.0606, 1.0007, 129681, 0.207, 54178502),
    "C5": (2.5817, 1.0000, 305, 1.0, 305),
    "C6": (2.0021, 1.0000, 17, 1.39e-05, 25),
    "C7": (0.6544, 1.0000, 11886, 4.52e-04, 13278),
    "C8": (2.2823, 1.0000, 631, 0.0463, 633),
    "C9": (3.9726, 1.0000, 3, 1.0, 3),
    "C10": (1.2795, 0.5031, 41737, 0.0347, 8470492),
    "C11": (0.7068, 1.0000, 5169, 4.70e-04, 5883),
    "C12": (0.9718, 0.6601, 175444, 0.323, 557370422),
    "C13": (0.6948, 1.0000, 3169, 1.88e-04, 3211),
    "C14": (1.5057, 1.0000, 27, 1.0, 27),
    "C15": (0.7391, 1.0000, 11355, 1.33e-03, 16292),
    "C16": (1.0022, 1.0296, 165600, 0.286, 233626284),
    "C17": (1.5399, 1.0000, 10, 1.0, 10),
    "C18": (0.8868, 1.0000, 4640, 8.50e-04, 5996),
    "C19": (1.9315, 0.6019, 2028, 0.999, 2136),
    "C20": (0.1824, 1.0000, 3, 1.0, 3),
    "C21": (1.0027, 0.9605, 172759, 0.344, 606394102),
    "C22": (1.9877, 1.0000, 17, 1.0, 17),
    "C23": (1.7108, 1.0000, 15, 1.0, 15),
    "C24": (1.0439, 1.0000, 57901, 0.0235, 2534861),
    "C25": (1.4986, 1.0000, 84, 1.11e-04, 105),
    "C26": (1.0500, 1.0000, 44547, 0.0107, 1342633),
}

# Missing values, measured on the real sample. Fields in one group share a uniform draw per row
# and are missing when it falls below their rate, so smaller-rate fields are nested in larger ones.
MISSING_GROUPS = {
    "activity": {"I8": 0.0010, "I7": 0.0492, "I9": 0.0492, "I11": 0.0492, "I5": 0.0494,
                 "I6": 0.2511, "I1": 0.4481, "I10": 0.4481, "I12": 0.7735},
    "I3": {"I3": 0.2037},
    "I4": {"I4": 0.1978, "I13": 0.1978},
    "C3": {name: 0.0357 for name in ("C3", "C4", "C12", "C16", "C21", "C24")},
    "C6": {"C6": 0.1332, "C22": 0.8182},
    "C19": {name: 0.4496 for name in ("C19", "C20", "C25", "C26")},
}
# In the sample, a row missing I8 (the rarest) misses these fields too.
BLANK_ROW_FIELDS = ("I3", "I4", "I13", "C19", "C20", "C22", "C25", "C26")

# Integer values, measured on the present values of the real sample: probabilities of the small
# values (INT_SMALL_VALUES) and, for values >= 10, ln(value) at the conditional quantiles
# INT_TAIL_QUANTILES. The tail gets the probability the small values leave.
INT_SMALL_VALUES = tuple(range(-2, 10))
INT_TAIL_QUANTILES = (0, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .99, 1)
INT_SMALL_PROBABILITIES = {
    "I1": (0, 0, .4753, .1616, .0893, .0578, .0420, .0268, .0230, .0161, .0136, .0092),
    "I2": (.0006, .0969, .1795, .1574, .0551, .0304, .0189, .0164, .0128, .0119, .0119, .0100),
    "I3": (0, 0, .0080, .1499, .0983, .0784, .0625, .0516, .0403, .0343, .0357, .0257),
    "I4": (0, 0, .0714, .1500, .1239, .0905, .0788, .0578, .0489, .0415, .0358, .0288),
    "I5": (0, 0, .0166, .0195, .0146, 0, .0119, .0087, 0, .0069, .0057, 0),
    "I6": (0, 0, .0629, .0312, .0274, .0248, .0199, .0182, .0200, .0176, .0183, .0116),
    "I7": (0, 0, .2525, .1398, .0892, .0643, .0488, .0418, .0334, .0263, .0221, .0181),
    "I8": (0, 0, .1177, .0846, .0691, .0546, .0503, .0435, .0402, .0408, .0268, .0263),
    "I9": (0, 0, .0318, .0419, .0330, .0285, .0223, .0205, .0197, .0153, .0146, .0144),
    "I10": (0, 0, .5015, .4321, .0558, .0091, .0013, 0, .0002, 0, 0, 0),
    "I11": (0, 0, .2649, .3616, .1345, .0736, .0413, .0280, .0204, .0150, .0099, .0074),
    "I12": (0, 0, .7364, .1479, .0415, .0177, .0119, .0053, .0075, .0062, .0040, .0031),
    "I13": (0, 0, .0616, .1421, .1147, .0850, .0672, .0514, .0451, .0368, .0369, .0269),
}
INT_TAIL_LOG_QUANTILES = {
    "I1": (2.303, 2.303, 2.485, 2.565, 2.708, 2.833, 3.045, 3.258, 3.466, 3.835, 4.152, 4.667,
           5.366),
    "I2": (2.303, 2.639, 3.045, 3.401, 3.761, 4.094, 4.517, 5.030, 5.635, 6.605, 7.285, 8.013,
           9.827),
    "I3": (2.303, 2.398, 2.639, 2.833, 3.045, 3.258, 3.497, 3.784, 4.127, 4.691, 5.192, 6.447,
           11.09),
    "I4": (2.303, 2.398, 2.485, 2.565, 2.708, 2.833, 2.944, 3.135, 3.296, 3.555, 3.714, 4.080,
           5.635),
    "I5": (2.303, 4.205, 5.884, 7.186, 7.495, 8.047, 8.643, 9.126, 9.756, 10.448, 10.999, 12.714,
           14.297),
    "I6": (2.303, 2.773, 3.219, 3.584, 3.951, 4.277, 4.615, 5.017, 5.455, 6.070, 6.568, 7.587,
           9.406),
    "I7": (2.303, 2.398, 2.565, 2.773, 2.944, 3.178, 3.332, 3.611, 4.007, 4.500, 5.037, 6.194,
           7.413),
    "I8": (2.303, 2.398, 2.565, 2.773, 2.944, 3.091, 3.258, 3.434, 3.584, 3.761, 3.850, 3.892,
           6.525),
    "I9": (2.303, 2.773, 3.219, 3.584, 3.912, 4.234, 4.575, 4.934, 5.380, 5.936, 6.406, 7.273,
           8.900),
    "I10": None,  # no value >= 10 in the sample
    "I11": (2.303, 2.303, 2.398, 2.485, 2.595, 2.708, 2.833, 2.996, 3.178, 3.497, 3.794, 4.094,
            4.369),
    "I12": (2.303, 2.303, 2.322, 2.398, 2.518, 2.773, 2.868, 3.045, 3.303, 3.523, 3.664, 4.470,
            4.585),
    "I13": (2.303, 2.398, 2.485, 2.639, 2.773, 2.944, 3.091, 3.296, 3.526, 3.807, 4.060, 4.840,
            6.646),
}
# Each integer takes its quantile from a row-level "activity" draw with this probability (else
# from its own draw), which correlates the count-like fields as in the real data.
INT_ACTIVITY_SHARE = 0.5

# The planted model. Pairs and triples use fields whose values repeat enough to be learnable.
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
# Inverse CDFs are tabulated (float32) at this many steps and interpolated; small tables stay in
# cache, which matters more than anything else for speed.
QUANTILE_GRID = 1 << 11
# label, 13 x (tab, sign, 8 digits), 26 x (tab, 8 hex digits), newline
MAX_ROW_BYTES = 1 + schema.NUM_INT_FIELDS * 10 + schema.NUM_CAT_FIELDS * 9 + 1

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FILE_KEYS = {"train": 1, "test": 2}
_FIELD_INDEX = {name: f for f, name in enumerate(schema.FIELD_NAMES)}
NUM_FIELDS, NUM_INT_FIELDS, NUM_CAT_FIELDS = (schema.NUM_FIELDS, schema.NUM_INT_FIELDS,
                                              schema.NUM_CAT_FIELDS)
_SHARE_THRESHOLD = np.uint64(round(INT_ACTIVITY_SHARE * 256))  # compared with 8 random bits
_GROUPS = tuple(MISSING_GROUPS)
_BLANK_SOURCE = _FIELD_INDEX["I8"]  # rows missing the rarest-missing field are blank rows
_MISSING_ID = np.uint64(_MASK64)  # the value id hashed into a missing categorical's table index
_LOW_32_BITS = np.uint64(0xFFFFFFFF)
KERNEL_BLOCK_ROWS = 4096  # rows per parallel task of the kernels
# Text lookup tables: 4 hex digits of every 16-bit value, 2 decimal digits of 0..99.
_HEX_QUADS = np.frombuffer("".join(f"{value:04x}" for value in range(1 << 16)).encode(),
                           dtype=np.uint8).reshape(-1, 4)
_DIGIT_PAIRS = np.frombuffer("".join(f"{value:02d}" for value in range(100)).encode(),
                             dtype=np.uint8).reshape(-1, 2)
_POWERS_OF_TEN = np.array([10 ** k for k in range(9)], dtype=np.int64)


def _mix_int(*values: int) -> int:
    """64-bit mix of Python ints (murmur3 finaliser per value), for stream keys."""
    state = 0
    for value in values:
        state = (state ^ (value & _MASK64)) * _GOLDEN & _MASK64
        state ^= state >> 33
        state = state * 0xFF51AFD7ED558CCD & _MASK64
        state ^= state >> 33
        state = state * 0xC4CEB9FE1A85EC53 & _MASK64
        state ^= state >> 33
    return state


def _key(*parts) -> np.uint64:
    return np.uint64(_mix_int(*(part if isinstance(part, int) else _mix_int(*part.encode())
                                for part in parts)))


# ---------------------------------------------------------------- value laws

def _law_mass(x, exponent, offset, head_ranks, tail_scale):
    """Unnormalised mass of ranks below position x under the two-piece Zipf-Mandelbrot law."""
    power, sign = 1.0 - exponent, np.sign(1.0 - exponent)
    head = (np.minimum(x, head_ranks) + offset) ** power - offset ** power
    tail = (np.maximum(x, head_ranks) + offset) ** power - (head_ranks + offset) ** power
    return sign * (head + tail_scale * tail)


def _law_inverse(uniform: np.ndarray, field: str) -> np.ndarray:
    """Continuous rank position (float64) below which a share `uniform` of the mass lies."""
    exponent, offset, head_ranks, tail_scale, support = CAT_VALUE_LAWS[field]
    power, sign = 1.0 - exponent, np.sign(1.0 - exponent)
    head_mass = _law_mass(head_ranks, exponent, offset, head_ranks, tail_scale)
    mass = uniform * _law_mass(support, exponent, offset, head_ranks, tail_scale)
    level = np.where(mass < head_mass, offset ** power + sign * mass,
                     (head_ranks + offset) ** power + sign * (mass - head_mass) / tail_scale)
    return np.minimum(level ** (1.0 / power) - offset, support)


def rank_probabilities(field: str, ranks: np.ndarray) -> np.ndarray:
    """Probability of each popularity rank (0 = most common) of categorical `field` (day 0)."""
    law = CAT_VALUE_LAWS[field]
    ranks = np.asarray(ranks, dtype=np.float64)
    total = _law_mass(law[4], *law[:4])
    return (_law_mass(ranks + 1, *law[:4]) - _law_mass(ranks, *law[:4])) / total


def _int_inverse(uniform: np.ndarray, field: str) -> np.ndarray:
    """Inverse CDF of an integer field (float64): steps over the small values, then a continuous
    log-quantile curve; its floor is the integer."""
    probabilities = np.array(INT_SMALL_PROBABILITIES[field], dtype=np.float64)
    tail = INT_TAIL_LOG_QUANTILES[field]
    if tail is None:
        probabilities /= probabilities.sum()
    cumulative = np.cumsum(probabilities)
    index = np.minimum(np.searchsorted(cumulative, uniform, side="right"), len(cumulative) - 1)
    values = np.array(INT_SMALL_VALUES, dtype=np.float64)[index]
    if tail is not None:
        small_mass = cumulative[-1]
        within = np.clip((uniform - small_mass) / (1.0 - small_mass), 0.0, 1.0)
        values = np.where(uniform >= small_mass,
                          np.exp(np.interp(within, INT_TAIL_QUANTILES, tail)), values)
    return values


def int_max_value(field: str) -> int:
    return int(_int_inverse(np.array([1.0]), field)[0])


def _bucket_of(values: np.ndarray) -> np.ndarray:
    """The winners' integer keys as ids < TABLE_SIZE: v + 4 for v <= 2, else 7 + floor(ln(v)^2)
    (0 is kept for missing)."""
    logs = np.log(np.maximum(values, 3).astype(np.float64))
    return np.where(values <= 2, values + 4, 7 + (logs * logs).astype(np.int64))


def _bucket_levels(field: str) -> np.ndarray:
    """float64 [TABLE_SIZE]: standardised ln(1 + value) of each integer bucket, 0 if missing."""
    buckets = np.arange(TABLE_SIZE)
    levels = np.where(buckets >= 7, np.sqrt(np.maximum(buckets - 6.5, 0)),
                      np.log1p(np.clip(buckets - 4, 0, None)))
    grid = (np.arange(4096) + 0.5) / 4096
    typical = levels[_bucket_of(np.floor(_int_inverse(grid, field)).astype(np.int64))]
    standardised = (levels - typical.mean()) / (typical.std() or 1.0)
    standardised[0] = 0.0
    return standardised


# ---------------------------------------------------------------- the planted model

class _Model(typing.NamedTuple):
    """Everything the row kernel reads for one seed and file. Per-value parameters are table rows
    indexed by the top TABLE_BITS of a categorical's token or by an integer's bucket, so the truth
    is a function of the visible row and its day."""
    cat_keys: np.ndarray  # uint64 [26] stream keys of the categorical draws
    int_keys: np.ndarray  # uint64 [13]
    group_keys: np.ndarray  # uint64 [groups] missing-value draws
    row_keys: np.ndarray  # uint64 [2]: the "activity" draw, the label draw
    field_group: np.ndarray  # int64 [39], -1 = never missing
    field_threshold: np.ndarray  # uint64 [39]: missing when the group's bits are below
    blank_field: np.ndarray  # bool [39]: also missing in blank rows
    cat_quantiles: np.ndarray  # float32 [26, QUANTILE_GRID + 1] rank positions (inverse CDFs)
    cat_support: np.ndarray  # int64 [26]
    shuffle_keys: np.ndarray  # uint64 [26] drift permutation keys
    value_keys: np.ndarray  # uint64 [26] value id -> token hash keys
    int_quantiles: np.ndarray  # float32 [13, QUANTILE_GRID + 1] values + 3 (inverse CDFs)
    int_max: np.ndarray  # int64 [13]
    bucket_table: np.ndarray  # uint8 [largest value + 4]: bucket of every value from -3
    weights: np.ndarray  # float32 [39, TABLE_SIZE, 2]: first-order weight, its change per day
    pair_fields: np.ndarray  # int64 [pairs, 2]
    pair_scales: np.ndarray  # float64 [pairs]: strength / sqrt(LATENT_DIM)
    pair_vectors: np.ndarray  # float32 [pairs, 2, TABLE_SIZE, LATENT_DIM]
    triple_fields: np.ndarray  # int64 [triples, 3]
    triple_strengths: np.ndarray  # float64 [triples]
    triple_factors: np.ndarray  # float32 [triples, 3, TABLE_SIZE]


@functools.cache
def _value_tables() -> dict:
    """Seed-independent tables: inverse CDFs, missing-value layout, integer buckets."""
    grid = np.linspace(0.0, 1.0, QUANTILE_GRID + 1)
    int_max = np.array([int_max_value(name) for name in schema.INT_NAMES])
    field_group = np.full(schema.NUM_FIELDS, -1)
    field_threshold = np.zeros(schema.NUM_FIELDS, dtype=np.uint64)
    buckets = _bucket_of(np.arange(-3, int_max.max() + 1))
    if buckets.max() >= TABLE_SIZE:
        raise ValueError(f"integer buckets reach {buckets.max()}: TABLE_SIZE must exceed it")
    for g, rates in enumerate(MISSING_GROUPS.values()):
        for name, rate in rates.items():
            field_group[_FIELD_INDEX[name]] = g
            field_threshold[_FIELD_INDEX[name]] = int(rate * 2.0 ** 64)
    return {
        "field_group": field_group, "field_threshold": field_threshold,
        "blank_field": np.isin(schema.FIELD_NAMES, BLANK_ROW_FIELDS),
        "cat_quantiles": np.stack([_law_inverse(grid, name)
                                   for name in schema.CAT_NAMES]).astype(np.float32),
        "cat_support": np.array([CAT_VALUE_LAWS[name][4] for name in schema.CAT_NAMES]),
        "int_quantiles": np.stack([_int_inverse(grid, name) + 3.0
                                   for name in schema.INT_NAMES]).astype(np.float32),
        "int_max": int_max,
        "bucket_table": buckets.astype(np.uint8),
    }


@functools.cache
def _planted(seed: int) -> dict:
    """The seed's label-model parameters (first order, pairs, triples)."""
    rng = np.random.default_rng([seed, 7])
    scales = rng.uniform(*FIRST_ORDER_SCALE, size=schema.NUM_FIELDS)
    weights = rng.standard_normal((schema.NUM_FIELDS, TABLE_SIZE)) * scales[:, None]
    drift = (rng.standard_normal((schema.NUM_FIELDS, TABLE_SIZE)) * scales[:, None]
             * WEIGHT_DRIFT_SCALE / TRAIN_DAYS)
    slopes = rng.standard_normal(schema.NUM_INT_FIELDS) * INT_TREND_SCALE
    for j, name in enumerate(schema.INT_NAMES):
        weights[j] = INT_NOISE_SHARE * weights[j] + slopes[j] * _bucket_levels(name)
    pair_strengths = rng.uniform(*PAIR_STRENGTH, size=len(PLANTED_PAIRS))
    return {
        "weights": np.stack([weights, drift], axis=2).astype(np.float32),
        "pair_fields": np.array([[_FIELD_INDEX[name] for name in pair] for pair in PLANTED_PAIRS]),
        "pair_strengths": pair_strengths,
        "pair_scales": pair_strengths / np.sqrt(LATENT_DIM),
        "pair_vectors": rng.standard_normal(
            (len(PLANTED_PAIRS), 2, TABLE_SIZE, LATENT_DIM)).astype(np.float32),
        "triple_fields": np.array([[_FIELD_INDEX[name] for name in triple]
                                   for triple in PLANTED_TRIPLES]),
        "triple_strengths": rng.uniform(*TRIPLE_STRENGTH, size=len(PLANTED_TRIPLES)),
        "triple_factors": rng.standard_normal(
            (len(PLANTED_TRIPLES), 3, TABLE_SIZE)).astype(np.float32),
    }


def _model(seed: int, file: str) -> _Model:
    """Kernel inputs; the stream keys differ per file so train and test rows differ."""
    file_key = _FILE_KEYS[file]
    planted = _planted(seed)
    return _Model(
        cat_keys=np.array([_key(seed, file_key, name) for name in schema.CAT_NAMES]),
        int_keys=np.array([_key(seed, file_key, name) for name in schema.INT_NAMES]),
        group_keys=np.array([_key(seed, file_key, "missing " + group) for group in _GROUPS]),
        row_keys=np.array([_key(seed, file_key, "activity"), _key(seed, file_key, "label")]),
        shuffle_keys=np.array([_key(seed, "shuffle", name) for name in schema.CAT_NAMES]),
        value_keys=np.array([_key(seed, "value", name) for name in schema.CAT_NAMES]),
        **_value_tables(),
        **{name: planted[name] for name in ("weights", "pair_fields", "pair_scales",
                                            "pair_vectors", "triple_fields", "triple_strengths",
                                            "triple_factors")})


# ---------------------------------------------------------------- the row kernel

@numba.njit(cache=True, inline="always")
def _mix(x):
    """murmur3 finaliser of a uint64."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@numba.njit(cache=True, inline="always")
def _unit(bits):
    """float64 in [0, 1) from the top 53 bits."""
    return np.float64(bits >> np.uint64(11)) * 2.0 ** -53


@numba.njit(cache=True, inline="always")
def _interpolate(tables, field, uniform):
    """Linear interpolation (float64) of tabulated inverse CDF `field` ([fields, grid + 1])."""
    scaled = uniform * QUANTILE_GRID
    cell = np.int64(scaled)
    low = np.float64(tables[field, cell])
    return low + (scaled - cell) * (tables[field, cell + 1] - low)


@numba.njit(cache=True, inline="always")
def _octave_shuffle(rank, key, support):
    """Bijection on ranks [0, support) that keeps each in its octave [2^k - 1, 2^(k+1) - 1): bit i
    of rank + 1 flips where bit i + 1 is set and bit i of `key` is set (invertible from the top
    bit down); results past the support walk the cycle on. Popularity changes at most by the
    ratio between the octave's ends; the top rank stays."""
    position = np.uint64(rank + 1)
    while True:
        position ^= key & (position >> np.uint64(1))
        if position <= np.uint64(support):
            return np.int64(position) - 1


@numba.njit(cache=True, inline="always")
def _planted_logit(index, day, weights, pair_fields, pair_scales, pair_vectors, triple_fields,
                   triple_strengths, triple_factors):
    """Bias-free logit of one row from its table indices [39]: first order (with its drift)
    + pairwise + 3-way terms."""
    total = 0.0
    change = 0.0
    for f in range(NUM_FIELDS):
        total += weights[f, index[f], 0]
        change += weights[f, index[f], 1]
    total += change * (day - TRAIN_DAYS / 2)
    for p in range(len(pair_fields)):
        left, right = index[pair_fields[p, 0]], index[pair_fields[p, 1]]
        dot = 0.0
        for k in range(LATENT_DIM):
            dot += pair_vectors[p, 0, left, k] * pair_vectors[p, 1, right, k]
        total += pair_scales[p] * dot
    for t in range(len(triple_fields)):
        product = triple_strengths[t]
        for side in range(3):
            product *= triple_factors[t, side, index[triple_fields[t, side]]]
        total += product
    return total


@numba.njit(cache=True, nogil=True, parallel=True)
def _sample_kernel(rows, file_rows, first_day, model, ints, int_missing, tokens, cat_missing,
                   logits, label_uniforms):
    """Draws rows `rows` (int64 [n]) of a file: fills ints [n, 13], tokens [n, 26], their
    missing masks, the bias-free logits [n] and the label draws [n]. Blocks of rows run in
    parallel; every row depends only on its index, so the result does not."""
    # Arrays leave the tuple once: attribute access inside the loop costs reference counting.
    group_keys, field_group = model.group_keys, model.field_group
    field_threshold, blank_field = model.field_threshold, model.blank_field
    row_keys, int_keys, cat_keys = model.row_keys, model.int_keys, model.cat_keys
    int_quantiles, int_max, bucket_table = model.int_quantiles, model.int_max, model.bucket_table
    cat_quantiles, cat_support = model.cat_quantiles, model.cat_support
    shuffle_keys, value_keys = model.shuffle_keys, model.value_keys
    weights, pair_fields, pair_scales = model.weights, model.pair_fields, model.pair_scales
    pair_vectors, triple_fields, triple_strengths, triple_factors = (
        model.pair_vectors, model.triple_fields, model.triple_strengths, model.triple_factors)
    for block in numba.prange((len(rows) + KERNEL_BLOCK_ROWS - 1) // KERNEL_BLOCK_ROWS):
        missing = np.empty(NUM_FIELDS, dtype=np.bool_)
        index = np.empty(NUM_FIELDS, dtype=np.int64)
        group_bits = np.empty(len(group_keys), dtype=np.uint64)
        for i in range(block * KERNEL_BLOCK_ROWS, min((block + 1) * KERNEL_BLOCK_ROWS, len(rows))):
            base = np.uint64(rows[i]) * np.uint64(_GOLDEN)
            day = (rows[i] + 0.5) / file_rows * TRAIN_DAYS + first_day
            for g in range(len(group_keys)):
                group_bits[g] = _mix(base + group_keys[g])
            for f in range(NUM_FIELDS):
                missing[f] = field_group[f] >= 0 and group_bits[field_group[f]] < field_threshold[f]
            if missing[_BLANK_SOURCE]:
                for f in range(NUM_FIELDS):
                    missing[f] = missing[f] or blank_field[f]
            activity = _unit(_mix(base + row_keys[0]))
            for j in range(NUM_INT_FIELDS):
                bits = _mix(base + int_keys[j])
                uniform = activity if (bits & np.uint64(255)) < _SHARE_THRESHOLD else _unit(bits)
                value = min(np.int64(_interpolate(int_quantiles, j, uniform)) - 3, int_max[j])
                ints[i, j] = value
                int_missing[i, j] = missing[j]
                index[j] = 0 if missing[j] else bucket_table[value + 3]
            drift_threshold = np.uint64(day * (2048 / (TRAIN_DAYS + 1)))
            for j in range(NUM_CAT_FIELDS):
                field = NUM_INT_FIELDS + j
                bits = _mix(base + cat_keys[j])
                position = _interpolate(cat_quantiles, j, _unit(bits))
                rank = min(np.int64(position), cat_support[j] - 1)
                if (bits & np.uint64(2047)) < drift_threshold:
                    rank = _octave_shuffle(rank, shuffle_keys[j], cat_support[j])
                value_id = _MISSING_ID if missing[field] else np.uint64(rank)
                token = _mix(value_id * np.uint64(_GOLDEN) + value_keys[j]) & _LOW_32_BITS
                tokens[i, j] = token
                cat_missing[i, j] = missing[field]
                index[field] = np.int64(token >> np.uint64(32 - TABLE_BITS))
            logits[i] = _planted_logit(index, day, weights, pair_fields, pair_scales,
                                       pair_vectors, triple_fields, triple_strengths,
                                       triple_factors)
            label_uniforms[i] = _unit(_mix(base + row_keys[1]))


@dataclasses.dataclass
class _Rows:
    ints: np.ndarray  # int64 [n, 13]
    int_missing: np.ndarray  # bool [n, 13]
    tokens: np.ndarray  # uint32 [n, 26], the hex values
    cat_missing: np.ndarray  # bool [n, 26]
    logits: np.ndarray  # float64 [n], bias excluded
    label_uniforms: np.ndarray  # float64 [n]
    days: np.ndarray  # float64 [n]


def _sample_rows(model: _Model, file: str, rows: np.ndarray, file_rows: int) -> _Rows:
    """Values, bias-free logits and label draws of the given row indices of one file."""
    count = len(rows)
    first_day = TRAIN_DAYS if file == "test" else 0
    sample = _Rows(np.empty((count, NUM_INT_FIELDS), np.int64),
                   np.empty((count, NUM_INT_FIELDS), np.bool_),
                   np.empty((count, NUM_CAT_FIELDS), np.uint32),
                   np.empty((count, NUM_CAT_FIELDS), np.bool_),
                   np.empty(count), np.empty(count),
                   (rows + 0.5) / file_rows * TRAIN_DAYS + first_day)
    _sample_kernel(rows, file_rows, first_day, model, sample.ints, sample.int_missing,
                   sample.tokens, sample.cat_missing, sample.logits, sample.label_uniforms)
    return sample


def _bias_wave(days: np.ndarray) -> np.ndarray:
    return BIAS_WAVE * np.sin(2 * np.pi * days / TRAIN_DAYS)


def _solve_bias(model: _Model, train_rows: int) -> float:
    """Base logit that gives TARGET_CLICK_RATE on a strided subset of the train rows."""
    rows = np.unique(np.linspace(0, train_rows - 1, min(PILOT_ROWS, train_rows)).astype(np.int64))
    sample = _sample_rows(model, "train", rows, train_rows)
    logits = sample.logits + _bias_wave(sample.days)
    return scipy.optimize.brentq(
        lambda bias: np.mean(scipy.special.expit(logits + bias)) - TARGET_CLICK_RATE, -20.0, 20.0)


# ---------------------------------------------------------------- text

@numba.njit(cache=True, inline="always", error_model="numpy")
def _write_decimal(out, position, value):
    """Writes int64 `value` (|value| < 10^8) in decimal at `position`, two digits per division;
    returns the end."""
    if value < 0:
        out[position] = 45  # '-'
        position += 1
        value = -value
    digits = 1
    while digits < 8 and value >= _POWERS_OF_TEN[digits]:
        digits += 1
    end = position + digits
    while value >= 100:
        quotient = value // 100
        pair = value - quotient * 100
        out[end - 2] = _DIGIT_PAIRS[pair, 0]
        out[end - 1] = _DIGIT_PAIRS[pair, 1]
        end -= 2
        value = quotient
    if value >= 10:
        out[end - 2] = _DIGIT_PAIRS[value, 0]
        out[end - 1] = _DIGIT_PAIRS[value, 1]
    else:
        out[end - 1] = 48 + value
    return position + digits


@numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _format_kernel(labels, ints, int_missing, tokens, cat_missing, out, lengths):
    """Writes rows as raw Criteo TSV, block b of KERNEL_BLOCK_ROWS rows from byte
    b * KERNEL_BLOCK_ROWS * MAX_ROW_BYTES of `out`, its length in lengths[b]. `labels` is empty
    for test rows."""
    has_labels = len(labels) > 0
    for block in numba.prange(len(lengths)):
        first = block * KERNEL_BLOCK_ROWS
        position = first * MAX_ROW_BYTES
        for i in range(first, min(first + KERNEL_BLOCK_ROWS, len(ints))):
            if has_labels:
                out[position] = 48 + labels[i]
                position += 1
            for j in range(NUM_INT_FIELDS):
                if has_labels or j > 0:
                    out[position] = 9
                    position += 1
                if not int_missing[i, j]:
                    position = _write_decimal(out, position, ints[i, j])
            for j in range(NUM_CAT_FIELDS):
                out[position] = 9
                position += 1
                if not cat_missing[i, j]:
                    high, low = tokens[i, j] >> 16, tokens[i, j] & 0xFFFF
                    for k in range(4):
                        out[position + k] = _HEX_QUADS[high, k]
                        out[position + 4 + k] = _HEX_QUADS[low, k]
                    position += 8
            out[position] = 10
            position += 1
        lengths[block] = position - first * MAX_ROW_BYTES


def _format_blocks(labels, ints, int_missing, tokens, cat_missing) -> list[np.ndarray]:
    """The rows' text as consecutive uint8 pieces (see format_rows)."""
    if len(ints) and np.abs(ints).max() >= 10 ** 8:
        raise ValueError("format_rows: integers must have at most 8 digits")
    out = np.empty(len(ints) * MAX_ROW_BYTES, dtype=np.uint8)
    lengths = np.empty((len(ints) + KERNEL_BLOCK_ROWS - 1) // KERNEL_BLOCK_ROWS, dtype=np.int64)
    labels = np.empty(0, np.uint8) if labels is None else labels.astype(np.uint8)
    _format_kernel(labels, np.asarray(ints, np.int64), int_missing, np.asarray(tokens, np.uint32),
                   cat_missing, out, lengths)
    block_bytes = KERNEL_BLOCK_ROWS * MAX_ROW_BYTES
    return [out[b * block_bytes:b * block_bytes + length] for b, length in enumerate(lengths)]


def format_rows(labels: np.ndarray | None, ints: np.ndarray, int_missing: np.ndarray,
                tokens: np.ndarray, cat_missing: np.ndarray) -> bytes:
    """Raw Criteo TSV bytes for n rows: [label \\t] I1..I13 \\t C1..C26 \\n.

    labels: uint8 [n] or None (test rows); ints: int64 [n, 13] with |value| < 10^8;
    tokens: uint32 [n, 26] (8 hex digits); int_missing / cat_missing: bool, True = empty field.
    """
    return b"".join(_format_blocks(labels, ints, int_missing, tokens, cat_missing))


# ---------------------------------------------------------------- files and scores

class _Scores:
    """Click rate, Bayes logloss (all rows) and AUC (at most AUC_MAX_ROWS strided rows) of the
    train rows [start, stop)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop
        self.stride = -(-(stop - start) // AUC_MAX_ROWS)
        self.rows = self.positives = 0
        self.truth_sum = self.loss_sum = 0.0
        self.sampled_truth, self.sampled_labels = [], []

    def add(self, first_row: int, truth: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.metrics import log_loss
        low, high = max(self.start - first_row, 0), min(self.stop - first_row, len(truth))
        if low >= high:
            return
        truth, labels = truth[low:high], labels[low:high]
        self.rows += len(truth)
        self.positives += int(labels.sum())
        self.truth_sum += float(truth.sum(dtype=np.float64))
        self.loss_sum += log_loss(labels, truth.astype(np.float64), normalize=False, labels=[0, 1])
        offset = (-(first_row + low - self.start)) % self.stride
        self.sampled_truth.append(truth[offset::self.stride].copy())  # copies free the chunk
        self.sampled_labels.append(labels[offset::self.stride].copy())

    def summary(self) -> dict:
        from sklearn.metrics import roc_auc_score
        labels = np.concatenate(self.sampled_labels)
        auc = (float(roc_auc_score(labels, np.concatenate(self.sampled_truth)))
               if 0 < labels.sum() < len(labels) else None)
        return {"rows": self.rows, "click_rate": self.positives / self.rows,
                "mean_truth": self.truth_sum / self.rows,
                "bayes_logloss": self.loss_sum / self.rows, "bayes_auc": auc,
                "auc_rows": len(labels)}


def _write_file(model: _Model, bias: float, file: str, rows: int, chunk_rows: int,
                text_path: Path, truth_path: Path, scores: list[_Scores]) -> None:
    """Streams one file (text + truth) chunk by chunk; train chunks also feed `scores`."""
    with open(text_path, "wb") as text, open(truth_path, "wb") as truth_file:
        np.lib.format.write_array_header_1_0(
            truth_file, {"descr": "<f4", "fortran_order": False, "shape": (rows,)})
        for start in range(0, rows, chunk_rows):
            row_ids = np.arange(start, min(start + chunk_rows, rows), dtype=np.int64)
            sample = _sample_rows(model, file, row_ids, rows)
            logits = sample.logits + bias + _bias_wave(sample.days)
            truth = scipy.special.expit(logits).astype(np.float32)
            labels = None
            if file == "train":
                labels = (sample.label_uniforms < truth).astype(np.uint8)
                for score in scores:
                    score.add(start, truth, labels)
            text.writelines(_format_blocks(labels, sample.ints, sample.int_missing,
                                           sample.tokens, sample.cat_missing))
            truth_file.write(truth.tobytes())


def _planted_summary(seed: int, bias: float) -> dict:
    planted = _planted(seed)
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


def generate(out_dir, train_rows: int, test_rows: int, seed: int = DEFAULT_SEED,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """Writes train.txt, test.txt, {train,test}.truth.npy and truth.json into `out_dir`.

    Every file is written under a temporary name and renamed once all are complete. Prints the
    click rates and Bayes scores and returns the truth summary (the content of truth.json).
    """
    if train_rows < 7 or test_rows < 1 or chunk_rows < 1:
        raise ValueError(f"synthetic data needs train_rows >= 7 (got {train_rows}), test_rows >= 1 "
                         f"(got {test_rows}) and chunk_rows >= 1 (got {chunk_rows})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_model, test_model = _model(seed, "train"), _model(seed, "test")
    bias = _solve_bias(train_model, train_rows)
    names = ("train.txt", "train.truth.npy", "test.txt", "test.truth.npy", "truth.json")
    temporary = {name: out_dir / f".{name}.tmp-{os.getpid()}" for name in names}
    try:
        valid_start = train_rows - round(train_rows * VALID_FRACTION)
        scores = [_Scores(0, train_rows), _Scores(valid_start, train_rows)]
        _write_file(train_model, bias, "train", train_rows, chunk_rows, temporary["train.txt"],
                    temporary["train.truth.npy"], scores)
        _write_file(test_model, bias, "test", test_rows, chunk_rows, temporary["test.txt"],
                    temporary["test.truth.npy"], [])
        test_truth = np.load(temporary["test.truth.npy"], mmap_mode="r")
        test_mean = float(np.mean(test_truth, dtype=np.float64))
        summary = {
            "generator": "preprocessing/synthetic.py", "seed": seed,
            "rows": {"train": train_rows, "test": test_rows},
            "target_click_rate": TARGET_CLICK_RATE,
            "bayes": {"train": scores[0].summary(), "valid": scores[1].summary(),
                      "test": {"rows": test_rows, "mean_truth": test_mean}},
            "planted": _planted_summary(seed, bias),
        }
        temporary["truth.json"].write_text(json.dumps(summary, indent=1) + "\n")
        for name in names:
            os.replace(temporary[name], out_dir / name)
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
    print(describe(summary))
    return summary


def describe(summary: dict) -> str:
    """Two lines: click rate and Bayes logloss/AUC of train and valid."""
    lines = []
    for split in ("train", "valid"):
        scores = summary["bayes"][split]
        auc = "n/a (one class)" if scores["bayes_auc"] is None else f"{scores['bayes_auc']:.4f}"
        lines.append(f"  {split}: {scores['rows']:,} rows, click rate {scores['click_rate']:.4f}, "
                     f"Bayes logloss {scores['bayes_logloss']:.4f}, Bayes AUC {auc}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--test-rows", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    args = parser.parse_args(argv)
    generate(args.out, args.train_rows, args.test_rows, args.seed, args.chunk_rows)
    print(f"wrote {args.out}/train.txt, test.txt and truth files (seed {args.seed})")


if __name__ == "__main__":
    main()
