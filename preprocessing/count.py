"""Stage 02: value counts per field over the training split only (streaming, bounded memory).

Reads: `00_raw/train.txt` rows of the train split (`01_split/split.json`). Writes:
`02_count/counts.npz` (per field: value codes sorted ascending and their counts, see
preprocessing/parse.py for codes), `fallback_text.json` (text of non-hex categorical values),
`count_summary.json` (rows, click rate, distinct values per field, parse report).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from preprocessing import parse, schema
from preprocessing.hashtable import CodeTable
from preprocessing.split import load_split
from stages import settings
from stages.manifest import Stage
from stages.paths import stage_dir

CODE = ["preprocessing/count.py", "preprocessing/parse.py", "preprocessing/hashtable.py"]


def count_values(path, start_row: int, stop_row: int, on_bad_row: str = "error",
                 threads: int = 2):
    """Counts every field's value codes over rows [start_row, stop_row) of a raw train file.

    Returns (tables: list of CodeTable per field, rows, positives, report, fallback texts).
    """
    tables = [CodeTable() for _ in schema.FIELD_NAMES]
    report = parse.ParseReport()
    rows, positives, fallback_text = 0, 0, {}
    progress = tqdm(total=stop_row - start_row, unit="row", unit_scale=True, desc="count",
                    mininterval=2, disable=None)
    with ThreadPoolExecutor(threads) as pool:
        for chunk in parse.iter_chunks(path, True, on_bad_row, report=report,
                                       start_row=start_row, stop_row=stop_row):
            list(pool.map(lambda field: tables[field].count(chunk.codes[:, field]),
                          range(schema.NUM_FIELDS)))
            rows += chunk.rows
            positives += int(chunk.labels.sum())
            fallback_text.update(chunk.fallback_text)
            progress.update(chunk.rows)
    progress.close()
    return tables, rows, positives, report, fallback_text


def write_counts(out, tables, fallback_text) -> dict:
    arrays, distinct = {}, {}
    for name, table in zip(schema.FIELD_NAMES, tables):
        codes, counts = table.items()
        arrays[f"codes_{name}"], arrays[f"counts_{name}"] = codes, counts
        distinct[name] = len(codes)
    np.savez(out / "counts.npz", **arrays)
    (out / "fallback_text.json").write_text(json.dumps({str(k): v for k, v in
                                                        sorted(fallback_text.items())}) + "\n")
    return distinct


def iter_counts(tag: str):
    """Yields (field name, codes, counts) of a built stage 02, one field in memory at a time."""
    with np.load(stage_dir(tag, "02_count") / "counts.npz") as data:
        for name in schema.FIELD_NAMES:
            yield name, data[f"codes_{name}"], data[f"counts_{name}"]


def load_fallback_text(tag: str) -> dict:
    """{code: text} of the non-hex categorical values seen in training."""
    texts = json.loads((stage_dir(tag, "02_count") / "fallback_text.json").read_text())
    return {int(code): text for code, text in texts.items()}


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    inputs = [stage_dir(tag, "00_raw"), stage_dir(tag, "01_split")]
    return Stage(tag, "02_count", {"on_bad_row": config.raw.on_bad_row}, inputs, CODE)


def main(argv=None) -> None:
    started = settings.start_stage(__doc__, make_stage, argv)
    if not started:
        return
    args, config, stage = started
    start, stop = load_split(args.tag)["train"]["rows"]
    train_file = stage_dir(args.tag, "00_raw") / "train.txt"
    tables, rows, positives, report, texts = count_values(train_file, start, stop,
                                                          config.raw.on_bad_row)
    with stage.build() as out:
        distinct = write_counts(out, tables, texts)
        summary = {"rows": rows, "click_rate": positives / max(rows, 1),
                   "distinct": distinct, "padded_rows": report.padded_rows,
                   "skipped_rows": report.skipped_rows, "problems": report.first_problems}
        (out / "count_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        stage.record(rows=rows, padded_rows=report.padded_rows,
                     skipped_rows=report.skipped_rows)
    print(f"  {rows:,} training rows, click rate {summary['click_rate']:.4f}, "
          f"{sum(distinct.values()):,} distinct values; padded {report.padded_rows}, "
          f"skipped {report.skipped_rows}")


if __name__ == "__main__":
    main()
