"""Where stages 02/03 spend their time: CPU nanoseconds per row of each part, and the ceiling they
put on the end-to-end rate.

    python bench/preprocess_parts.py --rows 2000000          # a generated train file
    python bench/preprocess_parts.py --data data/raw/train.txt

Streams one train file through cumulative passes, each in this process and timed (wall, and CPU
of all threads): read the blocks; + find line ends; + parse (= iter_chunks); + count every field
(= stage 02's work); + look up every id (tables built from those counts as stage 03 builds them);
+ write the int32 id file and fsync it (= stage 03's work). A part's cost is the difference
between its pass and the one before. From the CPU per row of stage 02's and stage 03's work it
prints the highest 01-03 rate these kernels allow with every core busy all the time and no
start-up or publish: (train + test rows) / CPU seconds x cores, with the Kaggle shapes (02 counts
6/7 of train.txt; 03 reads all of it and a test file 13.2% as long). No stage ever reaches it;
it shows which part has to shrink for a target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from preprocessing import count, hash_fields, parse, parse_kernels, schema
from preprocessing.hashtable import FieldTables
from preprocessing.npy import NpyWriter
from preprocessing.split import Part
from pipeline import settings

VALID_FRACTION = settings.SplitConfig().valid_fraction
TEST_PER_TRAIN_ROW = schema.FULL_TEST_ROWS / schema.FULL_TRAIN_ROWS


def timed(work) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of the process, result) of work()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def read_pass(path: Path, ends: bool) -> int:
    rows = 0
    for block in parse._iter_blocks(path, parse.BLOCK_BYTES):
        rows += len(parse_kernels.line_ends(block)) if ends else 1
    return rows


def lookup_pass(path: Path, tables: FieldTables, offsets: np.ndarray, out: Path | None) -> None:
    writer = NpyWriter(out, np.int32, (schema.NUM_FIELDS,)) if out else None
    for chunk in parse.iter_chunks(path, True, reuse_arrays=True):
        fields = hash_fields.map_chunk(tables, offsets, chunk.codes, chunk.rows)
        if writer:
            writer.append(fields)
    if writer:
        writer.close()
        with open(out, "rb") as handle:
            os.fsync(handle.fileno())


def lookup_tables(code_tables, min_count: int) -> tuple[FieldTables, np.ndarray]:
    """Stage 03's tables (xxh64 keys) from the counts, and the field offsets."""
    hash_config = settings.HashConfig(min_count=min_count, mode="xxh64")
    tables, vocabularies = hash_fields.vocabularies_of(
        (table.items() for table in code_tables), hash_config, {})
    return tables, hash_fields.field_offsets(vocabularies)


def measure(path: Path, scratch: Path, min_count: int) -> tuple[list[dict], int]:
    passes = [("read", lambda: read_pass(path, False)),
              ("line ends", lambda: read_pass(path, True)),
              ("parse", lambda: sum(c.rows for c in parse.iter_chunks(path, True,
                                                                       reuse_arrays=True))),
              ("count (stage 02)", lambda: count.count_values(path.parent, [Part(path.name)]))]
    results, outcome = [], {}
    for name, work in passes:
        wall, cpu, outcome[name] = timed(work)
        results.append({"pass": name, "wall_s": wall, "cpu_s": cpu})
    tables, offsets = lookup_tables(outcome["count (stage 02)"][0], min_count)
    for name, out in (("lookup", None), ("write (stage 03)", scratch / "fields.npy")):
        wall, cpu, _ = timed(lambda out=out: lookup_pass(path, tables, offsets, out))
        results.append({"pass": name, "wall_s": wall, "cpu_s": cpu})
    return results, outcome["parse"]


# The pass each pass adds one part to.
BELOW = {"line ends": "read", "parse": "line ends", "count (stage 02)": "parse",
         "lookup": "parse", "write (stage 03)": "lookup"}


def report(results: list[dict], rows: int, cores: int, as_json: bool) -> None:
    cpu = {result["pass"]: result["cpu_s"] for result in results}
    for result in results:
        part = result["cpu_s"] - cpu.get(BELOW.get(result["pass"]), 0.0)
        result["part_cpu_ns_per_row"] = round(part / rows * 1e9)
        result["pass_cpu_ns_per_row"] = round(result["cpu_s"] / rows * 1e9)
    stage02, stage03 = cpu["count (stage 02)"] / rows, cpu["write (stage 03)"] / rows
    all_rows = 1 + TEST_PER_TRAIN_ROW  # per train.txt row
    ceiling = all_rows / (((1 - VALID_FRACTION) * stage02 + all_rows * stage03) / cores)
    summary = {"rows": rows, "cores": cores, "stage02_cpu_ns_per_row": round(stage02 * 1e9),
               "stage03_cpu_ns_per_row": round(stage03 * 1e9),
               "ceiling_01_03_rows_per_second": round(ceiling)}
    if as_json:
        for result in results:
            print(json.dumps(result))
        print(json.dumps(summary))
        return
    print(f"{'pass':<18}{'wall s':>8}{'CPU s':>8}{'pass CPU ns/row':>17}{'part CPU ns/row':>17}")
    for result in results:
        print(f"{result['pass']:<18}{result['wall_s']:>8.2f}{result['cpu_s']:>8.2f}"
              f"{result['pass_cpu_ns_per_row']:>17,}{result['part_cpu_ns_per_row']:>17,}")
    print(f"{rows:,} rows. CPU per row: stage 02's work {summary['stage02_cpu_ns_per_row']:,} ns, "
          f"stage 03's {summary['stage03_cpu_ns_per_row']:,} ns; ceiling of the 01-03 rate with "
          f"{cores} cores always busy: {ceiling:,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="synthetic train rows")
    parser.add_argument("--data", type=Path, help="a labelled train file instead (plain text)")
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this folder")
    parser.add_argument("--min-count", type=int, default=10, help="hash.min_count")
    parser.add_argument("--json", action="store_true", help="one JSON object per pass")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench-parts-"))
    path = args.data
    if path is None:
        path = scratch / f"raw-{args.rows}" / "train.txt"
        if not path.exists():
            subprocess.run([sys.executable, "-m", "preprocessing.synthetic", "--out",
                            str(path.parent), "--train-rows", str(args.rows), "--test-rows", "1",
                            "--seed", "1"], check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    results, rows = measure(path, scratch, args.min_count)
    (scratch / "fields.npy").unlink(missing_ok=True)
    report(results, rows, os.cpu_count() or 1, args.json)


if __name__ == "__main__":
    main()
