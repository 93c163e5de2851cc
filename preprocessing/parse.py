"""Streaming parser of raw Criteo TSV into integer value codes (numba, both cores, bounded memory).

Each row becomes 39 int64 *codes*, one per field, from which keys, counts and ids are derived:

- integer field I_j: the winners' key as a number: missing -> INT_MISSING; v <= 2 -> v (the "SP"
  keys, negatives included); v > 2 -> LOG_BASE + floor((ln v)^2).
- categorical field C_j: 8 lowercase hex chars -> their value (0 .. 2^32-1); empty -> CAT_MISSING;
  anything else -> FALLBACK_BIT | 61-bit FNV-1a hash of the bytes (the text is kept aside, so
  keys can be rebuilt; bytes that are not UTF-8 are kept as lone surrogates, errors=
  "surrogateescape", so distinct bytes stay distinct values). Uppercase hex is such a value:
  "ABCDEF12" and "abcdef12" are two values, never folded.

Rows with fewer fields than expected (trailing empty fields trimmed, as in some real copies) are
padded with missing values and counted. Rows with too many fields, a non-integer in an integer
field, a label other than 0/1 or an empty line are errors naming file and line, or, with
`on_bad_row="skip"`, counted and dropped from labelled files and kept with every field missing in
unlabelled (test) files, whose every line must keep its Id. Rows are numbered by their line in
the file, bad ones included, so skipping never moves a split boundary or a later row's Id.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np

from preprocessing import schema

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
_MESSAGES = {TOO_MANY_FIELDS: "too many fields", BAD_INTEGER: "not an integer",
             BAD_LABEL: "label is not 0 or 1", EMPTY_LINE: "empty line"}

BLOCK_BYTES = 32 << 20
_NO_ROWS = np.empty(0, dtype=np.int64)


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


def _line_ends(data: np.ndarray) -> np.ndarray:
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


@dataclasses.dataclass
class Chunk:
    """Parsed rows of one file. Row numbers are the file's 0-based data rows (its lines), bad
    rows included, so they never shift: the chunk covers rows [first_row, first_row + lines) and
    holds the kept ones, first_row + offsets (offsets None: all of them, in order)."""
    first_row: int
    codes: np.ndarray  # int64 [rows, 39]
    ints: np.ndarray  # float32 [rows, 13], NaN = missing
    labels: np.ndarray | None  # uint8 [rows]
    fallback_text: dict  # code -> original categorical text, for non-hex values only
    lines: int = 0  # rows of the file covered, skipped ones included
    offsets: np.ndarray | None = None  # row number - first_row of each kept row; None: 0, 1, ...
    # Row numbers of the bad rows skipped (labelled files), of the bad rows kept with every field
    # missing (unlabelled files), of the rows padded with empty trailing fields.
    skipped: np.ndarray = dataclasses.field(default_factory=lambda: _NO_ROWS)
    missing: np.ndarray = dataclasses.field(default_factory=lambda: _NO_ROWS)
    padded: np.ndarray = dataclasses.field(default_factory=lambda: _NO_ROWS)
    first_problem: str | None = None  # what is wrong with the first bad row ("train.txt:7: ...")
    unusual: dict = dataclasses.field(default_factory=dict)  # field -> {non-hex code: rows}

    @property
    def rows(self) -> int:
        return len(self.codes)

    def row_numbers(self) -> np.ndarray:
        """int64 [rows]: the file row number of each kept row."""
        if self.offsets is None:
            return np.arange(self.first_row, self.first_row + self.rows, dtype=np.int64)
        return self.first_row + self.offsets


@dataclasses.dataclass
class ParseReport:
    rows: int = 0  # rows kept
    lines: int = 0  # rows read, bad ones included
    padded_rows: int = 0
    skipped_rows: int = 0  # bad rows dropped (labelled files, on_bad_row="skip")
    kept_with_missing_values: int = 0  # bad rows of unlabelled (test) files, all fields missing
    first_problems: list = dataclasses.field(default_factory=list)
    first_bad: str | None = None  # the first bad row's problem ("train.txt:7: field I1: ...")

    def add_problem(self, text: str) -> None:
        if len(self.first_problems) < 10:
            self.first_problems.append(text)


class BadRowError(ValueError):
    pass


def check_bad_share(where: str, bad: int, rows: int, max_fraction: float | None,
                    kept: bool = False, first_problem: str | None = None,
                    read: int | None = None) -> None:
    """Raises BadRowError when `bad` of `rows` rows is a larger share than `max_fraction`
    (raw.max_skipped_fraction); `read` < rows: only that many were read so far."""
    if max_fraction is None or not rows or bad <= max_fraction * rows:
        return
    share = bad / rows
    at_least = "at least " if read is not None and read < rows else ""
    fate = "were kept with all fields missing" if kept else "were skipped"
    first = f" (first: {first_problem})" if first_problem else ""
    suggestion = min(math.ceil(share * 100) / 100, 1.0)
    raise BadRowError(f"{where}: {at_least}{bad:,} of {rows:,} rows ({share:.1%}) are bad and "
                      f"{fate}, more than raw.max_skipped_fraction={max_fraction:g}{first}\n"
                      f"  fix the file, or accept them with --set raw.max_skipped_fraction="
                      f"{suggestion:g}")


def empty_split_error(split: str, where: str, lines: int, first_bad: str | None) -> BadRowError:
    """The error for a train or valid split left with no row (`where`: its files and rows)."""
    if lines and first_bad:
        why = f"all {lines:,} of its rows were skipped as bad (first: {first_bad})"
    else:
        why = "its files hold no row"
    return BadRowError(f"the {split} split ({where}) has 0 rows: {why}; a model needs rows in "
                       f"both the train and valid splits")


def check_fraction(max_fraction: float | None) -> None:
    if max_fraction is not None and not 0 <= max_fraction <= 1:
        raise ValueError(f"raw.max_skipped_fraction={max_fraction}: must be in [0, 1]")


class _ParserArrays:
    """The parser's output arrays for one block; with `reuse`, the same memory for every block
    (fresh arrays cost a page fault per 4 KB: about a third of the parse time)."""

    def __init__(self, reuse: bool):
        self.reuse, self.capacity, self.arrays = reuse, 0, ()

    def take(self, rows: int) -> tuple:
        """(codes, ints, labels, status, columns, fallback) with `rows` rows each."""
        if rows > self.capacity or not self.reuse:
            self.capacity = max(rows, self.capacity + self.capacity // 4) if self.reuse else rows
            self.arrays = (np.empty((self.capacity, schema.NUM_FIELDS), dtype=np.int64),
                           np.empty((self.capacity, schema.NUM_INT_FIELDS), dtype=np.float32),
                           np.zeros(self.capacity, dtype=np.uint8),
                           np.empty(self.capacity, dtype=np.int32),
                           np.empty(self.capacity, dtype=np.int32),
                           np.empty(self.capacity, dtype=np.bool_))
        return tuple(array[:rows] for array in self.arrays)


def iter_chunks(path: Path, has_label: bool, on_bad_row: str = "error",
                block_bytes: int = BLOCK_BYTES, report: ParseReport | None = None,
                start_row: int = 0, stop_row: int | None = None, reuse_arrays: bool = False,
                max_bad_fraction: float | None = None):
    """Yields Chunks of parsed rows of `path` from data row `start_row` to `stop_row` (exclusive).

    Row numbers are the file's rows (lines), bad rows included, so a skipped row never moves a
    window or a later row's number; line numbers in messages are 1-based (row + 1). Bad rows
    stop the parse (on_bad_row="error") or, with "skip", are dropped from labelled files and
    kept with every field missing in unlabelled (test) files: a test row is never dropped.
    Only rows in the window are checked and counted in `report`. With `max_bad_fraction`, more
    bad rows than that share of the window is a BadRowError (as soon as it is certain). With
    `reuse_arrays`, a chunk's arrays are overwritten by the next chunk: for consumers that are
    done with a chunk when they ask for the next.
    """
    check_fraction(max_bad_fraction)
    report = report if report is not None else ParseReport()
    arrays = _ParserArrays(reuse_arrays)
    window_rows = None if stop_row is None else stop_row - start_row
    lines = bad = 0
    first_problem = None
    next_row = 0
    for data in _iter_blocks(path, block_bytes):
        line_ends = _line_ends(data)
        begin, next_row = next_row, next_row + len(line_ends)
        if next_row <= start_row:
            continue
        low = max(start_row - begin, 0)
        high = len(line_ends) if stop_row is None else min(stop_row - begin, len(line_ends))
        chunk = _parse(data, line_ends, has_label, path, begin, low, high, on_bad_row, report,
                       arrays.take(len(line_ends)))
        lines += chunk.lines
        chunk_bad = len(chunk.skipped) + len(chunk.missing)
        if chunk_bad:
            bad += chunk_bad
            first_problem = first_problem or chunk.first_problem
            check_bad_share(str(user_path(path)), bad, window_rows or 0, max_bad_fraction,
                            not has_label, first_problem, read=lines)
        if chunk.rows:
            yield chunk
        if stop_row is not None and next_row >= stop_row:
            break
    check_bad_share(str(user_path(path)), bad, lines, max_bad_fraction, not has_label,
                    first_problem)


# What reading a damaged .gz (a download cut short, or not gzip at all) raises.
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def open_raw(path: Path, mode: str = "rb"):
    """`path` opened for reading, decompressed on the fly when its name ends in .gz."""
    return (gzip.open if Path(path).name.endswith(".gz") else open)(path, mode)


def _iter_blocks(path: Path, block_bytes: int):
    """Blocks of whole lines, as views of two alternating buffers (a view is valid until the next
    block is asked for); the last line is given a newline if the file lacks one. A `.gz` path is
    decompressed on the fly. The next block is read in a background thread while the caller works
    on this one: reading the page cache took 0.7-0.8 s of each 10M-row pass."""
    buffers = [bytearray(block_bytes), bytearray(block_bytes)]
    current, filled, text_bytes = 0, 0, 0
    with open_raw(path) as handle, ThreadPoolExecutor(1) as reader:
        pending = reader.submit(read_into, handle, memoryview(buffers[0]), path, 0)
        while True:
            read = pending.result()
            buffer = buffers[current]
            filled += read
            if not read and not filled:
                return
            if not read:  # the last line, without its newline
                if filled == len(buffer):
                    buffer = _grown(buffer)
                buffer[filled] = 10
                yield np.frombuffer(buffer, dtype=np.uint8, count=filled + 1)
                return
            cut = buffer.rfind(b"\n", 0, filled) + 1
            if cut == 0:  # a line longer than the buffer
                buffers[current] = buffer = _grown(buffer)
                pending = reader.submit(read_into, handle, memoryview(buffer)[filled:], path,
                                        text_bytes + filled)
                continue
            if len(buffers[1 - current]) < len(buffer):
                buffers[1 - current] = bytearray(len(buffer))
            following = buffers[1 - current]
            following[:filled - cut] = buffer[cut:filled]
            pending = reader.submit(read_into, handle, memoryview(following)[filled - cut:],
                                    path, text_bytes + filled)
            yield np.frombuffer(buffer, dtype=np.uint8, count=cut)
            filled -= cut
            text_bytes += cut
            current = 1 - current


def read_into(handle, view, path: Path, position: int) -> int:
    """handle.readinto(view); a damaged .gz (a download cut short) is an error naming the file."""
    try:
        return handle.readinto(view)
    except GZIP_ERRORS as error:
        raise BadRowError(f"{user_path(path)}: corrupt or truncated gzip data after "
                          f"{position:,} bytes of text ({error}); check it with `gzip -t`") \
            from error


def _grown(buffer: bytearray) -> bytearray:
    """A copy twice as long (a new object: views of the old one may still be alive)."""
    return buffer + bytes(len(buffer))


def _parse(data, line_ends, has_label, path, first_row, low, high, on_bad_row, report,
           arrays) -> Chunk:
    """Parses a block whose first line is row `first_row`; the chunk of its lines [low, high)."""
    codes, ints, labels, status, columns, fallback = arrays
    _parse_block(data, line_ends, has_label, codes, ints, labels, status, columns, fallback, _HEX)
    window = slice(low, high)
    codes, ints, labels, status = codes[window], ints[window], labels[window], status[window]
    row0 = first_row + low  # row number of the window's first line
    padded = np.flatnonzero(status == PADDED)
    if len(padded):
        report.padded_rows += len(padded)
        report.add_problem(f"{user_path(path)}:{row0 + padded[0] + 1}: "
                           f"{columns[low + padded[0]]} fields, "
                           f"padded with empty ones")
    bad = np.flatnonzero(status < 0)
    fallback_lines = low + np.flatnonzero(fallback[window])
    if len(bad):
        fallback_lines = fallback_lines[status[fallback_lines - low] >= 0]
    texts, unusual = _fallback_texts(data, line_ends, codes, fallback_lines, low, has_label)
    chunk = Chunk(row0, codes, ints, labels if has_label else None, texts, lines=high - low,
                  padded=row0 + padded if len(padded) else _NO_ROWS, unusual=unusual)
    if len(bad):
        _bad_rows(chunk, bad, status, columns[window], has_label, path, on_bad_row, report)
    report.rows += chunk.rows
    report.lines += chunk.lines
    return chunk


def _bad_rows(chunk, bad, status, columns, has_label, path, on_bad_row, report) -> None:
    """Raises on the first bad row (on_bad_row="error"); else drops the bad rows of a labelled
    chunk and sets every field of those of an unlabelled one to missing (bad are indices)."""
    expected = 40 if has_label else 39
    line0 = chunk.first_row + 1
    if on_bad_row != "skip":
        index = bad[0]
        raise BadRowError(_describe(path, line0 + index, status[index], columns[index], expected,
                                    has_label)
                          + " (set raw.on_bad_row=skip to skip and count such rows)")
    fate = "" if has_label else "; kept with all fields missing (a test row is never dropped)"
    chunk.first_problem = _describe(Path(path).name, line0 + bad[0], status[bad[0]],
                                    columns[bad[0]], expected, has_label)
    report.first_bad = report.first_bad or chunk.first_problem
    for index in bad[:max(10 - len(report.first_problems), 0)]:
        report.add_problem(_describe(path, line0 + index, status[index], columns[index],
                                     expected, has_label) + fate)
    if has_label:
        keep = status >= 0
        chunk.offsets = np.flatnonzero(keep)
        chunk.codes, chunk.ints, chunk.labels = chunk.codes[keep], chunk.ints[keep], \
            chunk.labels[keep]
        chunk.skipped = chunk.first_row + bad
        report.skipped_rows += len(bad)
    else:
        chunk.codes[bad, :schema.NUM_INT_FIELDS] = INT_MISSING
        chunk.codes[bad, schema.NUM_INT_FIELDS:] = CAT_MISSING
        chunk.ints[bad] = np.nan
        chunk.missing = chunk.first_row + bad
        report.kept_with_missing_values += len(bad)


def user_path(path) -> Path:
    """The user's own file behind stage 00's link (00_raw/train.txt -> their train.txt), for
    messages; `path` itself when it is no link."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _describe(path, line, status, column, expected, has_label) -> str:
    path = user_path(path)
    names = ((schema.LABEL_NAME,) if has_label else ()) + schema.FIELD_NAMES
    if status == TOO_MANY_FIELDS:
        hint = " (a test file with labels? a train file has 40 columns, test 39)" \
            if not has_label else ""
        return f"{path}:{line}: more than {expected} tab-separated fields{hint}"
    if status == EMPTY_LINE:
        return f"{path}:{line}: empty line"
    where = names[column] if column < len(names) else f"column {column + 1}"
    hint = " (a train file without labels?)" if status == BAD_LABEL else ""
    return f"{path}:{line}: field {where}: {_MESSAGES[status]}{hint}"


