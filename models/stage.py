"""Stage 05 over the configured model list: each id is trained by its learner.

The `learner:` key of `configs/models/<id>.yaml` names it (`keras` when absent); `LEARNERS` maps
each name to the module holding its `LEARNER` (`models/learner.py`: the protocol and the one
publisher). An id in `tune.models` (or `--tune`) is searched first (`models.tune`, unit
`05_tune/<id>`) and trained with the best trial's values over its config.
`./run.sh` calls `python -m models.stage`; `--list` uses `make_stages`.
"""

from __future__ import annotations

import importlib

from models import learner, tune
from models.cli import PRESETS, preset_for
from models.runner_config import config_path
from pipeline import errors, settings
from pipeline.manifest import Stage

LEARNERS = {"keras": "models.train", "libffm": "models.libffm", "gbdt": "models.gbdt"}


def learner_for(model_id: str) -> learner.Learner:
    """The learner that trains `model_id`."""
    kind = learner.learner_kind(model_id)
    if kind not in LEARNERS:
        raise errors.InputError(f"{config_path(model_id)}: learner: {kind!r} is not one of "
                                f"{sorted(LEARNERS)}")
    return importlib.import_module(LEARNERS[kind]).LEARNER


def _load(model_id: str, preset: str):
    model_learner = learner_for(model_id)
    return model_learner, model_learner.load_config(config_path(model_id), preset)


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
        model_learner, model_config = _load(model_id, preset_for(tag))
        if model_id not in tuned:
            stages.append(model_learner.stage_for(tag, model_id, model_config))
            continue
        study = tune.stage_for(tag, model_id, model_learner, model_config, config.tune)
        stages.append(study)
        best = tune.read_best(tag, model_id) if study.status()[0] == "done" else None
        if best is None:
            train = model_learner.stage_for(tag, model_id, model_config)
            train.config = {**train.config, "tuned": f"pending: {study.label} not done"}
        else:
            train = model_learner.stage_for(tag, model_id,
                                            tune.overlay(model_config, best["values"]))
        stages.append(train)
    return stages


def main(argv=None) -> None:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", help="train only this model id")
    parser.add_argument("--preset", default="auto", help=f"auto or one of {', '.join(PRESETS)}")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint (Keras models keep them)")
    parser.add_argument("--tune", default="", metavar="ID[,ID]",
                        help="search these ids' hyperparameters first (added to tune.models)")
    args = parser.parse_args(argv)
    config = settings.from_args(args)
    preset = preset_for(args.tag, args.preset)
    tuned = tuned_ids(config, args.tune)
    for model_id in [args.model] if args.model else config.models:
        model_learner, model_config = _load(model_id, preset)
        tuned_from = None
        if model_id in tuned:
            # --force retrains; it does not redo a finished study (delete 05_tune/<id> for that)
            model_config, tuned_from = tune.tuned_config(args.tag, model_id, model_learner,
                                                         model_config, config.tune)
        learner.train(model_learner, args.tag, model_id, model_config, force=args.force,
                      resume=args.resume,
                      extra_metrics=None if tuned_from is None else {"tuned_from": tuned_from})


if __name__ == "__main__":
    main()
