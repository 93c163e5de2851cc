"""The command line every learner entry point shares, and the preset `auto` resolves to."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.learner import train
from models.runner_config import config_path
from preprocessing.field_spec import FieldSpec
from pipeline.paths import stage_dir

SMALL_TRAIN_ROWS = 1_000_000


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


def learner_parser(module_doc: str, preset_default: str = "paper", preset_choices=None,
                   preset_help: str = "a `presets:` entry of the YAML",
                   prog: str | None = None) -> argparse.ArgumentParser:
    """The command line every learner entry point shares: `--tag --model [--config] [--preset]
    [--set ...] [--force]`."""
    parser = argparse.ArgumentParser(prog=prog, description=module_doc.split("\n")[0])
    parser.add_argument("--tag", default="demo", help="artifact tree: artifacts/<tag>/")
    parser.add_argument("--model", required=True, help="model id: configs/models/ID.yaml")
    parser.add_argument("--config", type=Path, help="model YAML (default configs/models/ID.yaml)")
    parser.add_argument("--preset", default=preset_default, choices=preset_choices,
                        help=preset_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set train.epochs=2")
    parser.add_argument("--force", action="store_true", help="retrain even if up to date")
    return parser


def learner_main(module_doc: str, learner, argv=None, prog: str | None = None) -> None:
    """The entry point of a learner other than the Keras runner (models.gbdt, models.libffm):
    `learner` (a `models.learner.Learner`) trains and publishes the model; `prog`: the name
    --help shows (`python -m models.libffm`)."""
    args = learner_parser(module_doc, prog=prog).parse_args(argv)
    config = learner.load_config(args.config or config_path(args.model), args.preset, args.set)
    train(learner, args.tag, args.model, config, force=args.force)
