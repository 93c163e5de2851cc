"""The parser's numba kernels: raw Criteo TSV bytes -> per-field int64 codes, a row status each.

Pure functions over byte buffers (a numpy uint8 view of whole lines); files, gzip, blocks, bad-row
policy and messages are the reader's (preprocessing/parse.py). Each row becomes 39 int64 *codes*,
one per field, from which keys, counts and ids are derived:

- integer field I_j: the winners' key as a number: missing -> INT_MISSING; v <= 2 -> v (the "SP"
  keys, negatives included); v > 2 -> LOG_BASE + floor((ln v)^2).
- categorical field C_j: 8 lowercase hex chars -> their value (0 .. 2^32-1); empty -> CAT_MISSING;
  anything else -> FALLBACK_BIT | 61-bit FNV-1a hash of the bytes (the reader keeps the text
  aside, so keys can be rebuilt). Uppercase hex is such a value: "ABCDEF12" and "abcdef12" are
  two values, never folded.

`parse_block` also writes each line's status: OK, PADDED (fewer fields than expected: the rest
are set missing), or a negative code for a bad row (TOO_MANY_FIELDS, BAD_INTEGER, BAD_LABEL,
EMPTY_LINE) with the column where it went wrong. `line_ends` finds the newlines of a block.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np

# OpenMP threads (numba's parallel loops) spin for a while after each loop by default; between
# loops the stages run Python, a reader and a writer thread, which the spinning starved: stage 03
# took 17.8-18.5 s and 31-33 CPU s, against 15.9-16.1 s and 27 CPU s with passive waiting. Read
# when numba starts its threads, at the first parallel call, after this import.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

INT_MISSING = -(1 << 62)
LOG_BASE = 1 << 40
CAT_MISSING = 1 << 32
FALLBACK_BIT = 1 << 61
_FNV_MASK = (1 << 61) - 1

# Row status codes written by the parser.
OK, PADDED, TOO_MANY_FIELDS, BAD_INTEGER, BAD_LABEL, EMPTY_LINE = 0, 1, -1, -2, -3, -4


def _log_squared_table(size: int) -> np.ndarray:
    """floor((ln v)^2) for v < size, with Python's math.log as the winners computed it."""
    table = np.zeros(size, dtype=np.int16)
    table[3:] = [int(math.log(float(value)) ** 2) for value in range(3, size)]
    return table


# Most integers are small: a lookup instead of a log per value (a global: numba freezes it).
_LOG_SQUARED = _log_squared_table(1 << 14)

_HEX = np.full(256, 255, dtype=np.uint8)
for _index, _byte in enumerate(b"0123456789abcdef"):
    _HEX[_byte] = _index


# The field parsers are inlined: a function call per field cost about a quarter of the parse time.
@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _parse_int(data, position, end, codes, ints, row, field):
    """Parses I_j at `position`; returns (position after it, ok)."""
    begin = position
    negative = position < end and data[position] == 45
    if negative:
        position += 1
    value = np.int64(0)
    while position < end and data[position] != 9:
        byte = data[position]
        if byte < 48 or byte > 57 or position - begin >= 18:
            return position, False
        value = value * 10 + (byte - 48)
        position += 1
    if position == begin:
        codes[row, field] = INT_MISSING
        ints[row, field] = np.nan
        return position, True
    if negative:
        if position == begin + 1:
            return position, False
        value = -value
    ints[row, field] = value
    if value <= 2:
        codes[row, field] = value
    elif value < len(_LOG_SQUARED):
        codes[row, field] = LOG_BASE + _LOG_SQUARED[value]
    else:
        codes[row, field] = LOG_BASE + np.int64(np.log(float(value)) ** 2)
    return position, True


_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)
_LOW_7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ONES = np.uint64(0x0101010101010101)
_BYTES_0x80 = np.uint64(0x8080808080808080)
_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)


@numba.njit(cache=True, nogil=True, inline="always")
def _add_bytes(word, byte):
    """Adds `byte` to each byte of `word` (bytes below 0x80, sums below 0x100: no carries)."""
    return word + np.uint64(byte) * _ONES


