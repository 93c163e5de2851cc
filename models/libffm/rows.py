"""Row sources: the same two operations (`train`, `predict`) over the field files and over
libFFM text, which is converted once to binary CSR files and streamed from them.

Neither is ever loaded whole: `take` reads a block of contiguous rows into RAM (the trainer's
unit of shuffling), `head` limits a split without reading it. `open_inputs` opens a tag's three
splits in the configured format, `model_size` gives the model's n and m for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
from numba import njit

from models.libffm import kernels
from models.libffm.config import LibffmConfig, ModelConfig, TrainConfig, input_dir
from preprocessing import field_spec

TEXT_CHUNK_BYTES = 1 << 26


@dataclasses.dataclass
class FieldRows:
    """Rows of the field files: every row has one feature per field, value 1.

    ids: int32 [N, F] global ids, all < n (the kernels do not check: `open_inputs` verifies the
    files), a memmap or an in-RAM block; labels: uint8 [N] or None.
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
        flat_state, _, m, groups = kernels.flat(state)
        kernels.predict_fields(flat_state, m, groups, np.asarray(self.ids), self._scale(model),
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


def open_inputs(tag: str, config: LibffmConfig, cache_dir: Path) -> dict:
    """{split: FieldRows | SparseRows} for train/valid/test (whole splits)."""
    directory = input_dir(tag, config)
    if config.data.format == "fields":
        _, splits = field_spec.open_field_files(directory, check_ids=True)
        rows = {name: FieldRows(split.fields, split.labels) for name, split in splits.items()}
    else:
        rows = {}
        for name in field_spec.SPLITS:
            path = directory / f"{name}.ffm"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing; data.format=text needs the libFFM "
                                        "text of stage 04 (export.libffm / leaves.libffm)")
            rows[name] = convert_text(path, cache_dir)
        rows["test"].labels = None
    return rows


def model_size(tag: str, config: LibffmConfig, rows: dict) -> tuple[int, int]:
    """(n, m): the field files' total vocabulary and field count; for text, as libffm: the
    largest index and field of the training file, plus one."""
    if config.data.format == "fields":
        spec = field_spec.FieldSpec.load(input_dir(tag, config))
        return spec.total_vocabulary_size, spec.num_fields
    train = rows["train"]
    return int(train.ids.max()) + 1, train.num_fields


# libFFM text -> CSR files (streamed in chunks, never the whole file in RAM)

@njit(cache=True)
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


@njit(cache=True)
def _parse_chunk(buffer, labels, indptr, ids, fields, values):
    """Parses complete lines `label field:index:value ...`.

    Returns (rows, entries, bad line number or -1); `indptr` gets per-row entry ends.
    """
    rows, entries, position, end = 0, 0, 0, buffer.shape[0]
    while position < end:
        label, position = _parse_number(buffer, position, end)
        if np.isnan(label):
            return rows, entries, rows
        labels[rows] = 1 if label > 0 else 0
        while position < end and buffer[position] != 10:
            if buffer[position] == 32 or buffer[position] == 9 or buffer[position] == 13:
                position += 1
                continue
            field, position = _parse_number(buffer, position, end)
            if position >= end or buffer[position] != 58:  # ':'
                return rows, entries, rows
            index, position = _parse_number(buffer, position + 1, end)
            if position >= end or buffer[position] != 58 or np.isnan(field) or np.isnan(index) \
                    or field < 0 or index < 0:
                return rows, entries, rows
            value, position = _parse_number(buffer, position + 1, end)
            if np.isnan(value):
                return rows, entries, rows
            fields[entries], ids[entries], values[entries] = field, index, value
            entries += 1
        position += 1
        indptr[rows] = entries
        rows += 1
    return rows, entries, -1


def _line_chunks(path: Path):
    """Yields whole lines, about TEXT_CHUNK_BYTES at a time (the file may lack a final newline)."""
    with open(path, "rb") as source:
        rest = b""
        while chunk := source.read(TEXT_CHUNK_BYTES):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            rest = data[cut:]
        if rest.strip():
            yield rest


def _parse_lines(lines: bytes, path: Path, first_line: int) -> dict:
    """CSR arrays of complete libFFM lines; indptr holds each row's end (relative to the chunk)."""
    rows = lines.count(b"\n") + 1
    entries = lines.count(b":") // 2 + 1
    parsed = {"labels": np.empty(rows, np.uint8), "indptr": np.empty(rows, np.int64),
              "ids": np.empty(entries, np.int32), "fields": np.empty(entries, np.int32),
              "values": np.empty(entries, np.float32)}
    rows, entries, bad = _parse_chunk(np.frombuffer(lines, np.uint8), parsed["labels"],
                                      parsed["indptr"], parsed["ids"], parsed["fields"],
                                      parsed["values"])
    if bad >= 0:
        raise ValueError(f"{path}:{first_line + bad}: not a libFFM line "
                         "(label field:index:value ...)")
    return {name: array[:rows if name in ("labels", "indptr") else entries]
            for name, array in parsed.items()}


def convert_text(path: Path, out_dir: Path) -> SparseRows:
    """Converts a libFFM text file to CSR arrays in `out_dir`, chunk by chunk; returns memmaps."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtypes = {"labels": np.uint8, "indptr": np.int64, "ids": np.int32, "fields": np.int32,
              "values": np.float32}
    paths = {name: out_dir / f"{path.stem}.{name}.bin" for name in dtypes}
    rows = entries = 0
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(target, "wb")) for name, target in paths.items()}
        files["indptr"].write(np.zeros(1, np.int64).tobytes())
        for lines in _line_chunks(path):
            parsed = _parse_lines(lines, path, rows + 1)
            parsed["indptr"] += entries
            for name, array in parsed.items():
                files[name].write(array.tobytes())
            rows, entries = rows + len(parsed["labels"]), entries + len(parsed["ids"])
    sizes = {"labels": rows, "indptr": rows + 1, "ids": entries, "fields": entries,
             "values": entries}
    arrays = {name: np.memmap(paths[name], dtype, "r") if sizes[name] else np.zeros(0, dtype)
              for name, dtype in dtypes.items()}
    return SparseRows(arrays["indptr"], arrays["ids"], arrays["fields"], arrays["values"],
                      arrays["labels"])
