"""The reader of raw Criteo TSV: files (.gz decompressed on the fly) in blocks of whole lines,
parsed by the numba kernels of preprocessing/parse_kernels.py (both cores, bounded memory) into
Chunks of per-field codes, with the bad-row policy and the messages naming file:line:field.

The codes (INT_MISSING, LOG_BASE, CAT_MISSING, FALLBACK_BIT) are defined with the kernels. A
categorical value that is not 8 lowercase hex chars has a FALLBACK_BIT code; its text is kept
aside (`Chunk.fallback_text`), so keys can be rebuilt; bytes that are not UTF-8 are kept as lone
surrogates, errors="surrogateescape", so distinct bytes stay distinct values.

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

import numpy as np

from preprocessing import parse_kernels as kernels
from preprocessing import schema
from preprocessing.parse_kernels import (  # noqa: F401  (the codes are part of this API)
    BAD_INTEGER,
    BAD_LABEL,
    CAT_MISSING,
    EMPTY_LINE,
    FALLBACK_BIT,
    INT_MISSING,
    LOG_BASE,
    PADDED,
    TOO_MANY_FIELDS,
)

_MESSAGES = {TOO_MANY_FIELDS: "too many fields", BAD_INTEGER: "not an integer",
             BAD_LABEL: "label is not 0 or 1", EMPTY_LINE: "empty line"}

BLOCK_BYTES = 32 << 20
_NO_ROWS = np.empty(0, dtype=np.int64)


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
        ends = kernels.line_ends(data)
        begin, next_row = next_row, next_row + len(ends)
        if next_row <= start_row:
            continue
        low = max(start_row - begin, 0)
        high = len(ends) if stop_row is None else min(stop_row - begin, len(ends))
        chunk = _parse(data, ends, has_label, path, begin, low, high, on_bad_row, report,
                       arrays.take(len(ends)))
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
    kernels.parse_block(data, line_ends, has_label, codes, ints, labels, status, columns,
                        fallback)
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
