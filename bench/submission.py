"""Stage 08's writer and validator on a full-size file: `python bench/submission.py [--rows N]`.

Writes a submission of N rows (default the Kaggle test set, 6,042,135) from seeded random
probabilities with `submissions.write.write_submission` (which validates it before the rename),
then validates the written file again on its own, for plain CSV and gzip. Prints the wall and
CPU seconds of each step (CPU seconds are the fairer figure on a busy machine), the file size and
its md5 (the same md5 before and after a change to the writer shows the bytes did not change).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocessing.schema import FULL_TEST_ROWS, TEST_ID_START  # noqa: E402
from pipeline.manifest import file_md5  # noqa: E402
from submissions import validate, write  # noqa: E402


def timed(function, *args, **kwargs) -> str:
    """`wall s (CPU s)` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args, **kwargs)
    return f"{time.perf_counter() - wall:.1f} ({time.process_time() - cpu:.1f})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_TEST_ROWS)
    parser.add_argument("--seed", type=int, default=2014)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    # Click probabilities of a model: mostly small, a long tail towards 1, some clipped.
    probabilities = 1 / (1 + np.exp(-rng.normal(-1.5, 1.5, args.rows)))
    probabilities[rng.integers(0, args.rows, 1000)] = rng.choice([0.0, 1.0, 1e-9], 1000)
    ids = TEST_ID_START + np.arange(args.rows, dtype=np.int64)
    print("| file | rows | write + validate: wall s (CPU s) | validate: wall s (CPU s) | MB | md5 |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("sub.csv", "sub.csv.gz"):
            path = Path(folder) / name
            written = timed(write.write_submission, path, ids, probabilities, rows=args.rows)
            checked = timed(validate.validate, path, rows=args.rows)
            print(f"| {name} | {args.rows:,} | {written} | {checked} | "
                  f"{path.stat().st_size / 1e6:.1f} | {file_md5(path)} |", flush=True)


if __name__ == "__main__":
    main()
