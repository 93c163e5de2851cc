"""Stage 05 over the configured model list: each id goes to its learner's entry point.

Keras models train with `models.train`, `libffm*` ids with `models.libffm` (the libFFM algorithm),
`xgb*`/`lgbm*` ids with `models.gbdt`. An id in `tune.models` (or `--tune`) is searched first
(`models.tune`, unit `05_tune/<id>`) and trained with the best trial's values over its config.
`./run.sh` calls `python -m models.stage`; `--list` uses `make_stages`.
"""

from __future__ import annotations

import importlib

from models import tune
from models.cli import preset_for
from models.runner_config import config_path, load_runner_config
from pipeline import errors, settings
from pipeline.manifest import Stage


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


def tuned_ids(config: settings.PipelineConfig, more: str = "") -> tuple[str, ...]:
    """`tune.models` plus the comma-separated ids of `more`; each must be in `models`."""
    ids = tuple(dict.fromkeys([*config.tune.models,
                               *(item.strip() for item in more.split(",") if item.strip())]))
    unknown = [model_id for model_id in ids if model_id not in config.models]
    if unknown:
        raise errors.InputError(f"tune: {', '.join(unknown)} not in models {list(config.models)}; "
                         "only a trained id can be tuned")
    return ids


def make_stages(tag: str, config: settings.PipelineConfig) -> list[Stage]:
    """Per id its 05_train unit, preceded by its 05_tune unit when tuned. Before the study is
    done a tuned id's 05_train unit cannot know its config: it is shown stale ("tuned")."""
    stages = []
    tuned = tuned_ids(config)
    for model_id in config.models:
        module, model_config = _load(model_id, preset_for(tag))
        if model_id not in tuned:
            stages.append(module.stage_for(tag, model_id, model_config))
            continue
        study = tune.stage_for(tag, model_id, module, model_config, config.tune)
        stages.append(study)
        best = tune.read_best(tag, model_id) if study.status()[0] == "done" else None
        if best is None:
            train = module.stage_for(tag, model_id, model_config)
            train.config = {**train.config, "tuned": f"pending: {study.label} not done"}
        else:
            train = module.stage_for(tag, model_id, tune.overlay(model_config, best["values"]))
        stages.append(train)
    return stages


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", help="train only this model id")
    parser.add_argument("--preset", default="auto", help="auto, paper, small or demo")
    parser.add_argument("--resume", action="store_true", help="Keras models: resume a checkpoint")
    parser.add_argument("--tune", default="", metavar="ID[,ID]",
                        help="search these ids' hyperparameters first (added to tune.models)")
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    preset = preset_for(args.tag, args.preset)
    tuned = tuned_ids(config, args.tune)
    for model_id in [args.model] if args.model else config.models:
        module, model_config = _load(model_id, preset)
        options = {"force": args.force}
        if model_id in tuned:
            # --force retrains; it does not redo a finished study (delete 05_tune/<id> for that)
            model_config, tuned_from = tune.tuned_config(args.tag, model_id, module,
                                                         model_config, config.tune)
            if module.__name__ == "models.train":
                options["extra_metrics"] = {"tuned_from": tuned_from}
        if module.__name__ == "models.train":
            options["resume"] = args.resume
        module.train_model(args.tag, model_id, model_config, **options)


if __name__ == "__main__":
    main()
