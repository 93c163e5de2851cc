"""Hyperparameter search of one model id with Optuna, part of stage 05: `./run.sh --only 05
--tune ID[,ID]` (or `tune.models` in the pipeline config); the budget is `tune.trials` finished
trials and `tune.minutes` wall minutes per study, whichever ends first.

- Space: `configs/models/search/<id>.yaml`, dotted keys of the model's config (`model.*`,
  `train.*`) with Optuna distributions, and per-preset overlays like the model YAMLs. The first
  trial is the untuned config itself (the space must contain it), so every study reports the
  default's score beside the best.
- Honest slice: a trial trains on the first part of the training split and is scored on its
  last `tune.holdout_fraction` (1/7 by default, time-ordered like the validation split). The
  validation split, on which stage 05 early-stops, stages 06-07 fit and the report scores, is
  never read by a trial; only the final model, trained with the best parameters on the whole
  training split, sees it.
- Sampler and pruner: TPE seeded with `tune.seed`; Keras trials report each mid-epoch
  evaluation and a median pruner stops those worse than the median of earlier trials at the same
  evaluation (never within the first epoch). GBDT and libFFM trials are one fit each (their
  learners early-stop on the tuning slice), never pruned.
- Storage: the study lives in SQLite, `artifacts/<tag>/05_tune/<id>/study.db`. A killed search
  resumes where it stopped (the trial the kill cut short is run again with its parameters and
  not counted), a finished one is published with a manifest and skipped like any done stage.
  The study's name is the fingerprint of its config, space, inputs and code without the budget:
  raising the budget continues the same study, anything else starts a new one.
- Outputs (published atomically): `best.json` (the best trial's config values, its score and the
  default's, the trial counts, the default's validation logloss when it was published before),
  `trials.csv` (a row per trial: state, score, best so far, seconds, parameters, marks),
  `trials.png` (score per trial and the best so far), `study.db`, `logs/` (one log per trial).
  Stage 05 then trains the id with `best.json`'s values over its config.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from models.learner import holdout_split
from models.runner_config import CONFIG_DIR, check_model_section
from preprocessing import field_spec
from pipeline import config as config_lib
from pipeline import errors
from pipeline import figures
from pipeline.manifest import Stage, _clean_leftovers, digest, read_manifest
from pipeline.paths import stage_dir

STAGE = "05_tune"
SEARCH_DIR = CONFIG_DIR / "search"
STUDY_FILE = "study.db"
KINDS = ("choices", "int", "float")
COMPLETE = optuna.trial.TrialState.COMPLETE


# ---------------------------------------------------------------------------------------------
# The search space

def load_space(model_id: str, preset: str, path: Path | None = None) -> dict[str, dict]:
    """{dotted config key: entry} of `configs/models/search/<id>.yaml`: its `space:`, then the
    entries of `presets.<preset>` over those of the preset its `base:` names (an entry replaces
    the key's whole entry; null removes it).

    An entry is `{choices: [...]}`, `{int: [low, high]}` or `{float: [low, high]}` (both with
    optional `log: true`, int with `step`), or `{width: ENTRY, depth: ENTRY}` for a list of
    `depth` equal layers (`model.hidden_units`).
    """
    path = Path(path or SEARCH_DIR / f"{model_id}.yaml")
    if not path.exists():
        raise errors.InputNotFound(f"{path}: no search space for {model_id!r}; write one "
                                   f"(configs/models/search/ipnn.yaml shows the format)")
    data = config_lib.load_yaml(path)
    unknown = sorted(set(data) - {"space", "presets"})
    if unknown:
        raise errors.InputError(f"{path}: unknown key(s) {unknown}; known: ['presets', 'space']")
    try:  # a preset's entry replaces the key's whole entry
        overlay = config_lib.preset_overlay(data.get("presets") or {}, preset, path,
                                            lambda base, more: {**base, **more})
    except ValueError as error:
        raise errors.InputError(str(error)) from None
    merged = {**(data.get("space") or {}), **overlay}
    space = {key: entry for key, entry in merged.items() if entry is not None}
    if not space:
        raise errors.InputError(f"{path}: the space of preset {preset!r} is empty")
    return {key: _checked(entry, f"{path}: {key}") for key, entry in space.items()}


def _checked(entry, where: str, layers: bool = True) -> dict:
    """The entry with numbers written as strings (YAML's 1e-3) made numbers; errors name it."""
    if layers and isinstance(entry, dict) and set(entry) == {"width", "depth"}:
        return {part: _checked(entry[part], f"{where}.{part}", False) for part in entry}
    kinds = [kind for kind in KINDS if kind in entry] if isinstance(entry, dict) else []
    if len(kinds) != 1 or set(entry) - set(KINDS) - {"log", "step"}:
        raise errors.InputError(f"{where}: needs exactly one of {list(KINDS)} (plus log, step), or "
                                f"width and depth; got {entry!r}")
    kind, values = kinds[0], entry[kinds[0]]
    if not isinstance(values, list) or not values or (kind != "choices" and len(values) != 2):
        shape = "of values" if kind == "choices" else "[low, high]"
        raise errors.InputError(f"{where}: {kind} takes a list {shape}")
    values = [_number(value) for value in values]
    if kind != "choices" and not values[0] < values[1]:
        raise errors.InputError(f"{where}: {kind} needs low < high, got {values}")
    return {**entry, kind: values}


def _number(value):
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _param_names(key: str, entry: dict) -> list[tuple[str, dict]]:
    """The Optuna parameters of one entry: (name, scalar entry)."""
    if "width" in entry:
        return [(f"{key}.width", entry["width"]), (f"{key}.depth", entry["depth"])]
    return [(key, entry)]


def _suggest(trial: optuna.Trial, name: str, entry: dict):
    if "choices" in entry:
        return trial.suggest_categorical(name, entry["choices"])
    log = bool(entry.get("log", False))
    if "int" in entry:
        low, high = entry["int"]
        return trial.suggest_int(name, int(low), int(high), step=int(entry.get("step", 1)), log=log)
    low, high = entry["float"]
    return trial.suggest_float(name, float(low), float(high), log=log)


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """{dotted config key: value} sampled for `trial`."""
    return values_of(space, {name: _suggest(trial, name, scalar) for key, entry in space.items()
                             for name, scalar in _param_names(key, entry)})


def values_of(space: dict, params: dict) -> dict:
    """Optuna parameters -> {dotted config key: value} (width x depth -> a list of layers)."""
    return {key: [params[f"{key}.width"]] * params[f"{key}.depth"] if "width" in entry
            else params[key] for key, entry in space.items()}


def _contains(entry: dict, value) -> bool:
    if "choices" in entry:
        return value in entry["choices"]
    kind = "int" if "int" in entry else "float"
    number = isinstance(value, int if kind == "int" else (int, float))
    return number and not isinstance(value, bool) and entry[kind][0] <= value <= entry[kind][1]


def default_params(space: dict, config) -> dict:
    """The Optuna parameters of `config`'s own values (the first trial); an InputError names a
    key the config lacks or a value the space does not contain."""
    config_values = pd.json_normalize(config_lib.to_dict(config)).to_dict("records")[0]
    params = {}
    for key, entry in space.items():
        if key not in config_values:
            raise errors.InputError(f"search {key}: not a key of the model config")
        value = config_values[key]
        if "width" not in entry:
            params[key] = value
        elif isinstance(value, list) and value and len(set(value)) == 1:
            params.update({f"{key}.width": value[0], f"{key}.depth": len(value)})
        else:
            raise errors.InputError(f"search {key}: the config's {value!r} is not "
                                    "`depth` equal layers")
        for name, scalar in _param_names(key, entry):
            if not _contains(scalar, params[name]):
                raise errors.InputError(
                    f"search {name}: the config's value {params[name]!r} is outside the space "
                    f"{scalar}; the first trial is the untuned config, so the space must "
                    "contain it")
    return params


def overlay(config, values: dict):
    """`config` (a learner's frozen dataclass) with the dotted keys of `values` merged in as
    `--set key=value` overrides are, built and checked as strictly as the YAML."""
    data = config_lib.to_dict(config)
    for key, value in values.items():
        data = config_lib.merge(data, functools.reduce(lambda inner, part: {part: inner},
                                                       reversed(key.split(".")), value))
    built = config_lib.build(type(config), data, f" (search values {values})")
    if isinstance(getattr(built, "model", None), dict) and "arch" in built.model:
        check_model_section(built.model, "search space")
    return built


def evaluations_per_epoch(config) -> int:
    """The Keras runner's evaluations in one epoch (the pruner's warm-up); 1 for others."""
    train = config.train
    return train.evals_per_epoch if getattr(train, "eval_every_rows", None) == 0 else 1


# ---------------------------------------------------------------------------------------------
# The study

def stage_for(tag: str, model_id: str, learner, config, tune) -> Stage:
    """The 05_tune unit of `model_id`: the learner's stage config and inputs, the space, the
    budget, the seed and the holdout."""
    base = learner.stage_for(tag, model_id, config)
    settings = {"model": base.config, "search": load_space(model_id, config.preset),
                "trials": tune.trials, "minutes": tune.minutes, "seed": tune.seed,
                "holdout_fraction": tune.holdout_fraction}
    return Stage(tag, STAGE, settings, inputs=base.inputs, code=(learner.code, __spec__.name),
                 unit=model_id)


def study_name(stage: Stage) -> str:
    """The study's identity: everything the stage depends on but the budget."""
    kept = {key: value for key, value in stage.config.items() if key not in ("trials", "minutes")}
    return f"{stage.unit}-" + digest({"config": kept, "inputs": stage._input_fingerprints(),
                                      "code": stage.code})[:16]


def read_best(tag: str, model_id: str) -> dict | None:
    path = stage_dir(tag, STAGE, model_id) / "best.json"
    return json.loads(path.read_text()) if path.exists() else None


def tuned_config(tag: str, model_id: str, learner, config, tune, force: bool = False):
    """Runs (or resumes, or skips when done) the study of `model_id`; returns (the config with
    the best trial's values, the `tuned_from` record stage 05 puts in metrics.json)."""
    best = run_study(tag, model_id, learner, config, tune, force)
    tuned_from = {"study": f"{STAGE}/{model_id}", "trial": best["best_trial"],
                  "values": best["values"], "tuning_logloss": best["tuning_logloss"],
                  "default_tuning_logloss": best["default"]["tuning_logloss"],
                  "default_valid_logloss": best["default"]["valid_logloss"]}
    return overlay(config, best["values"]), tuned_from


def run_study(tag: str, model_id: str, learner, config, tune, force: bool = False) -> dict:
    """The search of one model id with `learner` (a `models.learner.Learner`); returns
    best.json's content."""
    stage = stage_for(tag, model_id, learner, config, tune)
    if not stage.should_run(force):
        return read_best(tag, model_id)
    space = stage.config["search"]
    first = default_params(space, config)
    folder = stage.directory
    _clean_leftovers(folder)  # a kill inside a publish left the study beside its folder
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{folder / STUDY_FILE}"
    name = study_name(stage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for summary in optuna.study.get_all_study_summaries(storage):
        if summary.study_name != name or force:  # another config's trials do not carry over
            optuna.delete_study(study_name=summary.study_name, storage=storage)
            shutil.rmtree(folder / "logs")
            (folder / "logs").mkdir()
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                load_if_exists=True)
    requeued = _recover_interrupted(study)
    if not study.trials:
        study.enqueue_trial(first, user_attrs={"default": True})
    study.sampler = optuna.samplers.TPESampler(
        seed=tune.seed + len(study.trials), n_startup_trials=max(2, min(10, tune.trials // 3)))
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=3,
                                               n_warmup_steps=evaluations_per_epoch(config))
    search = Search(stage, study, learner, tag, model_id, config, tune, space)
    search.run(requeued)
    return search.publish()


def _counts(study) -> dict:
    """Trials by state; those a kill cut short (failed, marked interrupted) apart."""
    states = collections.Counter("interrupted" if trial.user_attrs.get("interrupted") else
                                 trial.state.name for trial in study.get_trials(deepcopy=False))
    return {"complete": states["COMPLETE"], "pruned": states["PRUNED"], "failed": states["FAIL"],
            "interrupted": states["interrupted"]}


def _finished(study) -> int:
    """The trials the budget counts: complete, pruned or failed, not interrupted."""
    counts = _counts(study)
    return counts["complete"] + counts["pruned"] + counts["failed"]


def _recover_interrupted(study) -> int:
    """Trials a kill left running (or an interrupt failed) end as failed, marked interrupted and
    not counted; each is queued again with its parameters, once (its retry records `retry_of`).
    Returns how many were queued."""
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    queued = 0
    for trial in trials:  # a trial killed before sampling anything has no parameters to retry
        params = trial.params or trial.system_attrs.get("fixed_params")
        if trial.user_attrs.get("interrupted") and trial.number not in retried and params:
            study.enqueue_trial(params, user_attrs={
                "retry_of": trial.number, "default": bool(trial.user_attrs.get("default"))})
            queued += 1
    return queued


class Search:
    """The trials of one study within its budget, their progress lines, and the outputs."""

    def __init__(self, stage, study, learner, tag, model_id, config, tune, space):
        self.stage, self.study, self.learner = stage, study, learner
        self.tag, self.model_id, self.config, self.tune, self.space = \
            tag, model_id, config, tune, space
        self.spent_before = float(study.user_attrs.get("seconds", 0.0))
        self.started = time.time()

    def spent(self) -> float:
        return self.spent_before + time.time() - self.started

    def run(self, requeued: int) -> None:
        tune, finished = self.tune, _finished(self.study)
        remaining = tune.trials - finished
        seconds = None if tune.minutes is None else tune.minutes * 60 - self.spent_before
        budget = f"{tune.trials} trials" + ("" if tune.minutes is None else
                                            f" or {tune.minutes:g} min")
        cut = holdout_split(self.training_rows(), tune.holdout_fraction)
        print(f"[{self.stage.label}] {'resuming' if finished or requeued else 'starting'} "
              f"{self.study.study_name}: {finished} trials finished of {budget}"
              + (f", {requeued} interrupted trial(s) queued again" if requeued else "")
              + f"; trials train on training rows [0, {cut:,}) and are scored on "
              f"[{cut:,}, {self.training_rows():,}), never on the validation split", flush=True)
        if remaining > 0 and (seconds is None or seconds > 0):
            self.study.optimize(self.objective, n_trials=remaining, timeout=seconds,
                                callbacks=[self.progress], catch=(Exception,))
        if not self.study.get_trials(deepcopy=False, states=(COMPLETE,)):
            raise errors.PipelineError(f"[{self.stage.label}] no trial completed; see the "
                                       f"trial logs in {self.stage.directory / 'logs'}")

    def training_rows(self) -> int:
        return field_spec.FieldSpec.load(stage_dir(self.tag, "03_hash")).rows["train"]

    def objective(self, trial: optuna.Trial) -> float:
        pruned = []

        def on_evaluate(evaluation: int, logloss: float) -> bool:
            trial.report(logloss, evaluation)
            if trial.should_prune():
                pruned.append(evaluation)
            return bool(pruned)

        log = self.stage.directory / "logs" / f"trial-{trial.number:04d}.log"
        try:
            with open(log, "w") as handle, contextlib.redirect_stdout(handle), \
                    contextlib.redirect_stderr(handle):
                values = suggest(trial, self.space)
                print(f"trial {trial.number}: {json.dumps(values)}", flush=True)
                earlier = self.same_as_before(trial)
                if earlier is not None:  # TPE can draw a setting again: its result is known
                    print(f"the setting of trial {earlier.number}: its score", flush=True)
                    trial.set_user_attr("duplicate_of", earlier.number)
                    return earlier.value
                result = self.learner.trial(self.tag, self.model_id,
                                            overlay(self.config, values),
                                            self.tune.holdout_fraction, on_evaluate)
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: not a finished trial
            trial.set_user_attr("interrupted", True)
            raise
        for key, value in result.items():
            if key != "valid_logloss":
                trial.set_user_attr(key, value)
        if pruned:
            raise optuna.TrialPruned(f"pruned at evaluation {pruned[0]}")
        if not math.isfinite(result["valid_logloss"]):
            raise ValueError(f"holdout logloss {result['valid_logloss']}")
        return result["valid_logloss"]

    def same_as_before(self, trial):
        """A complete trial with `trial`'s parameters, or None."""
        return next((earlier for earlier in self.study.get_trials(deepcopy=False,
                                                                   states=(COMPLETE,))
                     if earlier.params == trial.params), None)

    def progress(self, study, trial) -> None:
        """One line per trial: its number, state, score, parameters, the best so far, time."""
        study.set_user_attr("seconds", self.spent())
        finished = _finished(study)
        trials = study.get_trials(deepcopy=False)
        best = min((item for item in trials if item.state == COMPLETE),
                   key=lambda item: item.value, default=None)
        state = trial.state.name.lower()
        if trial.state == optuna.trial.TrialState.FAIL:
            state = f"failed ({trial.user_attrs.get('error', '?')})"
        durations = [item.duration.total_seconds() for item in trials if item.duration is not None
                     and not item.user_attrs.keys() & {"duplicate_of", "interrupted"}]
        remaining = max(0, self.tune.trials - finished) * float(np.mean(durations or [0]))
        if self.tune.minutes is not None:
            remaining = min(remaining, max(0.0, self.tune.minutes * 60 - self.spent()))
        values = {}
        with contextlib.suppress(KeyError):  # a trial that failed before sampling all has none
            values = values_of(self.space, trial.params)
        print(f"[{self.stage.label}] trial {trial.number} ({finished}/{self.tune.trials}"
              f"{', default' if trial.user_attrs.get('default') else ''}) {state}: "
              f"logloss {_text(trial.value)}; "  # a pruned trial's value: its last report
              f"best {'–' if best is None else f'{best.value:.5f} (trial {best.number})'}; "
              f"{_describe(values)}; "
              f"{trial.duration.total_seconds() if trial.duration else 0:.0f} s, "
              f"{self.spent() / 60:.1f} min spent, ETA {remaining / 60:.1f} min", flush=True)

    def publish(self) -> dict:
        """best.json, trials.csv, trials.png, a copy of study.db and the logs, atomically."""
        study, tag, model_id, tune = self.study, self.tag, self.model_id, self.tune
        best = study.best_trial
        default = next((trial for trial in study.get_trials(deepcopy=False)
                        if trial.user_attrs.get("default")
                        and not trial.user_attrs.get("interrupted")), None)
        values = values_of(self.space, best.params)
        base = self.learner.stage_for(tag, model_id, self.config)
        tuned = self.learner.stage_for(tag, model_id, overlay(self.config, values))
        rows = self.training_rows()
        cut = holdout_split(rows, tune.holdout_fraction)
        result = {
            "model_id": model_id, "study": study.study_name, "best_trial": best.number,
            "tuning_logloss": best.value, "params": best.params, "values": values,
            "default": {"trial": None if default is None else default.number,
                        "tuning_logloss": None if default is None else default.value,
                        "state": None if default is None else default.state.name.lower(),
                        **_published_default(tag, model_id, base)},
            "trials": {**_counts(study), "budget": tune.trials},
            "minutes": {"spent": round(self.spent() / 60, 2), "budget": tune.minutes},
            "ended_by": "trials" if _finished(study) >= tune.trials else "minutes",
            "holdout": {"fraction": tune.holdout_fraction, "fit_rows": cut,
                        "holdout_rows": rows - cut},
            "tuned_fingerprint": tuned.fingerprint(), "optuna": optuna.__version__,
        }
        with self.stage.build() as out:
            (out / "best.json").write_text(json.dumps(result, indent=1) + "\n")
            table = trials_table(study)
            table.to_csv(out / "trials.csv", index=False)
            plot_trials(table, out / "trials.png", f"{model_id}: tuning-slice logloss per trial")
            with sqlite3.connect(self.stage.directory / STUDY_FILE) as source, \
                    sqlite3.connect(out / STUDY_FILE) as target:
                source.backup(target)
            shutil.copytree(self.stage.directory / "logs", out / "logs")
            self.stage.record(best={key: result[key] for key in
                                    ("best_trial", "tuning_logloss", "values", "trials")})
        print(f"[{self.stage.label}] best trial {best.number}: tuning-slice logloss "
              f"{best.value:.5f} (default {_text(result['default']['tuning_logloss'])}); "
              f"{_describe(values)}", flush=True)
        return result


def _published_default(tag: str, model_id: str, base: Stage) -> dict:
    """The untuned config's validation logloss: from 05_train/<id> when it holds a model of that
    config and those inputs (code may have changed since), else carried over from an earlier
    best.json of the same, else None."""
    record = {"config": digest(base.config), "valid_logloss": None}
    manifest = read_manifest(base.directory)
    if manifest and manifest.get("config") == base.config and \
            manifest.get("inputs") == base._input_fingerprints():
        metrics = json.loads((base.directory / "metrics.json").read_text())
        return {**record, "valid_logloss": metrics.get("valid_logloss")}
    earlier = (read_best(tag, model_id) or {}).get("default", {})
    if earlier.get("config") == record["config"]:
        return {**record, "valid_logloss": earlier.get("valid_logloss")}
    return record


def _text(value) -> str:
    return "–" if value is None else f"{value:.5f}"


def _describe(values: dict) -> str:
    def show(value):
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, list) and value and len(set(value)) == 1:
            return f"{value[0]}x{len(value)}"
        return str(value)
    return " ".join(f"{key.split('.')[-1]}={show(value)}" for key, value in values.items())


def trials_table(study) -> pd.DataFrame:
    """trials.csv: a row per trial with its number (`trial`), state, `tuning_logloss` (a pruned
    trial's is its last report: Optuna records that as its value), `best_so_far` (of complete
    trials) and `seconds`, then a column per Optuna parameter (the dotted config key; a list of
    equal layers is KEY.width and KEY.depth) and per user attribute (the marks `default`,
    `interrupted`, `retry_of`, `duplicate_of`, a failure's `error`, the learner's extra
    results), empty where a trial has none."""
    table = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params",
                                          "user_attrs"))
    table = table.rename(columns={"number": "trial", "value": "tuning_logloss",
                                  "duration": "seconds"})
    table.columns = [name.removeprefix("params_").removeprefix("user_attrs_")
                     for name in table.columns]
    table["state"] = table["state"].str.lower()
    table["seconds"] = table["seconds"].dt.total_seconds().round(2)
    complete = table["tuning_logloss"].where(table["state"] == "complete")
    table.insert(3, "best_so_far", complete.cummin().ffill())
    return table


def plot_trials(table: pd.DataFrame, path: Path, title: str) -> None:
    """Tuning-slice logloss per trial (complete: dots, pruned: crosses at their last report, the
    default: a star) and the best complete score so far; `table`: trials_table's."""
    figure, axes = figures.pyplot().subplots(figsize=(7, 4), dpi=100)
    scored = table[table["tuning_logloss"].notna()]
    if scored["best_so_far"].notna().any():
        axes.step(table["trial"], table["best_so_far"], where="post", color="black",
                  label="best so far")
    for label, shown, style in (
            ("complete", scored["state"] == "complete", {"s": 18}),
            ("pruned (last report)", scored["state"] == "pruned", {"marker": "x", "color": "grey"}),
            ("default config", scored["default"].eq(True),
             {"marker": "*", "s": 140, "color": "tab:red", "zorder": 3})):
        if shown.any():
            axes.scatter(scored["trial"][shown], scored["tuning_logloss"][shown], label=label,
                         **style)
    finite = scored["tuning_logloss"][np.isfinite(scored["tuning_logloss"])]
    if len(finite):  # a diverged trial must not flatten the rest
        low, high = finite.min(), finite.quantile(0.9)
        axes.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.3 * (high - low + 1e-9))
    axes.set_xlabel("trial")
    axes.set_ylabel("tuning-slice logloss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figures.save_figure(figure, path)
