"""Learning-rate decay on a plateau: each model trained with and without it on the same rows.

    python bench/lr_decay.py                         # synthetic 200k training rows, real rows
    python bench/lr_decay.py --sets synthetic_200000 --models ipnn,pin --factor 0.5

The sets are bench/quality.py's (its data, stages 00-03 run by ./run.sh under --out). Each model
is trained twice by the Keras runner in an experiments Workspace linked to the set's 03_hash, at
its `auto` preset: as configured (`train.lr_decay_factor` 1, a fixed rate) and with
`train.lr_decay_factor` FACTOR after `train.lr_decay_patience_epochs` = FRACTION x the preset's
`patience_epochs` without a new best. Prints per model both validation loglosses, the paired
difference (decay minus fixed) with its standard error over the validation rows, the epochs
trained (best) and the decays made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (bench/quality.py: the sets)

from experiments import common  # noqa: E402


def compare(name: str, hashed: Path, models: list[str], factor: float, fraction: float,
            out: Path) -> list[dict]:
    labels = np.load(hashed / "valid.labels.npy")
    rows = []
    with common.Workspace(out / f"lr_decay_{name}") as workspace:
        tag = workspace.link_data(hashed)
        for model_id in models:
            fixed_config = workspace.runner_config(tag, model_id)
            patience = fraction * fixed_config.train.patience_epochs
            decay = [f"train.lr_decay_factor={factor}",
                     f"train.lr_decay_patience_epochs={patience}"]
            runs = {"fixed": workspace.train(tag, f"{model_id}__fixed", model_id,
                                             config=fixed_config),
                    "decay": workspace.train(tag, f"{model_id}__decay", model_id, decay)}
            rows.append({"set": name, "model": model_id, "preset": fixed_config.preset,
                         **quality.paired(labels, runs),
                         "decays": runs["decay"].metrics.get("learning_rate_decays", 0)})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="synthetic_200000,real",
                        help="real, synthetic_<train rows> (comma-separated)")
    parser.add_argument("--models", default="ipnn,kpnn_vec,pin,kfm_vec")
    parser.add_argument("--factor", type=float, default=0.5, help="train.lr_decay_factor")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="lr_decay_patience_epochs as a fraction of patience_epochs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/criteo-pnn-quality"))
    args = parser.parse_args(argv)
    table = []
    for name, hashed in quality.hashed_sets(args.sets, args.out):
        table += compare(name, hashed, args.models.split(","), args.factor, args.fraction,
                         args.out)
    quality.print_table(table)


if __name__ == "__main__":
    main()
