"""Full-size dry run: every stage from raw files to a validated submission, timed one by one.

    python -m preprocessing.synthetic --out /data/full --train-rows 45840617 --test-rows 6042135
    python bench/full_run.py --data /data/full                 # the stages with LR, as below
    python bench/full_run.py --data /data/full --set 'models=[lr, fm]'

Runs each stage script (`stages/NN_*.sh`, the upload excluded) as `./run.sh` would, on the given
files, and prints per stage the wall time, CPU time, peak RSS (wait4 of the stage process, its
children included) and peak anonymous memory (RSS less file-backed pages, sampled twice a second
over the process tree: the pages of memory-mapped inputs count in RSS but are page cache the
kernel reclaims), as a Markdown table and, with --json, one JSON object per stage. Defaults keep
it to what the dry run is about: `models=[lr]` and no libFFM text export (tens of GB at full
size); any --set adds to or overrides them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from measure import REPO_ROOT, run_measured

DEFAULT_SETTINGS = ["models=[lr]", "export.libffm=false"]


def stage_scripts(only: str | None) -> list[Path]:
    """The stage scripts to run: all but the upload, or those named by `only` ("02,03,04")."""
    numbers = only.split(",") if only else None
    return [path for path in sorted((REPO_ROOT / "stages").glob("[0-9][0-9]_*.sh"))
            if not path.name.startswith("09_") and (numbers is None or path.name[:2] in numbers)]


def run_script(script: Path, options: list[str]) -> dict:
    environment = {**os.environ, "PYTHON": sys.executable, "TQDM_DISABLE": "1",
                   "PYTHONPATH": str(REPO_ROOT)}
    result = run_measured(["bash", str(script), *options], environment, sample_seconds=0.5)
    return {"stage": script.stem, "seconds": round(result["seconds"], 1),
            "cpu_seconds": round(result["cpu_seconds"], 1),
            "peak_rss_mb": round(result["peak_rss_mb"]),
            "peak_anonymous_mb": round(result["peak_anonymous_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder with train/test files")
    parser.add_argument("--tag", default="full", help="artifact tree (default: full)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="rebuild stages that are done")
    parser.add_argument("--only", help="run only these stages, e.g. 02,03 (as ./run.sh --only)")
    parser.add_argument("--json", action="store_true", help="one JSON object per stage")
    args = parser.parse_args()
    options = ["--tag", args.tag, "--set", f"raw.data_dir={args.data.resolve()}"]
    for setting in DEFAULT_SETTINGS + args.set:
        options += ["--set", setting]
    options += ["--force"] if args.force else []
    results = []
    if not args.json:
        print("| stage | wall s | CPU s | peak RSS MB | peak anonymous MB |\n|---|---|---|---|---|")
    for script in stage_scripts(args.only):
        print(f"== {script.stem}", file=sys.stderr, flush=True)
        results.append(run_script(script, options))
        print(json.dumps(results[-1]) if args.json else _row(results[-1]), flush=True)
    total = {"stage": "all", "seconds": round(sum(r["seconds"] for r in results), 1),
             "cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 1),
             "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
             "peak_anonymous_mb": max(r["peak_anonymous_mb"] for r in results)}
    print(json.dumps(total) if args.json else _row(total))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
          file=sys.stderr)


def _row(result: dict) -> str:
    return (f"| {result['stage']} | {result['seconds']:,.1f} | {result['cpu_seconds']:,.1f} | "
            f"{result['peak_rss_mb']:,} | {result['peak_anonymous_mb']:,} |")


if __name__ == "__main__":
    main()
