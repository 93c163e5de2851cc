"""Stage 02: value counts per field over the training split only (streaming, bounded memory).

Reads: the parts of the train split (`01_split/split.json`: rows of `00_raw/train.txt`, or whole
day files). Writes: `02_count/counts.npz` (per field: value codes sorted ascending and their
counts, see preprocessing/parse.py for codes), `fallback_text.json` (text of non-hex categorical
values; bytes that are not UTF-8 as lone surrogates U+DC80..U+DCFF, written as JSON escapes, so
the raw bytes come back exactly), `count_summary.json` (rows, click rate, distinct values per field,
`max_bins`, the train split's padded and skipped rows, `unusual_values`: per field, the values
that are not 8 lowercase hex chars, by kind, with examples; printed too).

With raw.on_bad_row=skip, a share of bad rows in the train split above raw.max_skipped_fraction
is an error, and so is a train split with no row left.

With `count.max_bins` N, each categorical code (but missing) is replaced by its bin in [0, N)
before counting (preprocessing/bins.py), so each table holds at most N + 1 codes; stage 03 reads
N from count_summary.json and bins the same way. No fallback text is kept then: keys are bins.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

from preprocessing import bins, parse, schema
from preprocessing.hashtable import CodeTable
from preprocessing.split import Part, load_split, split_rows
from preprocessing.split import describe as describe_parts
from pipeline import config as config_lib
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir



@numba.njit(cache=True, nogil=True, parallel=True)
def _transpose(codes, out):
    """out[f, r] = codes[r, f], in tiles of 256 rows: the codes are read once, where 39 column
    copies each read a cache line per row (10% of the counting time)."""
    tiles = (codes.shape[0] + 255) // 256
    for tile in numba.prange(tiles):
        for field in range(codes.shape[1]):
            for row in range(tile * 256, min(tile * 256 + 256, codes.shape[0])):
                out[field, row] = codes[row, field]


# Distinct unusual (non-hex) values tracked per field for the report; beyond this many, their
# rows are still counted but new values are not (the report says "at least").
UNUSUAL_CAP = 1 << 20
UNUSUAL_KINDS = ("uppercase hex", "other length", "not hex", "non-ASCII", "not UTF-8")


class UnusualValues:
    """Per categorical field, the values that are not 8 lowercase hex chars: {code: rows}."""

    def __init__(self):
        self.codes: dict[int, dict[int, int]] = {}
        self.rows: dict[int, int] = {}
        self.capped: set[int] = set()
        self.texts: dict[int, str] = {}

    def add(self, chunk) -> None:
        for field, counts in chunk.unusual.items():
            known = self.codes.setdefault(field, {})
            for code, rows in counts.items():
                if code in known:
                    known[code] += rows
                elif len(known) < UNUSUAL_CAP:
                    known[code] = rows
                    self.texts[code] = chunk.fallback_text[code]
                else:
                    self.capped.add(field)
                self.rows[field] = self.rows.get(field, 0) + rows

    def summary(self) -> dict:
        """{field name: {"values", "rows", "kinds": {kind: values}, "examples"}} (fields with
        unusual values only); "values_at_least": true when there were more than UNUSUAL_CAP."""
        result = {}
        for field in sorted(self.codes):
            codes = self.codes[field]
            kinds = {}
            for code in codes:
                kind = value_kind(self.texts[code])
                kinds[kind] = kinds.get(kind, 0) + 1
            common = sorted(codes, key=lambda code: (-codes[code], code))[:3]
            entry = {"values": len(codes), "rows": self.rows[field],
                     "kinds": {kind: kinds[kind] for kind in UNUSUAL_KINDS if kind in kinds},
                     "examples": [shown(self.texts[code]) for code in common]}
            if field in self.capped:
                entry["values_at_least"] = True
            result[schema.FIELD_NAMES[field]] = entry
        return result


_HEX_CHARS = frozenset(b"0123456789abcdefABCDEF")


def value_kind(text: str) -> str:
    """Why a categorical value took the parser's fallback code (not 8 lowercase hex chars)."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if not data.isascii():
        return "non-ASCII"
    if len(data) != 8:
        return "other length"
    return "uppercase hex" if set(data) <= _HEX_CHARS else "not hex"


