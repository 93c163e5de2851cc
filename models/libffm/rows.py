"""Row sources: the same two operations (`train`, `predict`) over the field files and over
libFFM text, which is converted once to binary files and streamed from them: field rows (ids
[N, F]) when every line holds one `a:id:1` per field a in order, as stage 04's exports do, else
CSR.

Neither is ever loaded whole: `take` reads a block of contiguous rows into RAM (the trainer's
unit of shuffling), `head` limits a split without reading it. `open_inputs` opens a tag's three
splits in the configured format, with the model's n and m for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import numba
from numba import njit, prange

from models.libffm import kernels
from models.libffm.config import LibffmConfig, ModelConfig, TrainConfig
from preprocessing import field_spec
from pipeline.paths import stage_dir

TEXT_CHUNK_BYTES = 1 << 26


@dataclasses.dataclass
class FieldRows:
    """Rows of the field files, or of libFFM text `label 0:id:1 1:id:1 ...`: every row has one
    feature per field, value 1.

    ids: int32 [N, F] global ids, a memmap or an in-RAM block; labels: uint8 [N] or None. Rows
    trained on have every id < n (the training kernel does not check: `open_inputs` verifies the
    field files; n comes from the training text); predictions skip ids >= n and fields >= m.
    """
    ids: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_fields(self) -> int:
        return self.ids.shape[1]

    def take(self, start: int, stop: int) -> FieldRows:
        """Rows [start, stop) read into RAM."""
        return FieldRows(np.ascontiguousarray(self.ids[start:stop]),
                         None if self.labels is None else np.asarray(self.labels[start:stop]))

    def head(self, rows: int | None) -> FieldRows:
        """The first `rows` rows (all when None), as views."""
        return FieldRows(self.ids[:rows], None if self.labels is None else self.labels[:rows])

    def _scale(self, model: ModelConfig) -> float:
        """r: every row has F features of value 1, so ||x||^2 = F."""
        norm = self.num_fields if model.normalization == "instance" else 1
        return model.normalization_scale / norm

    def train(self, state, order, model: ModelConfig, train: TrainConfig) -> float:
        flat_state, _, m, groups = kernels.flat(state)
        return kernels.train_fields(flat_state, m, groups, np.asarray(self.ids),
                                    np.asarray(self.labels), order, self._scale(model),
                                    train.learning_rate, train.l2)

    def predict(self, state, model: ModelConfig) -> np.ndarray:
        out = np.empty(len(self), np.float32)
        kernels.predict_fields(*kernels.flat(state), np.asarray(self.ids), self._scale(model),
                               out)
        return out


@dataclasses.dataclass
class SparseRows:
    """Rows in CSR form (libFFM text): row i holds entries indptr[i]:indptr[i + 1]."""
    indptr: np.ndarray  # int64 [N + 1]
    ids: np.ndarray  # int32 [nnz]
    fields: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz]
    labels: np.ndarray | None  # uint8 [N]

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_fields(self) -> int:
        return int(self.fields.max()) + 1 if len(self.fields) else 0

    def take(self, start: int, stop: int) -> SparseRows:
        """Rows [start, stop): entries as views, indptr rebased to 0."""
        low, high = int(self.indptr[start]), int(self.indptr[stop])
        return SparseRows(np.asarray(self.indptr[start:stop + 1]) - low,
                          np.asarray(self.ids[low:high]), np.asarray(self.fields[low:high]),
                          np.asarray(self.values[low:high]),
                          None if self.labels is None else np.asarray(self.labels[start:stop]))

    def head(self, rows: int | None) -> SparseRows:
        return self.take(0, min(rows or len(self), len(self)))

    def train(self, state, order, model: ModelConfig, train: TrainConfig) -> float:
        return kernels.train_sparse(*kernels.flat(state), self.indptr, self.ids, self.fields,
                                    self.values, self.labels, order,
                                    model.normalization == "instance",
                                    model.normalization_scale, train.learning_rate, train.l2)

    def predict(self, state, model: ModelConfig) -> np.ndarray:
        out = np.empty(len(self), np.float32)
        kernels.predict_sparse(*kernels.flat(state), self.indptr, self.ids, self.fields,
                               self.values, model.normalization == "instance",
                               model.normalization_scale, out)
        return out


def open_inputs(tag: str, config: LibffmConfig, cache_dir: Path) -> tuple[dict, int, int]:
    """({split: FieldRows | SparseRows} for train/valid/test (whole splits), n, m): n and m are
    the field files' total vocabulary and field count; for text, as libffm: the largest index
    and field of the training file, plus one."""
    directory = stage_dir(tag, config.data.stage)
    if config.data.format == "fields":
        spec, splits = field_spec.open_field_files(directory, check_ids=True)
        rows = {name: FieldRows(split.fields, split.labels) for name, split in splits.items()}
        return rows, spec.total_vocabulary_size, spec.num_fields
    rows = {}
    for name in field_spec.SPLITS:
        path = directory / f"{name}.ffm"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; data.format=text needs the libFFM text "
                                    "of stage 04 (export.libffm / leaves.libffm)")
        rows[name] = convert_text(path, cache_dir)
    rows["test"].labels = None
    return rows, int(rows["train"].ids.max()) + 1, rows["train"].num_fields


# libFFM text -> binary files (streamed in chunks, never the whole file in RAM)

_SPACE, _TAB, _CR, _NEWLINE, _COLON = 32, 9, 13, 10, 58


@njit(cache=True, nogil=True)
def _parse_number(buffer, position, end):
    """Parses [-]digits[.digits][e[-]digits] at `position`; returns (value or NaN, position)."""
    sign = 1.0
    if position < end and (buffer[position] == 45 or buffer[position] == 43):  # - +
        sign = -1.0 if buffer[position] == 45 else 1.0
        position += 1
    value, digits = 0.0, 0
    while position < end and 48 <= buffer[position] <= 57:
        value = value * 10.0 + (buffer[position] - 48)
        position += 1
        digits += 1
    if position < end and buffer[position] == 46:  # .
        position += 1
        scale = 0.1
        while position < end and 48 <= buffer[position] <= 57:
            value += (buffer[position] - 48) * scale
            scale *= 0.1
            position += 1
            digits += 1
    if digits and position < end and (buffer[position] == 101 or buffer[position] == 69):  # e E
        position += 1
        exponent_sign = 1.0
        if position < end and (buffer[position] == 45 or buffer[position] == 43):
            exponent_sign = -1.0 if buffer[position] == 45 else 1.0
            position += 1
        exponent = 0.0
        while position < end and 48 <= buffer[position] <= 57:
            exponent = exponent * 10.0 + (buffer[position] - 48)
            position += 1
        value *= 10.0 ** (exponent_sign * exponent)
    return (sign * value if digits else np.nan), position


@njit(cache=True, nogil=True)
def _parse_index(buffer, position, end):
    """Parses the digits of a field or an index at `position`; returns (value, position), value
    -1 when there are none or it does not fit an int32."""
    value, start = 0, position
    while position < end and 48 <= buffer[position] <= 57 and position - start < 10:
        value = value * 10 + (buffer[position] - 48)
        position += 1
    if position == start or value > 2147483647 or (position < end and
                                                   48 <= buffer[position] <= 57):
        return -1, position
    return value, position


@njit(cache=True, nogil=True)
def _is_end(buffer, position, end):
    return position >= end or buffer[position] == _SPACE or buffer[position] == _TAB \
        or buffer[position] == _NEWLINE or buffer[position] == _CR


@njit(cache=True, nogil=True)
def _parse_part(buffer, start, end, labels, ends, ids, fields, values):
    """Parses the complete lines `label field:index:value ...` of buffer[start:end] into the
    given arrays (from index 0); ends[r] = the entries up to row r's last.

    Returns (rows, entries, bad row or -1, width): width is the entries of every row when each
    row is `0:id:1 1:id:1 ...` (field a at position a, value 1), else -1.
    """
    rows, entries, position = 0, 0, start
    width = -2  # not yet known
    while position < end:
        if position + 1 < end and 48 <= buffer[position] <= 49 and buffer[position + 1] == _SPACE:
            label = buffer[position] - 48.0  # the usual 0 / 1
            position += 1
        else:
            label, position = _parse_number(buffer, position, end)
            if np.isnan(label) or rows >= labels.shape[0]:
                return rows, entries, rows, -1
        labels[rows] = 1 if label > 0 else 0
        first, in_order = entries, True
        while position < end and buffer[position] != _NEWLINE:
            if buffer[position] == _SPACE or buffer[position] == _TAB or buffer[position] == _CR:
                position += 1
                continue
            field, position = _parse_index(buffer, position, end)
            if field < 0 or position >= end or buffer[position] != _COLON:
                return rows, entries, rows, -1
            index, position = _parse_index(buffer, position + 1, end)
            if index < 0 or position >= end or buffer[position] != _COLON \
                    or entries >= ids.shape[0]:
                return rows, entries, rows, -1
            position += 1
            if position < end and buffer[position] == 49 and _is_end(buffer, position + 1, end):
                value = 1.0
                position += 1
            else:
                value, position = _parse_number(buffer, position, end)
                if np.isnan(value) or not _is_end(buffer, position, end):
                    return rows, entries, rows, -1
            in_order = in_order and value == 1.0 and field == entries - first
            fields[entries], ids[entries], values[entries] = field, index, value
            entries += 1
        position += 1
        ends[rows] = entries
        if width != -1:
            count = entries - first
            width = count if in_order and (width == -2 or width == count) else -1
        rows += 1
    return rows, entries, -1, width


@njit(cache=True, nogil=True)
def _cut_points(buffer, end, parts):
    """parts + 1 offsets splitting buffer[:end] into parts of whole lines (some may be empty)."""
    cuts = np.empty(parts + 1, np.int64)
    cuts[0], cuts[parts] = 0, end
    for part in range(1, parts):
        position = max(cuts[part - 1], end * part // parts)
        while position < end and buffer[position - 1] != _NEWLINE:
            position += 1
        cuts[part] = position
    return cuts


@njit(parallel=True, cache=True)
def _parse_parts(buffer, cuts, row_starts, entry_starts, labels, ends, ids, fields, values):
    """_parse_part of every part in parallel; part p writes rows from row_starts[p] and entries
    from entry_starts[p] (bounds from its size); returns int64 [parts, 4] of its results."""
    results = np.empty((cuts.shape[0] - 1, 4), np.int64)
    for part in prange(cuts.shape[0] - 1):
        rows, entries, bad, width = _parse_part(
            buffer, cuts[part], cuts[part + 1], labels[row_starts[part]:row_starts[part + 1]],
            ends[row_starts[part]:row_starts[part + 1]],
            ids[entry_starts[part]:entry_starts[part + 1]],
            fields[entry_starts[part]:entry_starts[part + 1]],
            values[entry_starts[part]:entry_starts[part + 1]])
        results[part, 0], results[part, 1], results[part, 2], results[part, 3] = \
            rows, entries, bad, width
    return results


@njit(cache=True, nogil=True)
def _last_newline(buffer, end):
    position = end - 1
    while position >= 0 and buffer[position] != _NEWLINE:
        position -= 1
    return position


def _line_chunks(path: Path):
    """Yields uint8 arrays of whole lines, about TEXT_CHUNK_BYTES at a time (views of one reused
    buffer: each is valid until the next; the file may lack a final newline)."""
    buffer, filled = np.empty(TEXT_CHUNK_BYTES, np.uint8), 0
    with open(path, "rb", buffering=0) as source:
        while True:
            if filled == len(buffer):  # a line longer than the buffer
                buffer = np.concatenate([buffer, np.empty(len(buffer), np.uint8)])
            got = source.readinto(memoryview(buffer)[filled:])
            if not got:
                break
            filled += got
            cut = _last_newline(buffer, filled) + 1
            if cut:
                yield buffer[:cut]
                buffer[:filled - cut] = buffer[cut:filled].copy()
                filled -= cut
    if filled and bytes(buffer[:filled]).strip():
        yield buffer[:filled]


def _parse_lines(lines: np.ndarray, path: Path, first_line: int) -> tuple[list[dict], int]:
    """The rows of complete libFFM lines, parsed in parallel parts: ([per part {labels, ends
    (relative to the part), ids, fields, values}], width: the row width when every row is `0:id:1
    1:id:1 ...` with the same fields, else -1)."""
    parts = numba.get_num_threads() if len(lines) > 1 << 20 else 1
    cuts = _cut_points(lines, len(lines), parts)
    sizes = np.diff(cuts)
    # a row takes 2 bytes or more ("1\n"), an entry 6 ("0:0:1 ")
    row_starts = np.concatenate([[0], np.cumsum(sizes // 2 + 1)])
    entry_starts = np.concatenate([[0], np.cumsum(sizes // 6 + 1)])
    arrays = {"labels": np.empty(row_starts[-1], np.uint8),
              "ends": np.empty(row_starts[-1], np.int64),
              "ids": np.empty(entry_starts[-1], np.int32),
              "fields": np.empty(entry_starts[-1], np.int32),
              "values": np.empty(entry_starts[-1], np.float32)}
    results = _parse_parts(lines, cuts, row_starts, entry_starts, *arrays.values())
    done, widths = [], set()
    for part, (rows, entries, bad, width) in enumerate(results):
        if bad >= 0:
            line = first_line + sum(int(result[0]) for result in results[:part]) + bad
            raise ValueError(f"{path}:{line}: not a libFFM line (label field:index:value ...)")
        if rows:
            widths.add(int(width))
            row_slice = slice(row_starts[part], row_starts[part] + rows)
            entry_slice = slice(entry_starts[part], entry_starts[part] + entries)
            done.append({name: array[row_slice if name in ("labels", "ends") else entry_slice]
                         for name, array in arrays.items()})
    return done, (widths.pop() if len(widths) == 1 else -1)


class _TextWriter:
    """Writes parsed parts to the binary files: labels and ids always; fields, values and indptr
    only from the first part that is not `0:id:1 1:id:1 ...` of the file's width (the rows
    before it are written out then)."""

    def __init__(self, stack: contextlib.ExitStack, paths: dict):
        self.stack, self.paths, self.files = stack, paths, {}
        for name in ("labels", "ids"):
            self.files[name] = stack.enter_context(open(paths[name], "wb"))
        self.width, self.rows, self.entries = None, 0, 0

    @property
    def dense(self) -> bool:
        return "indptr" not in self.files

    def _go_sparse(self) -> None:
        for name in ("indptr", "fields", "values"):
            self.files[name] = self.stack.enter_context(open(self.paths[name], "wb"))
        self.files["indptr"].write(np.zeros(1, np.int64).tobytes())
        width, step = self.width or 0, max(1, (1 << 22) // max(self.width or 1, 1))
        for start in range(0, self.rows, step):
            rows = min(step, self.rows - start)
            self.files["indptr"].write(((np.arange(rows, dtype=np.int64) + start + 1)
                                        * width).tobytes())
            self.files["fields"].write(np.tile(np.arange(width, dtype=np.int32), rows).tobytes())
            self.files["values"].write(np.ones(rows * width, np.float32).tobytes())

    def write(self, parts: list[dict], width: int) -> None:
        if not parts:
            return
        if self.dense and self.width is None and width > 0:
            self.width = width
        if self.dense and (width != self.width or width <= 0):
            self._go_sparse()
        for part in parts:
            self.files["labels"].write(part["labels"].tobytes())
            self.files["ids"].write(part["ids"].tobytes())
            if not self.dense:
                self.files["indptr"].write((part["ends"] + self.entries).tobytes())
                self.files["fields"].write(part["fields"].tobytes())
                self.files["values"].write(part["values"].tobytes())
            self.rows += len(part["labels"])
            self.entries += len(part["ids"])


def convert_text(path: Path, out_dir: Path) -> FieldRows | SparseRows:
    """Converts a libFFM text file to binary files in `out_dir`, chunk by chunk, each chunk parsed
    in parallel over numba's threads; returns their memmaps: FieldRows when every line is
    `label 0:id:1 1:id:1 ... (F-1):id:1` (stage 04's exports; only ids and labels are written),
    else SparseRows (CSR)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtypes = {"labels": np.uint8, "indptr": np.int64, "ids": np.int32, "fields": np.int32,
              "values": np.float32}
    paths = {name: out_dir / f"{path.stem}.{name}.bin" for name in dtypes}
    with contextlib.ExitStack() as stack:
        writer = _TextWriter(stack, paths)
        for lines in _line_chunks(path):
            writer.write(*_parse_lines(lines, path, writer.rows + 1))
    rows, entries = writer.rows, writer.entries
    if not rows:
        return SparseRows(np.zeros(1, np.int64), *(np.zeros(0, dtypes[name]) for name in
                                                   ("ids", "fields", "values", "labels")))
    labels = np.memmap(paths["labels"], np.uint8, "r")
    if writer.dense:
        return FieldRows(np.memmap(paths["ids"], np.int32, "r", shape=(rows, writer.width)),
                         labels)
    arrays = {name: np.memmap(paths[name], dtypes[name], "r") if entries or name == "indptr"
              else np.zeros(0, dtypes[name]) for name in ("indptr", "ids", "fields", "values")}
    return SparseRows(*arrays.values(), labels)
