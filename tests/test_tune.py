"""The hyperparameter search (models/tune.py) on tiny field files: it finds a planted best
setting, resumes after a kill with exactly its budget of finished trials, is skipped once done,
never reads the validation split, and stage 05 publishes the tuned config."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from ensembles import report
from models import train, tune
from models import stage as model_stage
from models.cli import PRESETS
from models.runner_config import RunnerConfig, TrainConfig, config_path
from pipeline import settings
from pipeline.manifest import Stage, read_manifest
from pipeline.paths import artifacts_root, stage_dir
from tests.conftest import REPO_ROOT, use_artifacts
from tests.test_leaves import staged  # noqa: F401  (module-scoped: tag t through 04_export)
from tests.test_runner import make_field_files

# learning rate 0.1 is planted: in two epochs the smaller rates leave LR near its start
PLANTED = {"train.learning_rate": {"choices": [1.0e-4, 1.0e-3, 0.1]},
           "train.batch_size": {"choices": [100, 200]}}


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    return use_artifacts(monkeypatch, tmp_path / "artifacts")


@pytest.fixture
def search_dir(artifacts, tmp_path, monkeypatch):
    directory = tmp_path / "search"
    directory.mkdir()
    (directory / "lr.yaml").write_text(yaml.safe_dump({"space": PLANTED,
                                                       "presets": {"paper": {}}}))
    monkeypatch.setattr(tune, "SEARCH_DIR", directory)
    return directory


def lr_config() -> RunnerConfig:
    return RunnerConfig(model={"arch": "lr"}, train=TrainConfig(
        batch_size=200, epochs=2, learning_rate=1e-3, evals_per_epoch=2, eval_batch_size=1000,
        checkpoint_every_steps=0))


def finished_trials(tag: str) -> list:
    storage = f"sqlite:///{stage_dir(tag, tune.STAGE, 'lr') / tune.STUDY_FILE}"
    (summary,) = optuna.study.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return study.get_trials(deepcopy=False)


def test_the_search_finds_the_planted_setting_then_is_skipped(search_dir, capsys):
    make_field_files("tiny")
    budget = settings.TuneConfig(trials=6, minutes=None, seed=1)
    best = tune.run_study("tiny", "lr", train.LEARNER, lr_config(), budget)
    printed = capsys.readouterr().out
    assert best["values"]["train.learning_rate"] == 0.1
    assert best["default"]["trial"] == 0 and best["default"]["valid_logloss"] is None
    assert best["tuning_logloss"] < best["default"]["tuning_logloss"] - 0.05
    assert best["trials"]["complete"] == 6 and best["ended_by"] == "trials"
    assert best["holdout"] == {"fraction": pytest.approx(1 / 7), "fit_rows": 3429,
                               "holdout_rows": 571}
    lines = [line for line in printed.splitlines() if "[05_tune/lr] trial " in line]
    assert len(lines) == 6 and "(1/6, default) complete" in lines[0]
    assert all("best " in line and "ETA" in line and "learning_rate=" in line for line in lines)
    folder = stage_dir("tiny", tune.STAGE, "lr")
    table = pd.read_csv(folder / "trials.csv")
    assert list(table.columns[:5]) == ["trial", "state", "tuning_logloss", "best_so_far",
                                       "seconds"]
    assert table["trial"].tolist() == list(range(6)) and set(table["state"]) == {"complete"}
    assert table["best_so_far"].iloc[-1] == pytest.approx(best["tuning_logloss"])
    assert table["best_so_far"].tolist() == table["tuning_logloss"].cummin().tolist()
    assert table["default"].eq(True).tolist() == [True] + [False] * 5
    assert table["train.learning_rate"][best["best_trial"]] == 0.1
    assert table["evaluations"][0] > 0  # the learner's extra result, a column
    assert (folder / "trials.png").stat().st_size > 5000
    assert len(list((folder / "logs").glob("trial-*.log"))) == 6
    assert read_manifest(folder)["best"]["values"] == best["values"]

    assert tune.run_study("tiny", "lr", train.LEARNER, lr_config(), budget) == best
    assert "[05_tune/lr] done, skipped" in capsys.readouterr().out
    assert len(finished_trials("tiny")) == 6


def test_trials_never_read_the_validation_split(search_dir, monkeypatch):
    make_field_files("tiny")
    fields = np.load(stage_dir("tiny", "03_hash") / "train.fields.npy")
    seen = []

    def spy(learner, tag, model_id, config, data, on_evaluate):
        spec, splits = data
        assert spec.rows == {"train": 3429, "valid": 571, "test": 0}
        assert np.array_equal(splits["train"].fields, fields[:3429])
        assert np.array_equal(splits["valid"].fields, fields[3429:])  # the training split's tail
        seen.append(config.train.learning_rate)
        return {"valid_logloss": 0.5}

    monkeypatch.setattr(train.Keras, "fit_slice", spy)
    tune.run_study("tiny", "lr", train.LEARNER, lr_config(),
                   settings.TuneConfig(trials=2, minutes=None))
    assert len(seen) == 2


# A learner whose trial score is planted (best: learning rate 0.1, batch 100) and costs nothing:
# the search runs in subprocesses, one SIGKILLed in its 4th trial, without loading TensorFlow.
FAKE_SEARCH = """
import dataclasses, math, os, signal, sys, types
from pathlib import Path
from models import tune
from pipeline.manifest import Stage
from pipeline.paths import set_artifacts_root, stage_dir
from pipeline.settings import TuneConfig

