"""The numba row kernels: draw rows (values, missing masks, planted logits, label draws) and
format them as raw Criteo text, in parallel blocks of rows; numpy passes over 39 columns cost more
than the text itself.

All randomness comes from hashing (seed, file, stream, row index), so a row depends only on its
index: the output does not depend on how rows are chunked or on the number of threads.

The kernels are compiled once and cached, and numba's cache only watches the file a kernel is
in: the compiled code freezes the constants of this file (and schema's field counts, the file
format), never those of laws.py or planted.py, which reach the kernels as data (`KernelInputs`).
The one exception, LATENT_DIM, is repeated here and checked against planted's by kernel_inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import typing

import numba
import numpy as np

from preprocessing import schema
from preprocessing.synthetic import distributions, laws, planted

# Inverse CDFs are tabulated (float32) at this many steps and interpolated; small tables stay in
# cache, which matters more than anything else for speed.
QUANTILE_GRID = 1 << 11
# label, 13 x (tab, sign, 8 digits), 26 x (tab, 8 hex digits), newline
MAX_ROW_BYTES = 1 + schema.NUM_INT_FIELDS * 10 + schema.NUM_CAT_FIELDS * 9 + 1
KERNEL_BLOCK_ROWS = 4096  # rows per parallel task of the kernels
# planted.LATENT_DIM, compiled in: a constant loop bound unrolls the pairs' dot products (about 5%
# of the row kernel's time). kernel_inputs refuses a planted model of another dimension.
LATENT_DIM = 4

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FILE_KEYS = {"train": 1, "test": 2}
NUM_FIELDS, NUM_INT_FIELDS, NUM_CAT_FIELDS = (schema.NUM_FIELDS, schema.NUM_INT_FIELDS,
                                              schema.NUM_CAT_FIELDS)
_MISSING_ID = np.uint64(_MASK64)  # the value id hashed into a missing categorical's table index
_LOW_32_BITS = np.uint64(0xFFFFFFFF)
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


# ---------------------------------------------------------------- kernel inputs

class KernelInputs(typing.NamedTuple):
    """Everything the row kernel reads for one seed and file: stream keys, the tabulated laws and
    the planted model's parameters (see planted.py for their meaning)."""
    first_day: int  # 0 for train, planted.TRAIN_DAYS for test
    train_days: int  # planted.TRAIN_DAYS
    cat_keys: np.ndarray  # uint64 [26] stream keys of the categorical draws
    int_keys: np.ndarray  # uint64 [13]
    group_keys: np.ndarray  # uint64 [groups] missing-value draws
    row_keys: np.ndarray  # uint64 [2]: the "activity" draw, the label draw
    field_group: np.ndarray  # int64 [39], -1 = never missing
    field_threshold: np.ndarray  # uint64 [39]: missing when the group's bits are below
    blank_source: int  # field whose missing value makes a blank row
    blank_field: np.ndarray  # bool [39]: also missing in blank rows
    share_threshold: np.uint64  # an integer uses the activity draw when 8 random bits are below
    cat_quantiles: np.ndarray  # float32 [26, QUANTILE_GRID + 1] rank positions (inverse CDFs)
    cat_support: np.ndarray  # int64 [26]
    shuffle_keys: np.ndarray  # uint64 [26] drift permutation keys
    value_keys: np.ndarray  # uint64 [26] value id -> token hash keys
    token_shift: np.uint64  # a categorical's table index is its token >> token_shift
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
    """Seed-independent inputs: inverse CDFs, missing-value layout, integer buckets."""
    grid = np.linspace(0.0, 1.0, QUANTILE_GRID + 1)
    int_max = np.array([distributions.int_max_value(name) for name in schema.INT_NAMES])
    field_group = np.full(schema.NUM_FIELDS, -1)
    field_threshold = np.zeros(schema.NUM_FIELDS, dtype=np.uint64)
    buckets = planted.bucket_of(np.arange(-3, int_max.max() + 1))
    if buckets.max() >= planted.TABLE_SIZE:
        raise ValueError(f"integer buckets reach {buckets.max()}: TABLE_SIZE must exceed it")
    for g, rates in enumerate(laws.MISSING_GROUPS.values()):
        for name, rate in rates.items():
            field_group[planted.FIELD_INDEX[name]] = g
            field_threshold[planted.FIELD_INDEX[name]] = int(rate * 2.0 ** 64)
    return {
        "train_days": planted.TRAIN_DAYS,
        "field_group": field_group, "field_threshold": field_threshold,
        "blank_source": planted.FIELD_INDEX[laws.BLANK_ROW_SOURCE],
        "blank_field": np.isin(schema.FIELD_NAMES, laws.BLANK_ROW_FIELDS),
        "share_threshold": np.uint64(round(laws.INT_ACTIVITY_SHARE * 256)),
        "cat_quantiles": np.stack([distributions.law_inverse(grid, name)
                                   for name in schema.CAT_NAMES]).astype(np.float32),
        "cat_support": np.array([laws.CAT_VALUE_LAWS[name][4] for name in schema.CAT_NAMES]),
        "token_shift": np.uint64(32 - planted.TABLE_BITS),
        "int_quantiles": np.stack([distributions.int_inverse(grid, name) + 3.0
                                   for name in schema.INT_NAMES]).astype(np.float32),
        "int_max": int_max,
        "bucket_table": buckets.astype(np.uint8),
    }


