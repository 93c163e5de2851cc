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


# Rows per block: a block's codes (16384 x 39 x 8 bytes) stay in cache while each field reads
# its column, so the row-major codes are read from memory once, not once per field.
_ROW_BLOCK = 16384


@numba.njit(cache=True, nogil=True)
def _add_fields(keys, values, sizes, codes, fields, starts):
    """Adds 1 per code of codes[starts[i]:, fields[i]] to table i (keys[i], values[i] with
    sizes[i] keys). A table that reaches 2/3 load stops there: starts[i] = the row to resume
    from after growing it; for the others starts[i] = the number of rows."""
    rows = codes.shape[0]
    stopped = np.zeros(len(fields), dtype=np.bool_)
    for block in range(starts.min(), rows, _ROW_BLOCK):
        end = min(block + _ROW_BLOCK, rows)
        for index in range(len(fields)):
            if stopped[index] or starts[index] >= end:
                continue
            table_keys, table_values = keys[index], values[index]
            mask, size, field = len(table_keys) - 1, sizes[index], fields[index]
            for row in range(max(block, starts[index]), end):
                if 3 * size >= 2 * len(table_keys):
                    stopped[index], starts[index] = True, row
                    break
                code = codes[row, field]
                slot = _probe(table_keys, 0, mask, code)
                if table_keys[slot] == _EMPTY:
                    table_keys[slot] = code
                    size += 1
                table_values[slot] += 1
            sizes[index] = size
    for index in range(len(fields)):
        if not stopped[index]:
            starts[index] = rows


@numba.njit(cache=True, nogil=True)
def _insert(keys, values, new_keys, new_values):
    mask = len(keys) - 1
    for index in range(len(new_keys)):
        code = new_keys[index]
        slot = _probe(keys, 0, mask, code)
        keys[slot] = code
        values[slot] = new_values[index]




@numba.njit(cache=True, nogil=True, parallel=True)
def _lookup_rows(tables, rare_sets, codes, offsets, seen_rows, rare_id, unseen_id, out):
    """out[r, f] = offsets[f] + the value of codes[r, f] in field f's table; for a code not there:
    rare_id when row r < seen_rows (its values were all counted) or the code is in field f's rare
    set, else unseen_id. Row-major, as the codes are laid out."""
    keys, values, bases, masks = tables
    rare_keys, rare_bases, rare_masks = rare_sets
    for row in numba.prange(codes.shape[0]):
        for field in range(codes.shape[1]):
            code = codes[row, field]
            slot = _probe(keys, bases[field], masks[field], code)
            if keys[slot] == code:
                value = values[slot]
            elif row < seen_rows or \
                    rare_keys[_probe(rare_keys, rare_bases[field], rare_masks[field], code)] == code:
                value = rare_id
            else:
                value = unseen_id
            out[row, field] = offsets[field] + value


def _capacity(entries: int, minimum: int = 1 << 16) -> int:
    return max(minimum, 1 << int(2 * max(entries, 1) - 1).bit_length())  # load factor <= 1/2


class CodeTable:
    """A growing int64 -> count table. Each key sits beside its count, so a probe into a table
    larger than the caches is one miss, not two; at most 2/3 full, which costs the same bytes per
    key as separate int64 keys and int32 counts at 1/2."""

    def __init__(self, expected: int = 0):
        self._allocate(_capacity(expected))
        self.size = 0

    def count(self, codes: np.ndarray) -> None:
        """Adds one occurrence per element of `codes`."""
        count_fields([self], np.asarray(codes, dtype=np.int64)[:, None], [0])

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, int32 counts) sorted by key."""
        used = self.keys != _EMPTY
        keys, values = self.keys[used], self.values[used]
        order = np.argsort(keys, kind="stable")
        return keys[order], values[order].astype(np.int32)

    def _allocate(self, capacity: int) -> None:
        pairs = np.zeros((capacity, 2), dtype=np.int64)
        self.keys, self.values = pairs[:, 0], pairs[:, 1]
        self.keys[:] = _EMPTY

    def _grow(self) -> None:
        used = self.keys != _EMPTY
        keys, values = self.keys[used], self.values[used]
        self._allocate(2 * len(self.keys))
        _insert(self.keys, self.values, keys, values)


def count_fields(tables: list[CodeTable], codes: np.ndarray, fields) -> None:
    """Adds codes[:, f] (int64 [rows, columns], row-major) to tables[f] for each f of `fields`,
    growing tables as they fill."""
    fields = np.asarray(fields, dtype=np.int64)
    starts = np.zeros(len(fields), dtype=np.int64)
    while True:
        chosen = [tables[field] for field in fields]
        sizes = np.array([table.size for table in chosen], dtype=np.int64)
        _add_fields(numba.typed.List([table.keys for table in chosen]),
                    numba.typed.List([table.values for table in chosen]), sizes, codes, fields,
                    starts)
        for table, size in zip(chosen, sizes):
            table.size = int(size)
        full = [table for table, start in zip(chosen, starts) if start < len(codes)]
        if not full:
            return
        for table in full:
            table._grow()


class FieldCounter:
    """A CodeTable per column of a chunk of codes, filled by `threads` threads that each take a
    group of fields with about the same cost (a probe into a table larger than L2 costs ~10
    probes into a small one)."""

    def __init__(self, num_fields: int, threads: int = 2):
        self.tables = [CodeTable() for _ in range(num_fields)]
        self.pool = ThreadPoolExecutor(threads)
        self.threads = threads

    def count(self, codes: np.ndarray) -> None:
        """Adds every row of `codes` (int64 [rows, num_fields], row-major)."""
        groups = self._groups()
        list(self.pool.map(lambda group: count_fields(self.tables, codes, group), groups))

    def close(self) -> None:
        self.pool.shutdown()

    def _groups(self) -> list[list[int]]:
        costs = [10 if table.keys.nbytes > 1 << 20 else 1 for table in self.tables]
        groups, loads = [[] for _ in range(self.threads)], [0] * self.threads
        for field in sorted(range(len(costs)), key=lambda field: -costs[field]):
            lightest = loads.index(min(loads))
            groups[lightest].append(field)
            loads[lightest] += costs[field]
        return [group for group in groups if group]


def _stack(per_field: list[np.ndarray], values: list[np.ndarray] | None):
    """Per-field hash tables in one array: (keys, values or None, bases, masks)."""
    # As small as the load allows: a lookup touches a random slot, so size is cache misses.
    capacities = np.array([_capacity(len(keys), 16) for keys in per_field], dtype=np.int64)
    bases = np.concatenate([[0], np.cumsum(capacities)[:-1]]).astype(np.int64)
    if values is None:
        keys, stacked = np.full(int(capacities.sum()), _EMPTY, dtype=np.int64), None
    else:  # key and value side by side: a lookup costs one cache miss, not two
        pairs = np.zeros((int(capacities.sum()), 2), dtype=np.int64)
        keys, stacked = pairs[:, 0], pairs[:, 1]
        keys[:] = _EMPTY
    for field, (base, capacity) in enumerate(zip(bases, capacities)):
        field_keys = np.ascontiguousarray(per_field[field], dtype=np.int64)
        if values is None:  # a set: each key is stored as its own value
            _insert(keys[base:base + capacity], keys[base:base + capacity], field_keys, field_keys)
        else:
            _insert(keys[base:base + capacity], stacked[base:base + capacity], field_keys,
                    np.ascontiguousarray(values[field], dtype=np.int64))
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
        _lookup_rows(self.tables, self.rare_sets, codes, np.asarray(offsets, np.int32),
                     seen_rows, np.int32(rare_id), np.int32(unseen_id), out)
        return out
