"""Checks a Kaggle submission file: `python -m submissions.validate FILE [--rows N | --tag T]`.

A valid file (plain or gzip, detected from its first bytes) has the header `Id,Predicted`, then
exactly N rows `Id,probability` with Ids N consecutive integers from 60000000 (the test rows in
order, so no Id is missing or repeated) and finite probabilities strictly between 0 and 1. N is
6,042,135 for the Kaggle test set; with `--tag T`, the test rows stage 00 counted in T's
test.txt (`artifacts/T/00_raw/raw.json`), never what a later stage kept. The file is streamed in
blocks of lines (bounded memory), each read with pandas and, if that finds anything unusual,
checked line by line, so the first problem stops the check with its line number. Exit status 0
when valid, 1 otherwise (2 when `--tag` has no stage 00 count).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import math
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.schema import FULL_TEST_ROWS, TEST_ID_START
from pipeline import errors, settings
from pipeline.paths import stage_dir

HEADER = b"Id,Predicted"
COLUMNS = HEADER.decode().split(",")
COLUMN_TYPES = {"Id": np.int64, "Predicted": np.float64}
GZIP_MAGIC = b"\x1f\x8b"
NUMBER_CHARACTERS = b"0123456789.eE+-"
NOT_DIGIT_ID = re.compile(rb"[^0-9,\n][^,\n]*,")  # a non-digit before a line's comma
BLOCK_BYTES = 1 << 22  # lines are read and checked in blocks of about this size


class SubmissionError(errors.InputError):
    """A broken submission file; the message starts with `FILE:line N:`."""


@dataclasses.dataclass(frozen=True)
class SubmissionSummary:
    path: str
    rows: int
    first_id: int
    last_id: int
    min_prediction: float
    max_prediction: float
    mean_prediction: float


def stage_00_test_rows(tag: str) -> int:
    """The rows stage 00 counted in the tag's test.txt (`00_raw/raw.json`): a submission has
    exactly one row per test line. FileNotFoundError / ValueError when there is no such count."""
    path = stage_dir(tag, "00_raw") / "raw.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; a submission is checked against stage 00's "
                                f"count of test.txt rows: build stage 00 (./run.sh --only 00)")
    rows = json.loads(path.read_text()).get("rows")
    if not isinstance(rows, dict) or not isinstance(rows.get("test"), int):
        raise errors.InputError(f"{path}: no test row count (rows: {rows!r}); the input has no "
                         f"Kaggle test set to submit")
    return rows["test"]


def validate_for_tag(path: Path, tag: str) -> SubmissionSummary:
    """validate(path) against the test rows stage 00 counted for `tag`."""
    return validate(path, rows=stage_00_test_rows(tag))


def open_lines(path: Path):
    """A binary line iterator over the plain or gzip file."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def validate(path: Path, rows: int = FULL_TEST_ROWS,
             first_id: int = TEST_ID_START) -> SubmissionSummary:
    """Raises SubmissionError naming the file and line of the first problem."""
    path = Path(path)
    if rows < 1:
        raise errors.InputError(f"rows={rows}: a submission has at least one test row")
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    try:
        with open_lines(path) as handle:
            return _check(path, handle, rows, first_id)
    except (OSError, EOFError, zlib.error) as error:  # truncated or corrupt gzip
        raise SubmissionError(f"{path}: cannot read: {error}") from error


def _check(path: Path, handle, rows: int, first_id: int) -> SubmissionSummary:
    header = handle.readline()
    if not header:
        raise SubmissionError(f"{path}: empty file; expected the header {HEADER.decode()}")
    if header.rstrip(b"\r\n") != HEADER:
        raise SubmissionError(f"{path}:line 1: header {_show(header)}, expected {HEADER.decode()}")
    count, total, low, high = 0, 0.0, math.inf, -math.inf
    while lines := handle.readlines(BLOCK_BYTES):
        probabilities = None
        if count + len(lines) <= rows:
            probabilities = _block_probabilities(lines, first_id + count)
        if probabilities is None:  # a problem somewhere, or just a form the fast check skips
            probabilities = _check_lines(path, lines, count, rows, first_id)
        count += len(lines)
        total += float(probabilities.sum())
        low, high = min(low, probabilities.min()), max(high, probabilities.max())
    if count < rows:
        missing = f"Id {first_id + count}"
        if rows - count > 1:
            missing += f"..{first_id + rows - 1}"
        raise SubmissionError(f"{path}: {count:,} rows, expected {rows:,} (missing {missing})")
    return SubmissionSummary(str(path), count, first_id, first_id + count - 1, float(low),
                             float(high), total / count)


