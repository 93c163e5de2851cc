"""The laws of laws.py as distributions: rank probabilities and inverse CDFs (float64 numpy)."""

from __future__ import annotations

import numpy as np

from preprocessing.synthetic import laws


def law_mass(x, exponent, offset, head_ranks, tail_scale):
    """Unnormalised mass of ranks below position x under the two-piece Zipf-Mandelbrot law."""
    power, sign = 1.0 - exponent, np.sign(1.0 - exponent)
    head = (np.minimum(x, head_ranks) + offset) ** power - offset ** power
    tail = (np.maximum(x, head_ranks) + offset) ** power - (head_ranks + offset) ** power
    return sign * (head + tail_scale * tail)


def law_inverse(uniform: np.ndarray, field: str) -> np.ndarray:
    """Continuous rank position (float64) below which a share `uniform` of the mass lies."""
    exponent, offset, head_ranks, tail_scale, support = laws.CAT_VALUE_LAWS[field]
    power, sign = 1.0 - exponent, np.sign(1.0 - exponent)
    head_mass = law_mass(head_ranks, exponent, offset, head_ranks, tail_scale)
    mass = uniform * law_mass(support, exponent, offset, head_ranks, tail_scale)
    level = np.where(mass < head_mass, offset ** power + sign * mass,
                     (head_ranks + offset) ** power + sign * (mass - head_mass) / tail_scale)
    return np.minimum(level ** (1.0 / power) - offset, support)


def rank_probabilities(field: str, ranks: np.ndarray) -> np.ndarray:
    """Probability of each popularity rank (0 = most common) of categorical `field` (day 0)."""
    law = laws.CAT_VALUE_LAWS[field]
    ranks = np.asarray(ranks, dtype=np.float64)
    total = law_mass(law[4], *law[:4])
    return (law_mass(ranks + 1, *law[:4]) - law_mass(ranks, *law[:4])) / total


def int_inverse(uniform: np.ndarray, field: str) -> np.ndarray:
    """Inverse CDF of an integer field (float64): steps over the small values, then a continuous
    log-quantile curve; its floor is the integer."""
    probabilities = np.array(laws.INT_SMALL_PROBABILITIES[field], dtype=np.float64)
    tail = laws.INT_TAIL_LOG_QUANTILES[field]
    if tail is None:
        probabilities /= probabilities.sum()
    cumulative = np.cumsum(probabilities)
    index = np.minimum(np.searchsorted(cumulative, uniform, side="right"), len(cumulative) - 1)
    values = np.array(laws.INT_SMALL_VALUES, dtype=np.float64)[index]
    if tail is not None:
        small_mass = cumulative[-1]
        within = np.clip((uniform - small_mass) / (1.0 - small_mass), 0.0, 1.0)
        values = np.where(uniform >= small_mass,
                          np.exp(np.interp(within, laws.INT_TAIL_QUANTILES, tail)), values)
    return values


def int_max_value(field: str) -> int:
    return int(int_inverse(np.array([1.0]), field)[0])
