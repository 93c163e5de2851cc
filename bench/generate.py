"""Synthetic Criteo generator speed: rows/s and peak memory of preprocessing.synthetic.generate.

    python bench/generate.py --rows 2000000          # 2M train rows + 285,714 test rows
    python bench/generate.py --rows 45840617 --json  # full scale

Generates N train rows and N/7 test rows into a temporary folder (deleted afterwards). Rows/s
counts train + test rows over the whole generate() call (bias solve, text, truth files, Bayes
scores); a small warm-up run first takes the one-off costs out of the timing (loading the
compiled kernels, importing sklearn). Rows per CPU second (summed over threads) is the figure
that does not depend on what else the machine runs. Peak RSS is the process's high-water mark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from preprocessing import synthetic


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(rows: int, seed: int, chunk_rows: int) -> dict:
    test_rows = max(rows // 7, 1)
    # generate() prints its scores; keep stdout for this script's own report.
    with (tempfile.TemporaryDirectory(prefix="synthetic-bench-") as out,
          contextlib.redirect_stdout(sys.stderr)):
        synthetic.generate(out, 1_000, 100, seed=seed)
        start, start_cpu = time.perf_counter(), time.process_time()
        summary = synthetic.generate(out, rows, test_rows, seed=seed, chunk_rows=chunk_rows)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        megabytes = sum(path.stat().st_size for path in Path(out).iterdir()) / 2 ** 20
    train = summary["bayes"]["train"]
    return {"train_rows": rows, "test_rows": test_rows, "seconds": round(seconds, 2),
            "rows_per_second": round((rows + test_rows) / seconds),
            "cpu_seconds": round(cpu_seconds, 2),
            "rows_per_cpu_second": round((rows + test_rows) / cpu_seconds),
            "output_mb": round(megabytes, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "chunk_rows": chunk_rows, "seed": seed, "click_rate": round(train["click_rate"], 4),
            "bayes_logloss": round(train["bayes_logloss"], 4),
            "bayes_auc": round(train["bayes_auc"], 4),
            "valid_bayes_logloss": round(summary["bayes"]["valid"]["bayes_logloss"], 4),
            "valid_bayes_auc": round(summary["bayes"]["valid"]["bayes_auc"], 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="train rows (test: rows/7)")
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULT_SEED)
    parser.add_argument("--chunk-rows", type=int, default=synthetic.DEFAULT_CHUNK_ROWS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args.rows, args.seed, args.chunk_rows)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['train_rows']:,} train + {result['test_rows']:,} test rows in "
          f"{result['seconds']} s: {result['rows_per_second']:,} rows/s "
          f"({result['rows_per_cpu_second']:,} per CPU second, all threads), "
          f"{result['output_mb']} MB written, peak RSS {result['peak_rss_mb']} MB")
    print(f"train click rate {result['click_rate']}, Bayes logloss {result['bayes_logloss']}, "
          f"AUC {result['bayes_auc']}; valid Bayes logloss {result['valid_bayes_logloss']}, "
          f"AUC {result['valid_bayes_auc']}")


if __name__ == "__main__":
    main()