set_artifacts_root(sys.argv[3])

@dataclasses.dataclass(frozen=True)
class Train:
    learning_rate: float = 1e-3
    batch_size: int = 200

@dataclasses.dataclass(frozen=True)
class Config:
    train: Train = Train()
    preset: str = "paper"

def stage_for(tag, model_id, config):
    return Stage(tag, "05_train", {"model_id": model_id, **dataclasses.asdict(config)},
                 [stage_dir(tag, "03_hash")], code="models.cli", unit=model_id)

def run_trial(tag, model_id, config, fraction, on_evaluate):
    if len(list((stage_dir(tag, tune.STAGE, model_id) / "logs").iterdir())) > int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"valid_logloss": abs(math.log10(config.train.learning_rate) + 1)
            + config.train.batch_size / 1000}

tune.SEARCH_DIR = Path(sys.argv[2])
learner = types.SimpleNamespace(code="models.cli", stage_for=stage_for, trial=run_trial)
tune.run_study("tiny", "lr", learner, Config(), TuneConfig(trials=5, minutes=None, seed=1))
"""


def fake_search(search_dir, kill_after: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FAKE_SEARCH, str(kill_after), str(search_dir),
                           str(artifacts_root())],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True)


def test_a_killed_search_resumes_and_ends_with_its_budget(search_dir):
    make_field_files("tiny")
    killed = fake_search(search_dir, kill_after=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (stage_dir("tiny", tune.STAGE, "lr") / "manifest.json").exists()
    before = finished_trials("tiny")
    assert [trial.state.name for trial in before] == ["COMPLETE"] * 3 + ["RUNNING"]

    folder = stage_dir("tiny", tune.STAGE, "lr")
    folder.rename(folder.with_name(".old-lr-4999999"))  # a dead pid: a kill between two renames
    resumed = fake_search(search_dir, kill_after=99)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "1 interrupted trial(s) queued again" in \
        resumed.stdout
    trials = finished_trials("tiny")
    best = tune.read_best("tiny", "lr")
    assert best["trials"] == {"complete": 5, "pruned": 0, "failed": 0, "interrupted": 1,
                              "budget": 5}
    assert trials[3].user_attrs["interrupted"] and trials[3].state.name == "FAIL"
    assert trials[4].params == before[3].params  # the interrupted setting, run again
    assert trials[4].user_attrs["retry_of"] == 3 and len(trials) == 6
    table = pd.read_csv(stage_dir("tiny", tune.STAGE, "lr") / "trials.csv")
    assert table["interrupted"].eq(True).tolist() == [False] * 3 + [True] + [False] * 2
    assert table["state"][3] == "fail" and table["retry_of"][4] == 3
    assert fake_search(search_dir, kill_after=0).returncode == 0  # done: skipped, no trial
    assert len(finished_trials("tiny")) == 6


def test_stage_05_trains_and_publishes_the_tuned_config(artifacts, capsys):
    """The real lr search space (demo preset), through models.stage as ./run.sh runs it."""
    make_field_files("tiny")
    options = ["--tag", "tiny", "--set", "models=[lr]", "--set", "tune.trials=2",
               "--set", "tune.seed=3"]
    model_stage.main(options)  # the untuned model first: the report's default
    default = json.loads((stage_dir("tiny", "05_train", "lr") / "metrics.json").read_text())
    model_stage.main([*options, "--tune", "lr"])
    best = tune.read_best("tiny", "lr")
    assert best["default"]["valid_logloss"] == default["valid_logloss"]
    published = json.loads((stage_dir("tiny", "05_train", "lr") / "config.resolved.json")
                           .read_text())
    for key, value in best["values"].items():
        section, name = key.split(".")
        assert published[section][name] == value
    metrics = json.loads((stage_dir("tiny", "05_train", "lr") / "metrics.json").read_text())
    assert metrics["tuned_from"]["trial"] == best["best_trial"]
    assert metrics["tuned_from"]["values"] == best["values"]
    assert read_manifest(stage_dir("tiny", "05_train", "lr"))["fingerprint"] == \
        best["tuned_fingerprint"]

    config = settings.load_pipeline_config(overrides=[*options[3::2], "tune.models=[lr]"])
    states = {stage.label: stage.status()[0] for stage in
              model_stage.make_stages("tiny", config)}
    assert states == {"05_tune/lr": "done", "05_train/lr": "done"}
    capsys.readouterr()
    model_stage.main([*options, "--tune", "lr"])
    printed = capsys.readouterr().out
    assert "[05_tune/lr] done, skipped" in printed and "[05_train/lr] done, skipped" in printed

    text = report.render("tiny")
    assert f"| lr (tuned) | {metrics['valid_logloss']:.5f} |" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| lr | ")]
    assert f"| {best['default']['tuning_logloss']:.5f} → {best['tuning_logloss']:.5f} " in row
    assert f"| {default['valid_logloss']:.5f} → {metrics['valid_logloss']:.5f} |" in row
    assert "trials.png" in row


def test_the_trials_table_and_plot_show_a_pruned_trials_last_report(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.enqueue_trial({"model.hidden_units.width": 8, "model.hidden_units.depth": 2},
                        user_attrs={"default": True})

    def objective(trial):
        width = trial.suggest_int("model.hidden_units.width", 4, 16)
        trial.suggest_int("model.hidden_units.depth", 1, 3)
        if trial.number == 1:
            trial.report(0.9, 0)
            trial.report(0.8, 1)
            raise optuna.TrialPruned()
        if trial.number == 2:
            trial.set_user_attr("error", "ValueError: diverged")
            raise ValueError("diverged")
        return 0.5 + 1 / width

    study.optimize(objective, n_trials=4, catch=(ValueError,))
    table = tune.trials_table(study)
    assert table["state"].tolist() == ["complete", "pruned", "fail", "complete"]
    assert table["tuning_logloss"][1] == 0.8 and np.isnan(table["tuning_logloss"][2])
    assert table["best_so_far"][:3].tolist() == [0.625] * 3
    assert table["model.hidden_units.width"][0] == 8 and table["error"][2].startswith("Value")
    tune.plot_trials(table, tmp_path / "trials.png", "title")
    assert (tmp_path / "trials.png").stat().st_size > 5000


def test_every_search_space_holds_its_configs_own_values():
    for path in sorted(tune.SEARCH_DIR.glob("*.yaml")):
        learner, _ = model_stage._load(path.stem, "paper")
        for preset in PRESETS:
            config = learner.load_config(config_path(path.stem), preset)
            space = tune.load_space(path.stem, preset)
            params = tune.default_params(space, config)
            assert tune.overlay(config, tune.values_of(space, params)) == config, path.name


def test_every_model_id_has_a_search_space_for_every_preset():
    model_ids = sorted(path.stem for path in config_path("lr").parent.glob("*.yaml"))
    spaces = sorted(path.stem for path in tune.SEARCH_DIR.glob("*.yaml"))
    assert model_ids == spaces
    for model_id in model_ids:
        for preset in PRESETS:
            assert tune.load_space(model_id, preset), (model_id, preset)


def test_space_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("space:\n  train.learning_rate: {float: [1.0e-2, 1.0e-4]}\n"
                    "presets: {paper: {}}\n")
    with pytest.raises(ValueError, match="train.learning_rate: float needs low < high"):
        tune.load_space("bad", "paper", path)
    space = {"train.learning_rate": {"float": [1e-2, 1e-1]}}
    with pytest.raises(ValueError, match="outside the space"):
        tune.default_params(space, lr_config())
    with pytest.raises(ValueError, match="not a key of the model config"):
        tune.default_params({"train.no_such_key": {"int": [0, 2]}}, lr_config())
    with pytest.raises(ValueError, match=r"train: unknown key\(s\) \['no_such_key'\]"):
        tune.overlay(lr_config(), {"train.no_such_key": 1})
    with pytest.raises(ValueError, match="model.no_such_key is not a keyword of 'lr'"):
        tune.overlay(lr_config(), {"model.no_such_key": 1})
    layers = tune.load_space("ipnn", "demo")["model.hidden_units"]
    assert tune.values_of({"h": layers}, {"h.width": 64, "h.depth": 3}) == {"h": [64, 64, 64]}
    assert np.isclose(tune.holdout_split(7000, 1 / 7), 6000)


def test_run_sh_tune_lists_the_study_before_the_model(artifacts, capsys):
    from pipeline import errors, run
    make_field_files("tiny")
    assert run.main(["--tag", "tiny", "--set", "models=[lr, fm]", "--tune", "lr", "--list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.split()[0].startswith("05_")]
    assert [row[:2] for row in rows] == [["05_tune/lr", "missing"], ["05_train/lr", "missing"],
                                         ["05_train/fm", "missing"]]
    status = errors.run(run.main, ["--tag", "tiny", "--set", "models=[fm]", "--tune", "lr",
                                   "--list"])
    assert status == errors.EXIT_STATUS
    assert "error: tune: lr not in models ['fm']" in capsys.readouterr().err


@pytest.mark.parametrize("model_id, overrides", [
    ("lgbm", ["train.threads=1", "train.early_stopping_rounds=5"]),
    ("libffm", ["train.threads=1", "data.stage=03_hash"])])
def test_gbdt_and_libffm_trials_fit_on_the_tuning_slice(staged, model_id, overrides):  # noqa: F811
    learner, _ = model_stage._load(model_id, "demo")
    config = learner.load_config(config_path(model_id), "demo", overrides)
    best = tune.run_study(staged, model_id, learner, config,
                          settings.TuneConfig(trials=3, minutes=None))
    assert best["trials"]["complete"] == 3 and best["default"]["state"] == "complete"
    assert best["tuning_logloss"] <= best["default"]["tuning_logloss"]
    assert 0.2 < best["tuning_logloss"] < 0.7
    assert tune.overlay(config, best["values"]) != config or best["best_trial"] == 0


@dataclasses.dataclass(frozen=True)
class FakeTrain:
    learning_rate: float = 1e-3
    batch_size: int = 200


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    train: FakeTrain = FakeTrain()
    preset: str = "paper"


def test_the_time_budget_ends_a_search(search_dir, monkeypatch):
    make_field_files("tiny")

    def stage_for(tag, model_id, config):
        return Stage(tag, "05_train", {"model_id": model_id, **dataclasses.asdict(config)},
                     [stage_dir(tag, "03_hash")], code="models.cli", unit=model_id)

    def slow_trial(tag, model_id, config, fraction, on_evaluate):
        time.sleep(0.3)
        return {"valid_logloss": config.train.learning_rate + config.train.batch_size / 1000}

    (search_dir / "lr.yaml").write_text(yaml.safe_dump({  # continuous: no repeated settings
        "space": {"train.learning_rate": {"float": [1e-4, 0.1], "log": True}},
        "presets": {"paper": {}}}))
    learner = types.SimpleNamespace(code="models.cli", stage_for=stage_for, trial=slow_trial)
    budget = settings.TuneConfig(trials=50, minutes=0.02)  # 1.2 s
    best = tune.run_study("tiny", "lr", learner, FakeConfig(), budget)
    assert best["ended_by"] == "minutes" and 2 <= best["trials"]["complete"] < 10
    assert tune.run_study("tiny", "lr", learner, FakeConfig(), budget) == best  # done: skipped