def _fallback_texts(data, line_ends, codes, lines, low, has_label) -> tuple[dict, dict]:
    """For the (rare) categorical values that are not 8 lowercase hex chars, of block lines
    `lines` (codes row = line - low): code -> text, and field index -> {code: rows}.

    Texts are decoded with errors="surrogateescape": bytes that are not UTF-8 become lone
    surrogates U+DC80..U+DCFF, so distinct byte strings stay distinct texts, and
    text.encode("utf-8", "surrogateescape") gives the bytes back (keys.hash_key hashes them)."""
    texts, unusual = {}, {}
    skip = 1 + schema.NUM_INT_FIELDS if has_label else schema.NUM_INT_FIELDS
    for line_index in lines.tolist():
        start = 0 if line_index == 0 else line_ends[line_index - 1] + 1
        line = bytes(data[start:line_ends[line_index]]).rstrip(b"\r").split(b"\t")
        for field, raw in enumerate(line[skip:skip + schema.NUM_CAT_FIELDS],
                                    schema.NUM_INT_FIELDS):
            code = int(codes[line_index - low, field])
            if code & FALLBACK_BIT and code != CAT_MISSING:
                texts[code] = raw.decode("utf-8", errors="surrogateescape")
                counts = unusual.setdefault(field, {})
                counts[code] = counts.get(code, 0) + 1
    return texts, unusual


def count_lines(path: Path, block_bytes: int = 16 << 20) -> int:
    """Number of rows: newline count, plus one for a last line without a newline (`.gz`: of the
    decompressed text)."""
    lines, last = 0, b"\n"
    with open_raw(path) as handle:
        while block := handle.read(block_bytes):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")
