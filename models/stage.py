"""Stage 05 over the configured model list: each id goes to its learner's entry point.

Keras models train with `models.train`, `libffm*` ids with `models.libffm` (the libFFM algorithm),
`xgb*`/`lgbm*` ids with `models.gbdt`. `./run.sh` calls `python -m models.stage`; `--list` uses
`make_stages`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from models.runner_config import config_path, load_runner_config
from preprocessing.field_spec import FieldSpec
from stages import settings
from stages.manifest import Stage
from stages.paths import stage_dir


def learner(model_id: str) -> str:
    """The module that trains `model_id`."""
    if model_id.startswith("libffm"):
        return "models.libffm"
    if model_id.startswith(("xgb", "lgbm")):
        return "models.gbdt"
    return "models.train"


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


def _load(model_id: str, preset: str):
    module = importlib.import_module(learner(model_id))
    path = config_path(model_id)
    if module.__name__ == "models.train":
        return module, load_runner_config(path, preset)
    return module, module.load_config(path, preset)


def make_stages(tag: str, config: settings.PipelineConfig) -> list[Stage]:
    stages = []
    for model_id in config.models:
        module, model_config = _load(model_id, preset_for(tag))
        if module.__name__ == "models.train":
            stages.append(Stage(tag, "05_train", module.stage_config(model_id, model_config),
                                inputs=[stage_dir(tag, model_config.train.input_stage)],
                                code=["models"],
                                unit=model_id))
        else:
            stages.append(module.stage_for(tag, model_id, model_config))
    return stages


def learner_parser(module_doc: str, preset_default: str = "paper", preset_choices=None,
                   preset_help: str = "a `presets:` entry of the YAML") -> argparse.ArgumentParser:
    """The command line every learner entry point shares: `--tag --model [--config] [--preset]
    [--set ...] [--force]`."""
    parser = argparse.ArgumentParser(description=module_doc.split("\n")[0])
    parser.add_argument("--tag", default="demo", help="artifact tree: artifacts/<tag>/")
    parser.add_argument("--model", required=True, help="model id: configs/models/ID.yaml")
    parser.add_argument("--config", type=Path, help="model YAML (default configs/models/ID.yaml)")
    parser.add_argument("--preset", default=preset_default, choices=preset_choices,
                        help=preset_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set train.epochs=2")
    parser.add_argument("--force", action="store_true", help="retrain even if up to date")
    return parser


def learner_main(module_doc: str, load_config, train_model, argv=None) -> None:
    """The entry point of a learner that is not the Keras runner (models.gbdt, models.libffm)."""
    args = learner_parser(module_doc).parse_args(argv)
    path = args.config or config_path(args.model)
    train_model(args.tag, args.model, load_config(path, args.preset, args.set), force=args.force)


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", help="train only this model id")
    parser.add_argument("--preset", default="auto", help="auto, paper, small or demo")
    parser.add_argument("--resume", action="store_true", help="Keras models: resume a checkpoint")
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    preset = preset_for(args.tag, args.preset)
    for model_id in [args.model] if args.model else config.models:
        module, model_config = _load(model_id, preset)
        options = {"force": args.force}
        if module.__name__ == "models.train":
            options["resume"] = args.resume
        module.train_model(args.tag, model_id, model_config, **options)


if __name__ == "__main__":
    main()
