"""Preprocessing speed and memory: generate N synthetic rows, run stages 00-04, print figures.

    python bench/preprocess.py --rows 10000000          # a table
    python bench/preprocess.py --rows 1000000 --json    # one JSON object per stage

Each stage runs as its own process, as under ./run.sh; its wall time (process start included), CPU
time (user + system, all threads) and peak RSS come from the operating system (wait4). Rows per
CPU second do not depend much on what else the machine runs; rows per second do (the load average
is printed). Rows per second count the rows a stage reads:
train split for 02, train + valid + test for 03 and 04. `01-03` is the end-to-end figure of the
issue: (train + test rows) / (time of 01 + 02 + 03). The md5 hashing mode reruns stage 03.
A stage's previous output is removed before it is timed, so every figure is that of a first build
(a rerun also deletes the old output on publish: about 2 s for stage 03's 2.4 GB at 10M rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from measure import run_measured

from preprocessing import schema
from preprocessing import split as split_lib

STAGES = [("00_raw", "preprocessing.raw"), ("01_split", "preprocessing.split"),
          ("02_count", "preprocessing.count"), ("03_hash", "preprocessing.hash_fields"),
          ("04_export", "preprocessing.export")]


def run_stage(stage: str, rows: int, module: str, options: list[str],
              environment: dict) -> dict:
    """Runs `python -m module options`; its wall and CPU seconds and peak RSS (from wait4)."""
    artifacts = environment.get("CRITEO_PNN_ARTIFACTS")
    if artifacts:
        shutil.rmtree(Path(artifacts) / "bench" / stage.split("[")[0], ignore_errors=True)
    result = run_measured([sys.executable, "-m", module, *options], environment,
                          stdout=subprocess.DEVNULL)
    return {"stage": stage, "rows": rows, **result}


def stage_rows(stage: str, rows: dict) -> int:
    if stage == "02_count":
        return rows["train"]
    return rows["train"] + rows["valid"] + rows["test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic train rows")
    parser.add_argument("--json", action="store_true", help="one JSON object per stage")
    parser.add_argument("--no-export", action="store_true", help="skip stage 04")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it; data it "
                        "already holds for the same --rows is reused")
    args = parser.parse_args()
    test_rows = args.rows * schema.FULL_TEST_ROWS // schema.FULL_TRAIN_ROWS + 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    data = work / f"raw-{args.rows}"
    results = []
    if not (data / "truth.json").exists():
        # In a child process, as every stage: a child's peak RSS starts at its parent's size.
        results.append(run_stage("generate", args.rows + test_rows, "preprocessing.synthetic", [
            "--out", str(data), "--train-rows", str(args.rows), "--test-rows", str(test_rows),
            "--seed", "1"], dict(os.environ)))
    environment = {**os.environ, "CRITEO_PNN_ARTIFACTS": str(work / "artifacts"),
                   "TQDM_DISABLE": "1"}
    options = ["--artifacts", str(work / "artifacts"), "--tag", "bench",
               "--set", f"raw.data_dir={data}", "--force"]
    split_rows = None
    for stage, module in STAGES[:4] + ([] if args.no_export else STAGES[4:]):
        if stage in ("00_raw", "01_split"):
            rows = args.rows + test_rows
        else:
            split = split_lib.parse_split(json.loads(
                (work / "artifacts/bench/01_split/split.json").read_text()))
            split_rows = {name: split_lib.split_rows(parts) for name, parts in split.items()}
            rows = stage_rows(stage, split_rows)
        results.append(run_stage(stage, rows, module, options, environment))
    results.append(run_stage("03_hash[md5]", stage_rows("03_hash", split_rows),
                             "preprocessing.hash_fields", options + ["--set", "hash.mode=md5"],
                             environment))
    end_to_end = [r for r in results if r["stage"] in ("01_split", "02_count", "03_hash")]
    results.append({"stage": "01-03", "rows": args.rows + test_rows,
                    **{key: sum(r[key] for r in end_to_end) for key in ("seconds", "cpu_seconds")},
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in end_to_end)})
    report(results, args.json)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
          if not args.json else json.dumps({"load_average": os.getloadavg()[0]}))


def report(results: list[dict], as_json: bool) -> None:
    for result in results:
        result["rows_per_second"] = round(result["rows"] / result["seconds"])
        result["rows_per_cpu_second"] = round(result["rows"] / max(result["cpu_seconds"], 1e-9))
        for key in ("seconds", "cpu_seconds"):
            result[key] = round(result[key], 2)
        result["peak_rss_mb"] = round(result["peak_rss_mb"])
        if as_json:
            print(json.dumps(result))
        else:
            print(f"{result['stage']:<14}{result['rows']:>12,} rows {result['seconds']:>9.2f} s "
                  f"{result['rows_per_second']:>12,} rows/s "
                  f"{result['rows_per_cpu_second']:>12,} rows/cpu-s {result['peak_rss_mb']:>8,} MB")


if __name__ == "__main__":
    main()
