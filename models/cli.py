"""The command line every learner entry point shares, and the preset `auto` resolves to."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.learner import train
from models.runner_config import config_path
from preprocessing.field_spec import FieldSpec
from pipeline import settings
from pipeline.paths import stage_dir

# The preset `auto` gives real data: the first band whose bound its training rows are under.
# small: chosen on 8,571 real rows; medium: from tuning studies at 171,429 synthetic rows, ahead of
# small from 51,429 rows and of paper up to 1,028,571 (bench/README.md, Size bands)
SIZE_BANDS = (("small", 50_000), ("medium", 1_000_000), ("paper", None))
PRESETS = ("demo", *(preset for preset, _ in SIZE_BANDS))  # every model YAML has each


def preset_for(tag: str, preset: str = "auto") -> str:
    """auto: demo on the synthetic dataset (or before stage 03 exists); on real data, the
    `SIZE_BANDS` preset of the training split's row count (field_spec.json).

    The paper's settings (k = 20, 700 x 5 MLPs) are sized for 39M training rows; on a sample
    they overfit within the first epoch, so `small` and `medium` trade capacity for
    regularisation.
    """
    if preset != "auto":
        return preset
    try:
        spec = FieldSpec.load(stage_dir(tag, "03_hash"))
    except FileNotFoundError:
        return "demo"
    if spec.extra.get("source") in (None, "synthetic"):
        return "demo"
    return next(band for band, bound in SIZE_BANDS
                if bound is None or spec.rows["train"] < bound)


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
                        "small, medium: real samples under 50k and 1M training rows; demo: the "
                        "synthetic demo), or auto: the choice of models.cli.preset_for")
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