def shown(text: str) -> str:
    """A value as printed: UTF-8 as is, other bytes as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def count_values(raw_dir: Path, parts: list[Part], on_bad_row: str = "error", threads: int = 2,
                 max_bins: int | None = None, max_bad_fraction: float | None = None):
    """Counts every field's value codes over `parts` (of files in `raw_dir`), in order;
    categorical codes binned first with `max_bins`. More bad rows than `max_bad_fraction` of a
    part is a parse.BadRowError.

    Returns (tables: list of CodeTable per field, rows, positives, report, fallback texts,
    UnusualValues).
    """
    tables = [CodeTable() for _ in schema.FIELD_NAMES]
    report = parse.ParseReport()
    unusual = UnusualValues()
    rows, positives, fallback_text = 0, 0, {}
    progress = tqdm(total=split_rows(parts), unit="row", unit_scale=True, desc="count",
                    mininterval=2, disable=None)
    columns = np.empty((schema.NUM_FIELDS, 0), dtype=np.int64)
    with ThreadPoolExecutor(threads) as pool:
        for part in parts:
            for chunk in parse.iter_chunks(raw_dir / part.file, True, on_bad_row, report=report,
                                           start_row=part.start, stop_row=part.stop,
                                           reuse_arrays=True, max_bad_fraction=max_bad_fraction):
                if chunk.unusual:
                    unusual.add(chunk)
                if max_bins is None:
                    fallback_text.update(chunk.fallback_text)
                else:
                    bins.bin_codes(chunk.codes, max_bins)
                if columns.shape[1] < chunk.rows:
                    columns = np.empty((schema.NUM_FIELDS, chunk.rows), dtype=np.int64)
                _transpose(chunk.codes, columns)
                # Largest tables first: the two threads then finish nearly together.
                order = sorted(range(schema.NUM_FIELDS), key=lambda field: -tables[field].size)
                list(pool.map(lambda field, block=columns[:, :chunk.rows]: tables[field].count(
                    block[field]), order))
                rows += chunk.rows
                positives += int(chunk.labels.sum())
                progress.update(chunk.rows)
    progress.close()
    return tables, rows, positives, report, fallback_text, unusual


def write_counts(out, tables, fallback_text) -> dict:
    arrays, distinct = {}, {}
    for name, table in zip(schema.FIELD_NAMES, tables):
        codes, counts = table.items()
        arrays[f"codes_{name}"], arrays[f"counts_{name}"] = codes, counts
        distinct[name] = len(codes)
    np.savez(out / "counts.npz", **arrays)
    # ensure_ascii (the default): lone surrogates (non-UTF-8 bytes) are written as \udcXX
    # escapes, which json.loads turns back into the same text.
    (out / "fallback_text.json").write_text(json.dumps({str(k): v for k, v in
                                                        sorted(fallback_text.items())}) + "\n")
    return distinct


def iter_counts(tag: str):
    """Yields (field name, codes, counts) of a built stage 02, one field in memory at a time."""
    with np.load(stage_dir(tag, "02_count") / "counts.npz") as data:
        for name in schema.FIELD_NAMES:
            yield name, data[f"codes_{name}"], data[f"counts_{name}"]


def load_summary(tag: str) -> dict:
    """count_summary.json of a built stage 02 (rows, click rate, distinct values, max_bins)."""
    return json.loads((stage_dir(tag, "02_count") / "count_summary.json").read_text())


def load_fallback_text(tag: str) -> dict:
    """{code: text} of the non-hex categorical values seen in training."""
    texts = json.loads((stage_dir(tag, "02_count") / "fallback_text.json").read_text())
    return {int(code): text for code, text in texts.items()}


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    inputs = [stage_dir(tag, "00_raw"), stage_dir(tag, "01_split")]
    return Stage(tag, "02_count", {"on_bad_row": config.raw.on_bad_row,
                                   "max_skipped_fraction": config.raw.max_skipped_fraction,
                                   "count": config_lib.to_dict(config.count)}, inputs)


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    args, config, stage = started
    raw_dir = stage_dir(args.tag, "00_raw")
    max_bins = config.count.max_bins
    if max_bins is None and json.loads((raw_dir / "raw.json").read_text())["source"] == \
            schema.CRITEO_1TB:
        print("warning: Criteo 1TB input with count.max_bins null: exact counts of hundreds of "
              "millions of values per field may not fit in memory (--config "
              "configs/criteo1tb.yaml bins them)", file=sys.stderr)
    train_parts = load_split(args.tag)["train"]
    tables, rows, positives, report, texts, unusual = count_values(
        raw_dir, train_parts, config.raw.on_bad_row, max_bins=max_bins,
        max_bad_fraction=skip_bound(config))
    if rows == 0:
        raise parse.empty_split_error("train", describe_parts(train_parts), report.lines,
                                      report.first_bad)
    unusual_values = unusual.summary()
    with stage.build() as out:
        distinct = write_counts(out, tables, texts)
        summary = {"rows": rows, "click_rate": positives / max(rows, 1),
                   "distinct": distinct, "max_bins": max_bins, "padded_rows": report.padded_rows,
                   "skipped_rows": report.skipped_rows, "problems": report.first_problems,
                   "unusual_values": unusual_values}
        (out / "count_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        stage.record(rows=rows, padded_rows=report.padded_rows,
                     skipped_rows=report.skipped_rows,
                     unusual_values={name: {key: entry[key] for key in ("values", "rows")}
                                     for name, entry in unusual_values.items()})
    binned = f" (categorical values in {max_bins:,} bins per field)" if max_bins else ""
    print(f"  {rows:,} training rows, click rate {summary['click_rate']:.4f}, "
          f"{sum(distinct.values()):,} distinct values{binned}; padded {report.padded_rows}, "
          f"skipped {report.skipped_rows} (train split)")
    print_unusual(unusual_values)


def skip_bound(config: settings.PipelineConfig) -> float | None:
    """raw.max_skipped_fraction when bad rows are skipped (with "error" any bad row stops)."""
    return config.raw.max_skipped_fraction if config.raw.on_bad_row == "skip" else None


def print_unusual(unusual_values: dict) -> None:
    """One line per field with categorical values that are not 8 lowercase hex chars."""
    for name, entry in unusual_values.items():
        count = f"{'at least ' if entry.get('values_at_least') else ''}{entry['values']:,}"
        kinds = ", ".join(f"{number:,} {kind}" for kind, number in entry["kinds"].items())
        examples = ", ".join(f"'{example}'" for example in entry["examples"])
        print(f"  {name}: {count} value{'s' * (entry['values'] != 1)} not 8 lowercase hex chars "
              f"in {entry['rows']:,} training rows ({kinds}; e.g. {examples})")
    if any("uppercase hex" in entry["kinds"] for entry in unusual_values.values()):
        print("  note: uppercase hex is kept as its own value ('ABCDEF12' and 'abcdef12' get "
              "different keys and ids; Criteo's files are lowercase), as are all other values")


if __name__ == "__main__":
    main()
