"""Stage 05 over the configured model list: each id goes to its learner's entry point.

Keras models train with `models.train`, `libffm*` ids with `models.libffm` (the libFFM algorithm),
`xgb*`/`lgbm*` ids with `models.gbdt`. `./run.sh` calls `python -m models.stage`; `--list` uses
`make_stages`.
"""

from __future__ import annotations

import importlib

from models.cli import preset_for
from models.runner_config import config_path, load_runner_config
from stages import settings
from stages.manifest import Stage


def learner(model_id: str) -> str:
    """The module that trains `model_id`."""
    if model_id.startswith("libffm"):
        return "models.libffm"
    if model_id.startswith(("xgb", "lgbm")):
        return "models.gbdt"
    return "models.train"


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
        stages.append(module.stage_for(tag, model_id, model_config))
    return stages


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
