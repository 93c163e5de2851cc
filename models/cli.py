"""The command line every learner entry point shares, and the preset `auto` resolves to."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.learner import train
from models.runner_config import config_path
from preprocessing.field_spec import FieldSpec
from pipeline import settings
from pipeline.paths import stage_dir

# IPNN on the synthetic generator: small ahead of paper by 0.004 at 342,857 training rows,
# behind by 0.005 at 600,000 and by 0.010 at 1,028,571 (bench/README.md, size bands)
SMALL_TRAIN_ROWS = 500_000


def preset_for(tag: str, preset: str = "auto") -> str:
    """auto: demo on the synthetic dataset (or before stage 03 exists); on real data, small when
    the training split has fewer than SMALL_TRAIN_ROWS rows (field_spec.json), paper otherwise.

    The paper's settings (k = 20, 700 x 5 MLPs) are sized for 39M training rows; on a sample
    they overfit within the first epoch, so `small` trades capacity for regularisation.
    """
    if preset != "auto":
        return preset
    try:
        spec = FieldSpec.load(stage_dir(tag, "03_hash"))
    except FileNotFoundError:
        return "demo"
    if spec.extra.get("source") in (None, "synthetic"):
        return "demo"
    return "small" if spec.rows["train"] < SMALL_TRAIN_ROWS else "paper"


def learner_main(module_doc: str, learner, argv=None, prog: str | None = None,
                 preset_default: str = "paper") -> None:
    """The entry point of every learner (`learner`: a `models.learner.Learner`): `--tag --model
    [--config] [--preset] [--set ...] [--force] [--resume]`; `prog`: the name --help shows."""
    parser = argparse.ArgumentParser(prog=prog, description=module_doc.split("\n")[0])
    parser.add_argument("--tag", default="demo", help="artifact tree: <artifacts>/<tag>/")
    settings.add_artifacts_option(parser)
    parser.add_argument("--model", required=True, help="model id: configs/models/ID.yaml")
    parser.add_argument("--config", type=Path, help="model YAML (default configs/models/ID.yaml)")
    parser.add_argument("--preset", default=preset_default,
                        help="a `presets:` entry of the YAML (paper: the paper's Criteo settings; "
                        "small: real samples under 500k training rows; demo: the synthetic demo), "
                        "or auto: the choice of models.cli.preset_for")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set train.epochs=2")
    parser.add_argument("--force", action="store_true", help="retrain even if up to date")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint (Keras models keep them)")
    args = parser.parse_args(argv)
    settings.apply_artifacts(args)
    path = args.config or config_path(args.model)
    config = learner.load_config(path, preset_for(args.tag, args.preset), args.set)
    train(learner, args.tag, args.model, config, force=args.force, resume=args.resume)