@numba.njit(cache=True, nogil=True, inline="always")
def _hex_word(word):
    """(value, ok) of 8 lowercase hex chars in a little-endian word (first char lowest), eight
    bytes at a time: a range check and a nibble per byte, then three shifts pack the nibbles."""
    digit = _add_bytes(word, 0x80 - 0x30) & ~_add_bytes(word, 0x80 - 0x3A)
    letter = _add_bytes(word, 0x80 - 0x61) & ~_add_bytes(word, 0x80 - 0x67)
    ok = (word & _BYTES_0x80) == 0 and ((digit | letter) & _BYTES_0x80) == _BYTES_0x80
    nibbles = (word & _NIBBLES) + ((letter & _BYTES_0x80) >> np.uint64(7)) * np.uint64(9)
    pairs = ((nibbles << np.uint64(4)) | (nibbles >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    quads = ((pairs << np.uint64(8)) | (pairs >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    value = ((quads << np.uint64(16)) | (quads >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return np.int64(value), ok


@numba.njit(cache=True, nogil=True, inline="always")
def _word_at(words, position):
    """The 8 bytes from `position` on as one little-endian word, from two aligned words."""
    index = position >> 3
    shift = np.uint64((position & 7) * 8)
    high = (words[index + 1] << (np.uint64(63) - shift)) << np.uint64(1)  # 0 when shift is 0
    return (words[index] >> shift) | high


@numba.njit(cache=True, nogil=True, inline="always")
def _parse_cat(data, words, position, end, codes, row, field, hex_table):
    """Parses C_j at `position`; returns (position after it, whether it took the fallback code)."""
    stop = position + 8
    if stop <= end and (stop == end or data[stop] == 9):  # the usual 8 hex chars
        if (position >> 3) + 1 < len(words):
            value, ok = _hex_word(_word_at(words, position))
            if ok:
                codes[row, field] = value
                return stop, False
        else:  # the last bytes of the block: one at a time
            value = np.int64(0)
            invalid = np.uint8(0)
            for index in range(position, stop):
                nibble = hex_table[data[index]]
                invalid |= nibble
                value = value * 16 + (nibble & 15)
            if invalid < 16:
                codes[row, field] = value
                return stop, False
    begin = position
    digest = np.uint64(14695981039346656037)  # FNV-1a 64
    while position < end and data[position] != 9:
        digest = (digest ^ np.uint64(data[position])) * np.uint64(1099511628211)
        position += 1
    if position == begin:
        codes[row, field] = CAT_MISSING
        return position, False
    codes[row, field] = np.int64(digest & np.uint64(_FNV_MASK)) | FALLBACK_BIT
    return position, True


@numba.njit(cache=True, nogil=True, inline="always")
def _parse_line(data, words, start, end, has_label, codes, ints, labels, row, hex_table):
    """Parses one line (without its newline) into row `row`; returns (status, column, fallback)."""
    if end > start and data[end - 1] == 13:  # CRLF
        end -= 1
    if end == start:
        return EMPTY_LINE, 0, False
    num_columns = 40 if has_label else 39
    column, position, fallback = 0, start, False
    while True:
        field = column - 1 if has_label else column
        if has_label and column == 0:
            if data[position] != 48 and data[position] != 49 or \
                    (position + 1 < end and data[position + 1] != 9):
                return BAD_LABEL, column, fallback
            labels[row] = data[position] - 48
            position += 1
        elif field < 13:
            position, ok = _parse_int(data, position, end, codes, ints, row, field)
            if not ok:
                return BAD_INTEGER, column, fallback
        else:
            position, is_fallback = _parse_cat(data, words, position, end, codes, row, field,
                                               hex_table)
            fallback = fallback or is_fallback
        column += 1
        if position >= end:
            break
        position += 1  # the tab
        if column == num_columns:
            return TOO_MANY_FIELDS, column, fallback
    if column < num_columns:
        for field in range(column - 1 if has_label else column, 39):
            codes[row, field] = INT_MISSING if field < 13 else CAT_MISSING
            if field < 13:
                ints[row, field] = np.nan
        return PADDED, column, fallback
    return OK, 0, fallback


@numba.njit(cache=True, parallel=True, nogil=True)
def _parse_block(data, line_ends, has_label, codes, ints, labels, status, columns, fallback,
                 hex_table):
    words = data[:len(data) // 8 * 8].view(np.uint64)
    for line in numba.prange(len(line_ends)):
        start = 0 if line == 0 else line_ends[line - 1] + 1
        status[line], columns[line], fallback[line] = _parse_line(
            data, words, start, line_ends[line], has_label, codes, ints, labels, line, hex_table)


def parse_block(data, line_ends, has_label, codes, ints, labels, status, columns, fallback):
    """Parses the lines of `data` (newline positions `line_ends`) into row i of the output arrays
    (codes int64 [rows, 39], ints float32 [rows, 13], labels uint8 [rows], status and columns
    int32 [rows], fallback bool [rows]: the row has a non-hex categorical value), in parallel."""
    _parse_block(data, line_ends, has_label, codes, ints, labels, status, columns, fallback, _HEX)


@numba.njit(cache=True, nogil=True, inline="always")
def _newline_bytes(word):
    """The high bit of each byte of `word` that is a newline (exact, no false positives)."""
    equal_zero = word ^ _NEWLINES
    return ~(((equal_zero & _LOW_7) + _LOW_7) | equal_zero | _LOW_7)


@numba.njit(cache=True, nogil=True)
def _segment_newlines(words, begin, end, out, count, limit):
    """Writes the positions of the newlines of words[begin:end] from out[count] on, eight bytes
    at a time (one line holds ~25 words without a newline); returns the count after them, or -1
    when there are more than `limit - count`."""
    for word in range(begin, end):
        found = _newline_bytes(words[word])
        while found:
            if count == limit:
                return -1
            lowest = found & (~found + np.uint64(1))
            below = ((((lowest - np.uint64(1)) >> np.uint64(7)) & _ONES) * _ONES) >> np.uint64(56)
            out[count] = 8 * word + np.int64(below)
            count += 1
            found &= found - np.uint64(1)
    return count


def line_ends(data: np.ndarray) -> np.ndarray:
    """Positions of the newlines of `data`, as np.flatnonzero(data == 10)."""
    return _newline_positions(data, 4 * numba.get_num_threads())


@numba.njit(cache=True, nogil=True, parallel=True)
def _newline_positions(data, segments):
    """Segments found in parallel, each into its own slice of a scratch array with room for a
    newline every 16 bytes (Criteo lines are ~240), then gathered; one pass over the data. A block
    of shorter lines is done again with room for every byte."""
    whole_words = len(data) // 8
    words = data[:8 * whole_words].view(np.uint64)
    bounds = (whole_words * np.arange(segments + 1)) // segments
    for bytes_per_newline in np.array([16, 1]):
        starts = np.zeros(segments + 1, dtype=np.int64)
        starts[1:] = np.cumsum((bounds[1:] - bounds[:-1]) * 8 // bytes_per_newline + 1)
        scratch = np.empty(starts[-1], dtype=np.int64)
        ends = np.empty(segments, dtype=np.int64)
        for segment in numba.prange(segments):
            ends[segment] = _segment_newlines(words, bounds[segment], bounds[segment + 1],
                                              scratch, starts[segment], starts[segment + 1])
        if (ends >= 0).all():
            break
    counts = ends - starts[:-1]
    offsets = np.zeros(segments + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    tail = 0
    for index in range(8 * whole_words, len(data)):
        tail += data[index] == 10
    out = np.empty(offsets[-1] + tail, dtype=np.int64)
    for segment in numba.prange(segments):
        out[offsets[segment]:offsets[segment + 1]] = scratch[starts[segment]:ends[segment]]
    count = offsets[-1]
    for index in range(8 * whole_words, len(data)):
        if data[index] == 10:
            out[count] = index
            count += 1
    return out
