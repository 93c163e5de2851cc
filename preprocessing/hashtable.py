"""Open-addressing int64 -> int64 hash tables in numba: value counting and code -> id lookup.

Why not a Python dict: the full training split holds ~30M distinct (field, value) pairs and 1.8G
cells; a numba table counts and looks them up at tens of millions per second in a few hundred MB.
"""

from __future__ import annotations

import numba
import numpy as np

_EMPTY = np.iinfo(np.int64).min  # never a parser code (INT_MISSING is -2^62)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(key, mask):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(24)) & mask


@numba.njit(cache=True, nogil=True)
def _add(keys, values, codes, start, size):
    """Adds 1 per code from index `start` on, stopping when the table is half full.

    Returns (index of the first code not added, number of keys in the table).
    """
    mask = len(keys) - 1
    for index in range(start, len(codes)):
        if 2 * size >= len(keys):
            return index, size
        code = codes[index]
        slot = _slot(code, mask)
        while keys[slot] != _EMPTY and keys[slot] != code:
            slot = (slot + 1) & mask
        if keys[slot] == _EMPTY:
            keys[slot] = code
            size += 1
        values[slot] += 1
    return len(codes), size


@numba.njit(cache=True, nogil=True)
def _insert(keys, values, new_keys, new_values):
    mask = len(keys) - 1
    for index in range(len(new_keys)):
        code = new_keys[index]
        slot = _slot(code, mask)
        while keys[slot] != _EMPTY and keys[slot] != code:
            slot = (slot + 1) & mask
        keys[slot] = code
        values[slot] = new_values[index]


@numba.njit(cache=True, nogil=True, parallel=True)
def _lookup(keys, values, codes, default, out):
    mask = len(keys) - 1
    for index in numba.prange(len(codes)):
        code = codes[index]
        slot = _slot(code, mask)
        while keys[slot] != _EMPTY and keys[slot] != code:
            slot = (slot + 1) & mask
        out[index] = values[slot] if keys[slot] == code else default


def _capacity(entries: int) -> int:
    return max(1 << 16, 1 << int(2 * max(entries, 1) - 1).bit_length())  # load factor <= 1/2


class CodeTable:
    """A growing int64 -> int64 map."""

    def __init__(self, expected: int = 0):
        self.keys = np.full(_capacity(expected), _EMPTY, dtype=np.int64)
        self.values = np.zeros(len(self.keys), dtype=np.int64)
        self.size = 0

    @classmethod
    def from_items(cls, keys: np.ndarray, values: np.ndarray) -> CodeTable:
        """A table mapping each of the distinct `keys` to its value."""
        table = cls(len(keys))
        _insert(table.keys, table.values, np.ascontiguousarray(keys, dtype=np.int64),
                np.ascontiguousarray(values, dtype=np.int64))
        table.size = len(keys)
        return table

    def count(self, codes: np.ndarray) -> None:
        """Adds one occurrence per element of `codes`."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        done, self.size = _add(self.keys, self.values, codes, 0, self.size)
        while done < len(codes):
            self._grow(2 * self.size)
            done, self.size = _add(self.keys, self.values, codes, done, self.size)

    def lookup(self, codes: np.ndarray, default: int) -> np.ndarray:
        out = np.empty(len(codes), dtype=np.int64)
        _lookup(self.keys, self.values, np.ascontiguousarray(codes, dtype=np.int64), default, out)
        return out

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) sorted by key."""
        used = self.keys != _EMPTY
        keys, values = self.keys[used], self.values[used]
        order = np.argsort(keys, kind="stable")
        return keys[order], values[order]

    def _grow(self, entries: int) -> None:
        used = self.keys != _EMPTY
        keys, values = self.keys[used], self.values[used]
        capacity = _capacity(entries)
        self.keys = np.full(capacity, _EMPTY, dtype=np.int64)
        self.values = np.zeros(capacity, dtype=np.int64)
        _insert(self.keys, self.values, keys, values)