def _block_probabilities(lines: list[bytes], first_expected: int) -> np.ndarray | None:
    """Fast check of a block of data lines in the exact form the writer produces (read by
    pandas); the probabilities [len(lines)] if every line passes, None otherwise (then
    `_check_lines` finds and names the problem, or accepts a form this check does not cover,
    such as CRLF or an Id with leading zeros)."""
    text = b"".join(lines)
    # pandas reads more than a submission may hold (quoted or padded fields, `6e7` as an Id, a
    # third column taken as the index): only number characters, one comma a line and digit-only
    # Ids reach it.
    if text.translate(None, NUMBER_CHARACTERS + b",\n") or text.count(b",") != len(lines) \
            or NOT_DIGIT_ID.search(text):
        return None
    try:
        # round_trip: the same correctly rounded values as Python's float()
        frame = pd.read_csv(io.BytesIO(text), header=None, names=COLUMNS, dtype=COLUMN_TYPES,
                            float_precision="round_trip")
    except (ValueError, OverflowError):  # pandas' ParserError is a ValueError
        return None
    probabilities = frame["Predicted"].to_numpy()
    if len(frame) != len(lines) or not np.array_equal(
            frame["Id"].to_numpy(), first_expected + np.arange(len(lines), dtype=np.int64)) \
            or not ((probabilities > 0) & (probabilities < 1)).all():
        return None
    return probabilities


def _check_lines(path: Path, lines: list[bytes], count: int, rows: int,
                 first_id: int) -> np.ndarray:
    """Line-by-line check of a block whose first line is data row `count`; raises
    SubmissionError at the first problem, else returns the probabilities."""
    probabilities = np.empty(len(lines))
    for index, line in enumerate(lines):
        where = f"{path}:line {count + index + 2}"
        if count + index == rows:
            raise SubmissionError(f"{where}: extra row {_show(line)}; the test set has "
                                  f"{rows:,} rows")
        fields = line.rstrip(b"\r\n").split(b",")
        if len(fields) != 2:
            raise SubmissionError(f"{where}: {_show(line)} does not have 2 comma-separated "
                                  f"values (Id,Predicted)")
        id_text, probability_text = fields
        expected = first_id + count + index
        if not id_text.isdigit():
            raise SubmissionError(f"{where}: Id {_show(id_text)} is not a non-negative integer")
        row_id = int(id_text)
        if row_id != expected:
            raise SubmissionError(f"{where}: {_id_problem(row_id, expected, first_id)}")
        try:
            # float() also takes "nan", "inf", " 0.5" and "0_5"; the strip rejects them.
            if probability_text.strip(NUMBER_CHARACTERS):
                raise ValueError
            probability = float(probability_text)
        except ValueError:
            raise SubmissionError(f"{where}: Predicted {_show(probability_text)} is not a "
                                  f"decimal number") from None
        if not 0.0 < probability < 1.0:
            raise SubmissionError(f"{where}: Predicted {_show(probability_text)} is not a "
                                  f"probability strictly between 0 and 1")
        probabilities[index] = probability
    return probabilities


def _id_problem(row_id: int, expected: int, first_id: int) -> str:
    if first_id <= row_id < expected:  # every Id before `expected` appeared once, in order
        return f"duplicate Id {row_id} (already on line {row_id - first_id + 2})"
    if row_id > expected:
        return (f"Id {row_id}, expected {expected}: Ids must be consecutive "
                f"(missing {expected}..{row_id - 1})")
    return f"Id {row_id}, expected {expected}: test Ids start at {first_id}"


def _show(text: bytes, limit: int = 40) -> str:
    """repr of a (possibly long or binary) field for error messages."""
    text = text.rstrip(b"\r\n")
    shown = text[:limit].decode("ascii", errors="backslashreplace")
    return repr(shown + ("..." if len(text) > limit else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="submission CSV, plain or .gz")
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument("--rows", type=int, default=FULL_TEST_ROWS,
                      help=f"expected number of rows (default: the Kaggle test set, "
                           f"{FULL_TEST_ROWS:,})")
    rows.add_argument("--tag", help="expect the test rows stage 00 counted for this artifact "
                                    "tree (artifacts/TAG/00_raw/raw.json)")
    settings.add_artifacts_option(parser)
    parser.add_argument("--first-id", type=int, default=TEST_ID_START,
                        help=f"Id of the first row (default {TEST_ID_START})")
    args = parser.parse_args(argv)
    settings.apply_artifacts(args)
    try:
        expected = args.rows if args.tag is None else stage_00_test_rows(args.tag)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        summary = validate(args.file, expected, args.first_id)
    except SubmissionError as error:
        print(f"INVALID {error}", file=sys.stderr)
        return 1
    print(f"OK {summary.path}: {summary.rows:,} rows, Ids {summary.first_id}..{summary.last_id}, "
          f"Predicted in [{summary.min_prediction:.6g}, {summary.max_prediction:.6g}], "
          f"mean {summary.mean_prediction:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
