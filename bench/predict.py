"""Rows/s of `./run.sh predict` (criteo_pnn) for LR, IPNN and the default blend of a built tag.

    python bench/predict.py --artifacts DIR --tag demo --rows 1000000

The input is the tag's own test.txt repeated to `--rows` raw rows (its real value distribution:
vocabulary hits, rare and unseen values as the test rows have them). Each source is scored in a
fresh process (`python bench/predict.py --one SOURCE ...`, measured by bench/measure.py: wall and
CPU seconds, peak RSS), which loads the predictor (timed apart) and streams the file into a plain
`Id,Predicted` CSV; the child also reports the CPU seconds of the scoring alone (all threads),
which a machine shared with other work inflates less than the wall time. Rounds alternate the
sources, so drift of the machine's speed hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.measure import run_measured  # noqa: E402

SOURCES = ("06_calibrate/lr", "06_calibrate/ipnn", None)  # None: the submission's blend


def make_input(test_txt: Path, rows: int, out: Path) -> int:
    """`rows` raw rows: test.txt repeated (its last copy cut)."""
    lines = test_txt.read_bytes().splitlines(keepends=True)
    written = 0
    with open(out, "wb") as handle:
        while written < rows:
            part = lines[:rows - written]
            handle.writelines(part)
            written += len(part)
    return written


def score_one(args) -> None:
    """Child process: load, then stream the input; prints a JSON line."""
    import criteo_pnn
    from pipeline.run import quiet_native_logs

    started = time.perf_counter()
    with quiet_native_logs(False):
        predictor = criteo_pnn.load(Path(args.artifacts) / args.tag,
                                    None if args.one == "default" else args.one)
    load_seconds = time.perf_counter() - started
    cpu_started = time.process_time()
    summary = predictor.predict_file(args.input, args.output, progress=False)
    print(json.dumps({"source": predictor.source, "members": len(predictor.members),
                      "load_seconds": load_seconds,
                      "scoring_cpu_seconds": time.process_time() - cpu_started, **summary}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default=str(REPO_ROOT / "artifacts"))
    parser.add_argument("--tag", default="demo")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sources", default=",".join(source or "default" for source in SOURCES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        score_one(args)
        return
    tag_dir = Path(args.artifacts) / args.tag
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as scratch:
        scratch = Path(scratch)
        rows = make_input(tag_dir / "00_raw" / "test.txt", args.rows, scratch / "rows.txt")
        print(f"{rows:,} raw rows ({(scratch / 'rows.txt').stat().st_size / 1e6:,.0f} MB) from "
              f"{tag_dir}/00_raw/test.txt; {args.rounds} rounds, sources alternating")
        for round_number in range(args.rounds):
            for source in args.sources.split(","):
                command = [sys.executable, __file__, "--one", source, "--artifacts",
                           args.artifacts, "--tag", args.tag, "--input", str(scratch / "rows.txt"),
                           "--output", str(scratch / "out.csv")]
                with open(scratch / "child.json", "w") as stdout:
                    measured = run_measured(command, environment, stdout=stdout)
                child = json.loads((scratch / "child.json").read_text().strip().splitlines()[-1])
                results.setdefault(source, []).append({**child, **measured})
                print(f"  round {round_number + 1} {child['source']}: "
                      f"{child['rows_per_second']:,.0f} rows/s scoring "
                      f"({child['rows'] / child['scoring_cpu_seconds']:,.0f} per CPU s), load "
                      f"{child['load_seconds']:.1f} s, process {measured['seconds']:.1f} s wall "
                      f"{measured['cpu_seconds']:.1f} CPU s, peak RSS "
                      f"{measured['peak_rss_mb']:,.0f} MB", flush=True)
    print("\n| source | members | rows/s (scoring, median) | rows per scoring CPU s | load s | "
          "process wall s | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for source, runs in results.items():
        rate = statistics.median(run["rows_per_second"] for run in runs)
        cpu = statistics.median(run["rows"] / run["scoring_cpu_seconds"] for run in runs)
        print(f"| {runs[0]['source']} | {runs[0]['members']} | {rate:,.0f} | {cpu:,.0f} | "
              f"{statistics.median(run['load_seconds'] for run in runs):.1f} | "
              f"{statistics.median(run['seconds'] for run in runs):.1f} | "
              f"{max(run['peak_rss_mb'] for run in runs):,.0f} MB |")


if __name__ == "__main__":
    main()
