"""Raw rows to score, read by stage 00's and the parser's own code: a TSV file (39 columns, or 40
with the label first; plain or .gz), a Kaggle CSV (`Id,[Label,]I1..C26`, checked and converted as
stage 00 converts it), or a pandas DataFrame (written as raw TSV text, then parsed the same way).

`iter_blocks` streams the rows in the parser's chunks (`preprocessing.parse.iter_chunks`: bounded
memory) as `Block`s that cover every line of the input in order: a bad row is either an error
naming file and line (`raw.on_bad_row=error`, stage 00's message) or, with `skip`, kept in place
and marked, so that the scorer gives it the training click rate. A row is never dropped or moved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np

from preprocessing import parse, raw, schema
from pipeline import errors

TAB_OR_NEWLINE = re.compile(r"[\t\n\r]")
FRAME_SLICE_ROWS = 1 << 16  # DataFrame rows turned into text at a time


@dataclasses.dataclass(frozen=True)
class Source:
    """What is parsed (`tsv`) and how messages name it.

    shown: the user's input as messages name it (a file, or "DataFrame"); labelled: whether rows
    have the label first (40 columns); id_start: the Id of row 0 (stage 03's rule: 60000000 for
    unlabelled rows, 10000000 for labelled ones; a Kaggle CSV's own Ids follow the same rule,
    which stage 00's conversion checks); line_offset: input line = TSV line + this (1 for a CSV
    header); index: a DataFrame's index, to name its rows."""
    tsv: Path
    shown: str
    labelled: bool
    id_start: int
    line_offset: int = 0
    index: object = None

    def describe_line(self, line: int) -> str:
        """How a message names TSV line `line` (1-based)."""
        if self.index is not None:
            row = line - 1
            label = self.index[row] if row < len(self.index) else row
            return f"DataFrame row {row} (index {label!r})"
        return f"{self.shown}:{line + self.line_offset}"

    def message(self, text: str) -> str:
        """A parser message about the TSV, rewritten to name the user's input and line."""
        if self.shown == str(self.tsv):
            return text
        names = dict.fromkeys([str(self.tsv), str(parse.user_path(self.tsv)), self.tsv.name])
        for name in names:
            text = re.sub(re.escape(name) + r":(\d+)",
                          lambda match: self.describe_line(int(match.group(1))), text)
            text = text.replace(name, self.shown)
        return text


@contextlib.contextmanager
def open_file(path: Path):
    """The Source of a raw TSV or Kaggle CSV file (a CSV converted into a temporary TSV by stage
    00's converter, removed on exit)."""
    path = Path(path)
    if not path.exists():
        raise errors.InputNotFound(f"{path}: no such file; check the path")
    if path.is_dir():
        raise errors.InputError(f"{path}: a folder; give a raw Criteo file (TSV, .gz or CSV)")
    if raw.is_csv(path):
        header = raw.first_line(path).decode("utf-8", "replace").split(",")
        split = "train" if schema.LABEL_NAME in header else "test"
        with tempfile.TemporaryDirectory(prefix="criteo-pnn-predict-") as directory:
            tsv = Path(directory) / f"{split}.txt"
            raw.convert_kaggle_csv(path, split, tsv)
            raw.check_columns(tsv, split, path)
            start = schema.TRAIN_ID_START if split == "train" else schema.TEST_ID_START
            yield Source(tsv, str(path), split == "train", start, line_offset=1)
        return
    first = raw.first_line(path)
    columns = first.count(b"\t") + 1
    if columns > schema.NUM_FIELDS + 1:
        raise errors.InputError(f"{path}:1: {columns} tab-separated columns, expected "
                                f"{schema.NUM_FIELDS} (I1..I13, C1..C26) or "
                                f"{schema.NUM_FIELDS + 1} (the label first)")
    labelled = columns == schema.NUM_FIELDS + 1
    split = "train" if labelled else "test"
    raw.check_columns(path, split)
    yield Source(path, str(path), labelled,
                 schema.TRAIN_ID_START if labelled else schema.TEST_ID_START)


