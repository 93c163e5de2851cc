"""Categorical value codes hashed into a fixed number of bins per field (`count.max_bins`).

The Criteo 1TB logs hold hundreds of millions of distinct values in their large fields: exact
counts (stage 02) and lookup tables (stage 03) would not fit in memory. Binning the codes of
C1..C26 first bounds both by bins x fields. Stage 02 bins before counting and records the bin
count in count_summary.json; stage 03 reads it from there and bins the same way before lookup.
"""

from __future__ import annotations

import numba
import numpy as np

from preprocessing import parse, schema

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True, parallel=True)
def bin_codes(codes: np.ndarray, bins: int) -> None:
    """Replaces, in place, every categorical code (int64 [rows, 39], columns 13..38) but
    CAT_MISSING by its bin in [0, bins): the top 32 bits of a multiplicative hash of the code,
    scaled to `bins` (a multiply-shift, so any bin count is uniform, not only powers of two)."""
    scale = np.uint64(bins)
    for row in numba.prange(codes.shape[0]):
        for field in range(schema.NUM_INT_FIELDS, codes.shape[1]):
            code = codes[row, field]
            if code != parse.CAT_MISSING:
                high = (np.uint64(code) * _GOLDEN) >> np.uint64(32)
                codes[row, field] = np.int64((high * scale) >> np.uint64(32))

