"""Open-addressing hash tables in numba: value counting (int64 -> int32) and code -> id lookup.

Why not a Python dict: the full training split holds ~30M distinct (field, value) pairs and 1.8G
cells; a numba table counts and looks them up at tens of millions per second in a few hundred MB.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_EMPTY = np.iinfo(np.int64).min  # never a parser code (INT_MISSING is -2^62)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(key, mask):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(24)) & mask


@numba.njit(cache=True, nogil=True, inline="always")
def _probe(keys, base, mask, code):
    """The index of `code` in the table at keys[base: base + mask + 1], or of the empty slot where
    it belongs (linear probing)."""
    slot = _slot(code, mask)
    while keys[base + slot] != _EMPTY and keys[base + slot] != code:
        slot = (slot + 1) & mask
    return base + slot


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
        slot = _probe(keys, 0, mask, code)
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
        slot = _probe(keys, 0, mask, code)
        keys[slot] = code
        values[slot] = new_values[index]


@numba.njit(cache=True, nogil=True)
def _values_of(keys, values, wanted, out):
    """out[i] = the value of key wanted[i] (every one in the table)."""
    mask = len(keys) - 1
    for index in range(len(wanted)):
        out[index] = values[_probe(keys, 0, mask, wanted[index])]


# Rows per batch of _lookup_rows, and the table size (slots of 16 bytes: 512 KB) from which probes
# miss the caches: the first slots that a batch probes in large tables are loaded together first.
_BATCH_ROWS = 128
_LARGE_TABLE = 1 << 15


@numba.njit(cache=True, nogil=True, inline="always")
def _touch(keys, bases, masks, fields, codes, begin, end):
    """Loads the first probed slot of `fields` for rows [begin, end): independent loads that the
    CPU overlaps, where a probe loop waits for each miss in turn (25% of the lookup time)."""
    touched = np.int64(0)
    for row in range(begin, end):
        for field in fields:
            touched ^= keys[bases[field] + _slot(codes[row, field], masks[field])]
    return touched


@numba.njit(cache=True, nogil=True, parallel=True)
def _lookup_rows(tables, rare_sets, large, codes, offsets, seen_rows, rare_id, unseen_id, out):
    """out[r, f] = offsets[f] + the value of codes[r, f] in field f's table; for a code not there:
    rare_id when row r < seen_rows (its values were all counted) or the code is in field f's rare
    set, else unseen_id. Row-major, as the codes are laid out, in batches of rows whose probes of
    the `large` fields' tables are prefetched. Returns what the prefetching loads read (so that
    they are kept)."""
    keys, values, bases, masks = tables
    rare_keys, rare_bases, rare_masks = rare_sets
    batches = (codes.shape[0] + _BATCH_ROWS - 1) // _BATCH_ROWS
    touched = np.zeros(batches, dtype=np.int64)
    for batch in numba.prange(batches):
        begin = batch * _BATCH_ROWS
        end = min(begin + _BATCH_ROWS, codes.shape[0])
        touched[batch] = _touch(keys, bases, masks, large, codes, begin, end)
        for row in range(begin, end):
            for field in range(codes.shape[1]):
                code = codes[row, field]
                slot = _probe(keys, bases[field], masks[field], code)
                if keys[slot] == code:
                    value = values[slot]
                elif row < seen_rows or rare_keys[
                        _probe(rare_keys, rare_bases[field], rare_masks[field], code)] == code:
                    value = rare_id
                else:
                    value = unseen_id
                out[row, field] = offsets[field] + value
    return touched


def _capacity(entries: int, minimum: int = 1 << 16) -> int:
    return max(minimum, 1 << int(2 * max(entries, 1) - 1).bit_length())  # load factor <= 1/2


class CodeTable:
    """A growing int64 -> int32 counter."""

    def __init__(self, expected: int = 0):
        self.keys = np.full(_capacity(expected), _EMPTY, dtype=np.int64)
        self.values = np.zeros(len(self.keys), dtype=np.int32)
        self.size = 0

    def count(self, codes: np.ndarray) -> None:
        """Adds one occurrence per element of `codes`."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        done, self.size = _add(self.keys, self.values, codes, 0, self.size)
        while done < len(codes):
            self._grow(2 * self.size)
            done, self.size = _add(self.keys, self.values, codes, done, self.size)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) sorted by key."""
        # np.sort is SIMD and 10x faster than argsort; the values are then probed for.
        keys = np.sort(self.keys[self.keys != _EMPTY])
        values = np.empty(len(keys), dtype=np.int32)
        _values_of(self.keys, self.values, keys, values)
        return keys, values

    def _grow(self, entries: int) -> None:
        used = self.keys != _EMPTY
        keys, values = self.keys[used], self.values[used]
        capacity = _capacity(entries)
        self.keys = np.full(capacity, _EMPTY, dtype=np.int64)
        self.values = np.zeros(capacity, dtype=np.int32)
        _insert(self.keys, self.values, keys, values)


def _stack(per_field: list[np.ndarray], values: list[np.ndarray] | None):
    """Per-field hash tables in one array: (keys, values or None, bases, masks). With values, key
    and value share a 16-byte entry (keys and values are strided views of it): a probe then
    misses the cache once, not twice."""
    # As small as the load allows: a lookup touches a random slot, so size is cache misses.
    capacities = np.array([_capacity(len(keys), 16) for keys in per_field], dtype=np.int64)
    bases = np.concatenate([[0], np.cumsum(capacities)[:-1]]).astype(np.int64)
    if values is None:
        keys, stacked = np.full(int(capacities.sum()), _EMPTY, dtype=np.int64), None
    else:
        entries = np.zeros((int(capacities.sum()), 2), dtype=np.int64)
        entries[:, 0] = _EMPTY
        keys, stacked = entries[:, 0], entries[:, 1]

    def insert(field: int) -> None:
        part = slice(bases[field], bases[field] + capacities[field])
        field_keys = np.ascontiguousarray(per_field[field], dtype=np.int64)
        if values is None:  # a set: each key is stored as its own value
            _insert(keys[part], keys[part], field_keys, field_keys)
        else:
            _insert(keys[part], stacked[part], field_keys,
                    np.ascontiguousarray(values[field], dtype=np.int64))

    with ThreadPoolExecutor(2) as pool:  # fields are independent; _insert releases the GIL
        list(pool.map(insert, np.argsort(-capacities, kind="stable")))
    return keys, stacked, bases, capacities - 1


class FieldTables:
    """Per field, a hash table from the value codes that own an id to that id, and a hash set of
    the other (rare) training codes, for mapping chunks of codes to ids in one parallel pass.

    The rare set is probed only for rows outside the training split: all values of a training
    row were counted, so a code missing from its table is rare, never unseen.
    """

    def __init__(self, frequent: list[tuple[np.ndarray, np.ndarray]], rare: list[np.ndarray]):
        """`frequent`: per field (distinct codes, their non-negative int32 ids); `rare`: per field
        the distinct codes of the other training values."""
        self.tables = _stack([codes for codes, _ in frequent], [ids for _, ids in frequent])
        self.large_fields = np.flatnonzero(self.tables[3] + 1 >= _LARGE_TABLE)
        rare_keys, _, rare_bases, rare_masks = _stack(rare, None)
        self.rare_sets = (rare_keys, rare_bases, rare_masks)

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in self.tables + self.rare_sets)

    def lookup_rows(self, codes: np.ndarray, offsets: np.ndarray, seen_rows: int, rare_id: int,
                    unseen_id: int) -> np.ndarray:
        """Codes int64 [rows, fields] -> int32 [rows, fields]: offset + the code's id, or rare_id
        for a rare training value, or unseen_id for a value not seen in training. The first
        `seen_rows` rows are training rows."""
        out = np.empty(codes.shape, dtype=np.int32)
        _lookup_rows(self.tables, self.rare_sets, self.large_fields, codes,
                     np.asarray(offsets, np.int32),
                     seen_rows, np.int32(rare_id), np.int32(unseen_id), out)
        return out