def _text_column(values, name: str, integer: bool, index, first_row: int) -> np.ndarray:
    """Rows of one DataFrame column (from row `first_row` on) as raw field text: missing -> "",
    integral floats without ".0"."""
    import pandas as pd

    series = pd.Series(values)
    missing = series.isna().to_numpy()
    if integer and pd.api.types.is_float_dtype(series.dtype):
        numbers = series.to_numpy(np.float64)
        whole = ~missing & (numbers == np.round(numbers)) & (np.abs(numbers) < 2.0 ** 63)
        text = np.where(whole, np.char.mod("%d", np.where(whole, numbers, 0).astype(np.int64)),
                        series.astype(str).to_numpy())
    elif integer and series.dtype == object:  # numbers and text mixed: whole floats as ints
        text = np.array([str(int(value)) if isinstance(value, (float, np.floating))
                         and float(value).is_integer() else str(value) for value in series],
                        dtype=object)
    else:
        text = series.astype(str).to_numpy()
    text = np.where(missing, "", text).astype(object)
    if not integer:
        bad = [first_row + row for row, value in enumerate(text) if TAB_OR_NEWLINE.search(value)]
        if bad:
            raise errors.InputError(f"DataFrame row {bad[0]} (index {index[bad[0]]!r}), column "
                                    f"{name}: a tab or line break inside a value; raw Criteo "
                                    f"values cannot hold one")
    return text


@contextlib.contextmanager
def open_frame(frame):
    """The Source of a pandas DataFrame with columns I1..I13 and C1..C26 (others ignored),
    written as raw TSV into a temporary file."""
    missing = [name for name in schema.FIELD_NAMES if name not in frame.columns]
    if missing:
        raise errors.InputError(f"DataFrame: no column {', '.join(missing)}; predict needs "
                                f"I1..I13 and C1..C26 (other columns are ignored)")
    index = list(frame.index)
    with tempfile.TemporaryDirectory(prefix="criteo-pnn-frame-") as directory:
        tsv = Path(directory) / "frame.txt"
        with open(tsv, "wb") as handle:
            for start in range(0, len(index), FRAME_SLICE_ROWS):
                part = frame.iloc[start:start + FRAME_SLICE_ROWS]
                columns = [_text_column(part[name].to_numpy(), name, name in schema.INT_NAMES,
                                        index, start) for name in schema.FIELD_NAMES]
                lines = ["\t".join(fields) for fields in zip(*columns)]
                handle.write(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        yield Source(tsv, "DataFrame", False, schema.TEST_ID_START, index=index)


@dataclasses.dataclass
class Block:
    """Rows [first_row, first_row + lines) of the input, every line of them.

    codes int64 [kept, 39] and ints float32 [kept, 13] of the parsed rows, at positions `kept`
    (indices into the block's lines); `bad`: positions of bad rows (kept or skipped by the
    parser), which are scored with the training click rate."""
    first_row: int
    lines: int
    codes: np.ndarray
    ints: np.ndarray
    kept: np.ndarray
    bad: np.ndarray

    def ids(self, source: Source) -> np.ndarray:
        return source.id_start + self.first_row + np.arange(self.lines, dtype=np.int64)


def _gap(first_row: int, lines: int) -> Block:
    """Lines that the parser skipped whole (every one of them bad)."""
    return Block(first_row, lines, np.empty((0, schema.NUM_FIELDS), np.int64),
                 np.empty((0, schema.NUM_INT_FIELDS), np.float32), np.empty(0, np.int64),
                 np.arange(lines, dtype=np.int64))


def iter_blocks(source: Source, on_bad_row: str = "error", max_bad_fraction: float | None = None,
                report: parse.ParseReport | None = None):
    """Yields the input's Blocks in order (see Block); parser errors name the user's input."""
    report = report if report is not None else parse.ParseReport()
    next_row = 0
    try:
        for chunk in parse.iter_chunks(source.tsv, source.labelled, on_bad_row, report=report,
                                       max_bad_fraction=max_bad_fraction):
            if chunk.first_row > next_row:
                yield _gap(next_row, chunk.first_row - next_row)
            kept = (np.arange(chunk.rows, dtype=np.int64) if chunk.offsets is None
                    else np.asarray(chunk.offsets, np.int64))
            bad = np.concatenate([chunk.skipped, chunk.missing]).astype(np.int64) - chunk.first_row
            yield Block(chunk.first_row, chunk.lines, chunk.codes, chunk.ints, kept, np.sort(bad))
            next_row = chunk.first_row + chunk.lines
    except parse.BadRowError as error:
        raise parse.BadRowError(source.message(str(error))) from error
    if report.lines > next_row:
        yield _gap(next_row, report.lines - next_row)
    report.first_problems[:] = [source.message(text) for text in report.first_problems]
    if report.first_bad:
        report.first_bad = source.message(report.first_bad)
