"""Synthetic Criteo: raw Kaggle-format train.txt/test.txt with labels drawn from a planted model.

Usage: python -m preprocessing.synthetic --out DIR --train-rows N --test-rows M [--seed S]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from preprocessing.synthetic import writer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--test-rows", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=writer.DEFAULT_SEED)
    parser.add_argument("--chunk-rows", type=int, default=writer.DEFAULT_CHUNK_ROWS)
    args = parser.parse_args(argv)
    writer.generate(args.out, args.train_rows, args.test_rows, args.seed, args.chunk_rows)
    print(f"wrote {args.out}/train.txt, test.txt and truth files (seed {args.seed})")


if __name__ == "__main__":
    main()
