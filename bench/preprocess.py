"""Preprocessing speed and memory: generate N synthetic rows, run stages 00-04, print figures.

    python bench/preprocess.py --rows 10000000          # a table
    python bench/preprocess.py --rows 1000000 --json    # one JSON object per stage

Each stage runs as its own process, as under ./run.sh; its wall time (process start included) and
peak RSS come from the operating system (wait4). Rows per second count the rows a stage reads:
train split for 02, train + valid + test for 03 and 04. `01-03` is the end-to-end figure of the
issue: (train + test rows) / (time of 01 + 02 + 03). The md5 hashing mode reruns stage 03.
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

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from preprocessing import schema, synthetic  # noqa: E402

STAGES = [("00_raw", "preprocessing.raw"), ("01_split", "preprocessing.split"),
          ("02_count", "preprocessing.count"), ("03_hash", "preprocessing.hash_fields"),
          ("04_export", "preprocessing.export")]


def run_stage(module: str, options: list[str], environment: dict) -> tuple[float, float]:
    """Runs `python -m module options`; returns (seconds, peak RSS in MB) of that process."""
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", module, *options], cwd=REPO_ROOT,
                               env=environment, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{module} failed with status {status}")
    return time.time() - started, usage.ru_maxrss / 1024


def stage_rows(stage: str, rows: dict) -> int:
    if stage == "02_count":
        return rows["train"]
    return rows["train"] + rows["valid"] + rows["test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic train rows")
    parser.add_argument("--json", action="store_true", help="one JSON object per stage")
    parser.add_argument("--no-export", action="store_true", help="skip stage 04")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    test_rows = args.rows * schema.FULL_TEST_ROWS // schema.FULL_TRAIN_ROWS + 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    data = work / "raw"
    data.mkdir(parents=True, exist_ok=True)
    started = time.time()
    synthetic.generate(data, args.rows, test_rows, seed=1)
    results = [{"stage": "generate", "rows": args.rows + test_rows,
                "seconds": time.time() - started, "peak_rss_mb": None}]
    environment = {**os.environ, "CRITEO_PNN_ARTIFACTS": str(work / "artifacts"),
                   "TQDM_DISABLE": "1"}
    options = ["--tag", "bench", "--set", f"raw.data_dir={data}", "--force"]
    split_rows = None
    for stage, module in STAGES[:4] + ([] if args.no_export else STAGES[4:]):
        seconds, rss = run_stage(module, options, environment)
        if split_rows is None and stage != "00_raw":
            split = json.loads((work / "artifacts/bench/01_split/split.json").read_text())
            split_rows = {name: r["rows"][1] - r["rows"][0] for name, r in split.items()}
        rows = args.rows + test_rows if stage in ("00_raw", "01_split") else \
            stage_rows(stage, split_rows)
        results.append({"stage": stage, "rows": rows, "seconds": seconds, "peak_rss_mb": rss})
    seconds, rss = run_stage("preprocessing.hash_fields", options + ["--set", "hash.mode=md5"],
                             environment)
    results.append({"stage": "03_hash[md5]", "rows": stage_rows("03_hash", split_rows),
                    "seconds": seconds, "peak_rss_mb": rss})
    end_to_end = sum(r["seconds"] for r in results if r["stage"] in ("01_split", "02_count",
                                                                     "03_hash"))
    results.append({"stage": "01-03", "rows": args.rows + test_rows, "seconds": end_to_end,
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in results[2:5])})
    report(results, args.json)


def report(results: list[dict], as_json: bool) -> None:
    for result in results:
        result["rows_per_second"] = round(result["rows"] / result["seconds"])
        result["seconds"] = round(result["seconds"], 2)
        if result["peak_rss_mb"] is not None:
            result["peak_rss_mb"] = round(result["peak_rss_mb"])
        if as_json:
            print(json.dumps(result))
        else:
            rss = "" if result["peak_rss_mb"] is None else f"{result['peak_rss_mb']:>8,} MB"
            print(f"{result['stage']:<14}{result['rows']:>12,} rows {result['seconds']:>9.2f} s "
                  f"{result['rows_per_second']:>12,} rows/s {rss}")


if __name__ == "__main__":
    main()