def kernel_inputs(seed: int, file: str) -> KernelInputs:
    """The row kernel's inputs; the stream keys differ per file so train and test rows differ."""
    if planted.LATENT_DIM != LATENT_DIM:
        raise ValueError(f"planted.LATENT_DIM is {planted.LATENT_DIM} but the row kernel is "
                         f"compiled for {LATENT_DIM}: change kernels.LATENT_DIM too")
    file_key = _FILE_KEYS[file]
    parameters = planted.parameters(seed)
    return KernelInputs(
        first_day=planted.TRAIN_DAYS if file == "test" else 0,
        cat_keys=np.array([_key(seed, file_key, name) for name in schema.CAT_NAMES]),
        int_keys=np.array([_key(seed, file_key, name) for name in schema.INT_NAMES]),
        group_keys=np.array([_key(seed, file_key, "missing " + group)
                             for group in laws.MISSING_GROUPS]),
        row_keys=np.array([_key(seed, file_key, "activity"), _key(seed, file_key, "label")]),
        shuffle_keys=np.array([_key(seed, "shuffle", name) for name in schema.CAT_NAMES]),
        value_keys=np.array([_key(seed, "value", name) for name in schema.CAT_NAMES]),
        **_value_tables(),
        **{name: parameters[name] for name in ("weights", "pair_fields", "pair_scales",
                                               "pair_vectors", "triple_fields",
                                               "triple_strengths", "triple_factors")})


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
def planted_logit(index, day_offset, weights, pair_fields, pair_scales, pair_vectors,
                  triple_fields, triple_strengths, triple_factors):
    """Bias-free logit of one row from its table indices [39] (planted.py's formula): first order
    (its drift times `day_offset`, the day less TRAIN_DAYS / 2) + pairwise + 3-way terms."""
    total = 0.0
    change = 0.0
    for f in range(NUM_FIELDS):
        total += weights[f, index[f], 0]
        change += weights[f, index[f], 1]
    total += change * day_offset
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
def _sample_kernel(rows, file_rows, inputs, ints, int_missing, tokens, cat_missing, logits,
                   label_uniforms):
    """Draws rows `rows` (int64 [n]) of a file: fills ints [n, 13], tokens [n, 26], their
    missing masks, the bias-free logits [n] and the label draws [n]. Blocks of rows run in
    parallel; every row depends only on its index, so the result does not."""
    # Fields leave the tuple once: attribute access inside the loop costs reference counting.
    first_day, train_days = inputs.first_day, inputs.train_days
    group_keys, field_group = inputs.group_keys, inputs.field_group
    field_threshold, blank_field = inputs.field_threshold, inputs.blank_field
    blank_source, share_threshold = inputs.blank_source, inputs.share_threshold
    row_keys, int_keys, cat_keys = inputs.row_keys, inputs.int_keys, inputs.cat_keys
    int_quantiles, int_max = inputs.int_quantiles, inputs.int_max
    bucket_table, token_shift = inputs.bucket_table, inputs.token_shift
    cat_quantiles, cat_support = inputs.cat_quantiles, inputs.cat_support
    shuffle_keys, value_keys = inputs.shuffle_keys, inputs.value_keys
    weights, pair_fields, pair_scales = inputs.weights, inputs.pair_fields, inputs.pair_scales
    pair_vectors, triple_fields, triple_strengths, triple_factors = (
        inputs.pair_vectors, inputs.triple_fields, inputs.triple_strengths, inputs.triple_factors)
    for block in numba.prange((len(rows) + KERNEL_BLOCK_ROWS - 1) // KERNEL_BLOCK_ROWS):
        missing = np.empty(NUM_FIELDS, dtype=np.bool_)
        index = np.empty(NUM_FIELDS, dtype=np.int64)
        group_bits = np.empty(len(group_keys), dtype=np.uint64)
        for i in range(block * KERNEL_BLOCK_ROWS, min((block + 1) * KERNEL_BLOCK_ROWS, len(rows))):
            base = np.uint64(rows[i]) * np.uint64(_GOLDEN)
            day = (rows[i] + 0.5) / file_rows * train_days + first_day
            for g in range(len(group_keys)):
                group_bits[g] = _mix(base + group_keys[g])
            for f in range(NUM_FIELDS):
                missing[f] = field_group[f] >= 0 and group_bits[field_group[f]] < field_threshold[f]
            if missing[blank_source]:
                for f in range(NUM_FIELDS):
                    missing[f] = missing[f] or blank_field[f]
            activity = _unit(_mix(base + row_keys[0]))
            for j in range(NUM_INT_FIELDS):
                bits = _mix(base + int_keys[j])
                uniform = activity if (bits & np.uint64(255)) < share_threshold else _unit(bits)
                value = min(np.int64(_interpolate(int_quantiles, j, uniform)) - 3, int_max[j])
                ints[i, j] = value
                int_missing[i, j] = missing[j]
                index[j] = 0 if missing[j] else bucket_table[value + 3]
            drift_threshold = np.uint64(day * (2048 / (train_days + 1)))
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
                index[field] = np.int64(token >> token_shift)
            logits[i] = planted_logit(index, day - train_days / 2, weights, pair_fields,
                                      pair_scales, pair_vectors, triple_fields, triple_strengths,
                                      triple_factors)
            label_uniforms[i] = _unit(_mix(base + row_keys[1]))


@dataclasses.dataclass
class Rows:
    ints: np.ndarray  # int64 [n, 13]
    int_missing: np.ndarray  # bool [n, 13]
    tokens: np.ndarray  # uint32 [n, 26], the hex values
    cat_missing: np.ndarray  # bool [n, 26]
    logits: np.ndarray  # float64 [n], bias excluded
    label_uniforms: np.ndarray  # float64 [n]
    days: np.ndarray  # float64 [n]


def sample_rows(inputs: KernelInputs, rows: np.ndarray, file_rows: int) -> Rows:
    """Values, bias-free logits and label draws of the given row indices of one file."""
    count = len(rows)
    sample = Rows(np.empty((count, NUM_INT_FIELDS), np.int64),
                  np.empty((count, NUM_INT_FIELDS), np.bool_),
                  np.empty((count, NUM_CAT_FIELDS), np.uint32),
                  np.empty((count, NUM_CAT_FIELDS), np.bool_),
                  np.empty(count), np.empty(count),
                  (rows + 0.5) / file_rows * inputs.train_days + inputs.first_day)
    _sample_kernel(rows, file_rows, inputs, sample.ints, sample.int_missing, sample.tokens,
                   sample.cat_missing, sample.logits, sample.label_uniforms)
    return sample


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


def format_blocks(labels, ints, int_missing, tokens, cat_missing) -> list[np.ndarray]:
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
    return b"".join(format_blocks(labels, ints, int_missing, tokens, cat_missing))
