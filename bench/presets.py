"""Presets side by side: each model trained under each of two presets on the same rows.

    python bench/presets.py --sets synthetic_60000_seed7,synthetic_400000_seed7 \
        --models ipnn,kpnn_vec,pin --presets small,medium

The sets are bench/quality.py's (`synthetic_N_seedS`: another seed plants another model, rows a
choice of presets was never made on). Each model is trained by the Keras runner in an
experiments Workspace linked to the set's 03_hash, once per preset. Prints per model both
validation loglosses, the paired difference (second preset minus first) with its standard error
over the validation rows, and the epochs trained (best).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: the sets)

from experiments import common  # noqa: E402


def compare(name: str, hashed: Path, models: list[str], presets: list[str],
            out: Path) -> list[dict]:
    labels = np.load(hashed / "valid.labels.npy")
    rows = []
    with common.Workspace(out / f"presets_{name}") as workspace:
        tag = workspace.link_data(hashed)
        for model_id in models:
            runs = {preset: workspace.train(tag, f"{model_id}__{preset}", model_id,
                                            preset=preset) for preset in presets}
            rows.append({"set": name, "valid rows": len(labels), "model": model_id,
                         **quality.paired(labels, runs)})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="synthetic_60000_seed7,synthetic_400000_seed7",
                        help="real, synthetic_<train rows>[_seed<seed>] (comma-separated)")
    parser.add_argument("--models", default="ipnn,kpnn_vec,pin")
    parser.add_argument("--presets", default="small,medium", help="two presets")
    parser.add_argument("--out", type=Path, default=Path("/tmp/criteo-pnn-quality"))
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    if len(presets) != 2:
        parser.error("--presets takes two presets, e.g. small,medium")
    table = []
    for name, hashed in quality.hashed_sets(args.sets, args.out):
        table += compare(name, hashed, args.models.split(","), presets, args.out)
    quality.print_table(table)


if __name__ == "__main__":
    main()
