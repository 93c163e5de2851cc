"""The training runner (`python -m models.train`) on tiny field files built here.

Covers: outputs and metrics of a published model, skip when up to date, strict configs, early
stopping with best weights restored, resume after a kill == uninterrupted run, the learning-rate
decay on plateaus (and its resume), the auto preset by row count, the batch stream, and a
JAX-backend run of the train-step tests in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from models import data
from models.runner_config import (
    CONFIG_DIR,
    RunnerConfig,
    TrainConfig,
    load_runner_config,
)
from models.train import main, train_model
from preprocessing.field_spec import Field, FieldSpec
from pipeline.paths import REPO_ROOT, stage_dir
from tests.conftest import use_artifacts

MODEL_IDS = ("lr", "fm", "ffm", "kfm_mat", "kfm_vec", "kfm_num", "nifm", "fnn", "ccpm", "afm",
             "deepfm", "ipnn", "kpnn_mat", "kpnn_vec", "kpnn_num", "pin")
SIZES = (12, 30, 50, 7, 80)


def make_field_files(tag: str, rows=(4000, 1000, 500), seed=0, noise=False) -> FieldSpec:
    """Writes artifacts/<tag>/03_hash/ as stage 03 would (spec, arrays, a manifest).

    Labels follow a logistic model of the ids (learnable), or with `noise` are coin flips while
    field 0 gives nearly every training row its own id (a model can only memorise).
    """
    rng = np.random.default_rng(seed)
    sizes = (rows[0],) + SIZES[1:] if noise else SIZES
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    weights = rng.normal(0.0, 1.0, sum(sizes))
    splits = {}
    for split, count in zip(("train", "valid", "test"), rows):
        local = np.floor(np.asarray(sizes) ** rng.random((count, len(sizes)))).astype(np.int64)
        if noise:
            local[:, 0] = rng.integers(0, sizes[0], count)
        ids = (local + offsets).astype(np.int32)
        if noise:
            labels = rng.random(count) < 0.3
        else:
            labels = rng.random(count) < 1 / (1 + np.exp(1.0 - weights[ids].sum(1)))
        splits[split] = ids, labels
    return write_arrays(tag, splits, sizes, f"tiny-{seed}-{noise}")


def write_arrays(tag: str, splits: dict, sizes, fingerprint: str) -> FieldSpec:
    """artifacts/<tag>/03_hash/ from {split: (ids [N, F], labels [N])} over fields of `sizes`,
    with a manifest of `fingerprint`."""
    directory = stage_dir(tag, "03_hash")
    directory.mkdir(parents=True)
    for split, (ids, labels) in splits.items():
        np.save(directory / f"{split}.fields.npy", ids)
        np.save(directory / f"{split}.ids.npy", np.arange(len(ids), dtype=np.int64))
        if split != "test":
            np.save(directory / f"{split}.labels.npy", labels.astype(np.uint8))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    spec = FieldSpec(fields=tuple(Field(f"C{index}", "cat", size, int(offset))
                                  for index, (size, offset) in enumerate(zip(sizes, offsets))),
                     rows={split: len(ids) for split, (ids, _) in splits.items()},
                     hashing={"mode": "xxh64"}, min_count={"cat": 1},
                     label_rate={split: float(labels.mean()) for split, (_, labels)
                                 in splits.items() if split != "test"},
                     test_id_start=60_000_000)
    spec.write(directory)
    (directory / "manifest.json").write_text(json.dumps({"fingerprint": fingerprint}))
    return spec


@pytest.fixture(autouse=True)
def artifacts(tmp_path, monkeypatch):
    return use_artifacts(monkeypatch, tmp_path / "artifacts")


def write_model_yaml(path: Path, arch: str, train: dict, **model) -> Path:
    path.write_text(yaml.safe_dump({"model": {"arch": arch, **model}, "train": train,
                                    "presets": {"paper": {}, "demo": {"train": {"epochs": 1}}}}))
    return path


def test_published_model_beats_constant_and_reloads(tmp_path, capsys):
    spec = make_field_files("tiny")
    config = write_model_yaml(tmp_path / "lr.yaml", "lr", {"batch_size": 200, "epochs": 3,
                                                           "learning_rate": 0.05})
    arguments = ["--tag", "tiny", "--model", "lr", "--config", str(config), "--preset", "paper",
                 "--set", "train.eval_batch_size=300"]
    main(arguments)
    out = stage_dir("tiny", "05_train", "lr")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["relative_information_gain"] > 0.05
    assert metrics["valid_logloss"] < metrics["constant_logloss"]
    assert 0.7 < metrics["valid_auc"] <= 1.0
    assert metrics["epochs"] == 3 and metrics["steps"] == 60 and metrics["examples_per_second"] > 0
    assert metrics["parameter_count"] == sum(spec.vocabulary_sizes) + 1
    printed = capsys.readouterr().out
    assert metrics["device"] == "CPU:0" and "[05_train/lr] training on CPU:0 (" in printed
    assert f"[05_train/lr] {metrics['examples_per_second']:,.0f} examples/s on CPU:0" in printed
    valid = np.load(out / "valid.pred.npy")
    test = np.load(out / "test.pred.npy")
    assert valid.dtype == np.float32 and valid.shape == (1000,) and test.shape == (500,)
    assert 0 < valid.min() and valid.max() < 1
    with open(out / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [float(row["epoch"]) for row in history] == [1.0, 2.0, 3.0]
    assert float(history[-1]["valid_logloss"]) == pytest.approx(metrics["valid_logloss"])
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert yaml.safe_load((out / "config.resolved.yaml").read_text())["train"]["batch_size"] == 200
    logged = tensorboard_scalars(out / "tensorboard")
    assert logged["valid_logloss"] == pytest.approx(
        [row["valid_logloss"] for row in _history("tiny", "lr")], rel=1e-6)
    assert len(logged["train_logloss"]) == 60 // 50 and logged["valid_auc"][-1] > 0.7
    reloaded = keras.saving.load_model(out / "model.keras")
    valid_ids = np.load(stage_dir("tiny", "03_hash") / "valid.fields.npy")
    again = keras.ops.sigmoid(reloaded.predict(valid_ids, verbose=0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again)[:, 0], valid, atol=1e-6)

    main(arguments)
    assert "done, skipped" in capsys.readouterr().out
    main([*arguments, "--set", "train.epochs=1"])
    assert "config changed: train.epochs" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


def test_early_stopping_restores_best_weights():
    make_field_files("noise", rows=(2000, 1000, 100), noise=True)
    config = RunnerConfig(model={"arch": "lr"}, train=TrainConfig(
        batch_size=100, epochs=8, learning_rate=0.3, early_stopping_patience=2,
        eval_every_rows=1000, eval_batch_size=500))
    metrics = train_model("noise", "lr", config)
    losses = [row["valid_logloss"] for row in _history("noise", "lr")]
    best = int(np.argmin(losses))
    assert metrics["stopped_early"] and metrics["epochs"] < 8
    assert len(losses) == best + 3  # two evaluations without improvement, then stop
    assert metrics["valid_logloss"] == pytest.approx(losses[best], abs=1e-7)
    assert metrics["best_epoch"] == pytest.approx((best + 1) / 2)


def tensorboard_scalars(directory: Path) -> dict[str, list[float]]:
    """Scalars of the event files under `directory`, read as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = directory.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_input_stage_reads_the_leaf_field_files(tmp_path):
    """train.input_stage: 04_leaves trains on that folder's field files and depends on it."""
    make_field_files("leafy", rows=(1000, 300, 100))
    shutil.copytree(stage_dir("leafy", "03_hash"), stage_dir("leafy", "04_leaves"))
    shutil.rmtree(stage_dir("leafy", "03_hash"))  # only 04_leaves can be read now
    config = RunnerConfig(model={"arch": "lr"}, train=TrainConfig(
        batch_size=200, learning_rate=0.05, input_stage="04_leaves", eval_batch_size=300))
    metrics = train_model("leafy", "lr", config)
    assert metrics["valid_logloss"] < metrics["constant_logloss"]
    manifest = json.loads((stage_dir("leafy", "05_train", "lr") / "manifest.json").read_text())
    assert list(manifest["inputs"]) == ["04_leaves"]
    with pytest.raises(ValueError, match="input_stage"):
        load_runner_config(write_model_yaml(tmp_path / "lr.yaml", "lr", {}),
                           overrides=["train.input_stage=05_train"])
    for model_id in ("kfm_kaggle", "kfm_kaggle_fast"):
        for preset in ("paper", "demo"):
            assert load_runner_config(CONFIG_DIR / f"{model_id}.yaml", preset) \
                .train.input_stage == "04_leaves"


def _history(tag, model_id):
    with open(stage_dir(tag, "05_train", model_id) / "history.csv") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def test_resume_after_kill_ends_bit_identical():
    make_field_files("straight", rows=(1500, 300, 100))
    make_field_files("killed", rows=(1500, 300, 100))
    config = RunnerConfig(model={"arch": "fm", "embedding_dim": 4}, train=TrainConfig(
        batch_size=200, epochs=2, deterministic=True, checkpoint_every_steps=3,
        shuffle_buffer_rows=512, eval_batch_size=300, learning_rate=0.01))
    train_model("straight", "fm", config)
    assert train_model("killed", "fm", config, interrupt_after_steps=10) is None
    assert not stage_dir("killed", "05_train", "fm").exists()
    train_model("killed", "fm", config, resume=True)
    straight, resumed = (keras.saving.load_model(stage_dir(tag, "05_train", "fm") / "model.keras")
                         for tag in ("straight", "killed"))
    for expected, actual in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    for name in ("valid.pred.npy", "test.pred.npy"):
        np.testing.assert_array_equal(np.load(stage_dir("straight", "05_train", "fm") / name),
                                      np.load(stage_dir("killed", "05_train", "fm") / name))
    assert _history("straight", "fm")[-1]["valid_logloss"] == \
        _history("killed", "fm")[-1]["valid_logloss"]


def test_epoch_batches_cover_every_row_once_and_resume_mid_epoch():
    fields = np.arange(1003 * 2, dtype=np.int32).reshape(1003, 2)
    labels = np.zeros(1003, np.uint8)

    def rows_of(batches):
        # compact ids index unique_ids; map back to global ids, then to row numbers
        return [batch.unique_ids[batch.compact_ids[:, 0]] // 2 for batch in batches]

    epoch = list(data.epoch_batches(fields, labels, 64, 300, seed=1, epoch=0))
    assert [len(batch.labels) for batch in epoch] == [64] * 15 + [43]
    rows = np.concatenate(rows_of(epoch))
    np.testing.assert_array_equal(np.sort(rows), np.arange(1003))
    assert not np.array_equal(rows, np.arange(1003))
    resumed = list(data.epoch_batches(fields, labels, 64, 300, seed=1, epoch=0, start_step=7))
    assert [batch.step for batch in resumed] == list(range(8, 17))
    for expected, actual in zip(rows_of(epoch)[7:], rows_of(resumed)):
        np.testing.assert_array_equal(expected, actual)
    other = np.concatenate(rows_of(data.epoch_batches(fields, labels, 64, 300, seed=1, epoch=1)))
    assert not np.array_equal(rows, other)


def test_negative_sampling_keeps_positives_and_a_rate_of_negatives_and_resumes():
    rows = 20_000
    fields = np.arange(rows * 2, dtype=np.int32).reshape(rows, 2)
    labels = (np.arange(rows) % 4 == 0).astype(np.uint8)  # 5,000 positives

    def rows_of(batches):
        return [batch.unique_ids[batch.compact_ids[:, 0]] // 2 for batch in batches]

    epoch = list(data.epoch_batches(fields, labels, 500, 3000, seed=1, epoch=0,
                                    negative_rate=0.2))
    kept = np.concatenate(rows_of(epoch))
    assert len(np.unique(kept)) == len(kept)
    assert set(np.flatnonzero(labels)) <= set(kept)
    negatives = len(kept) - 5000
    assert abs(negatives - 0.2 * 15_000) < 4 * np.sqrt(15_000 * 0.2 * 0.8)
    resumed = list(data.epoch_batches(fields, labels, 500, 3000, seed=1, epoch=0, start_step=5,
                                      negative_rate=0.2))
    for expected, actual in zip(rows_of(epoch)[5:], rows_of(resumed), strict=True):
        np.testing.assert_array_equal(expected, actual)
    again = np.concatenate(rows_of(data.epoch_batches(fields, labels, 500, 3000, seed=1,
                                                      epoch=1, negative_rate=0.2)))
    assert set(again) != set(kept)  # a new draw of negatives every epoch


def test_compact_batch_padding_repeats_first_id_with_zero_count():
    fields = np.array([[5, 9], [9, 7]], np.int32)
    batch = data.compact_batch(fields, np.array([1, 0]), step=1, pad_limit=4)
    np.testing.assert_array_equal(batch.unique_ids, [5, 7, 9, 5])
    np.testing.assert_array_equal(batch.counts, [1, 1, 2, 0])
    np.testing.assert_array_equal(batch.unique_ids[batch.compact_ids], fields)
    assert data.padded_size(1000, 10**6) == 1024 and data.padded_size(1100, 10**6) == 1280


def test_prefetch_yields_in_order_and_reraises():
    def items():
        yield from range(5)
        raise RuntimeError("disk gone")

    stream = data.prefetch(items(), depth=2)
    assert [next(stream) for _ in range(5)] == list(range(5))
    with pytest.raises(RuntimeError, match="disk gone"):
        next(stream)


def test_config_is_strict(tmp_path):
    path = write_model_yaml(tmp_path / "lr.yaml", "lr", {"batch_size": 10})
    assert load_runner_config(path, "demo").train.epochs == 1
    with pytest.raises(ValueError, match="learning_rat"):
        load_runner_config(path, overrides=["train.learning_rat=0.1"])
    with pytest.raises(ValueError, match="model.embedding_dim is not a keyword of 'lr'"):
        load_runner_config(write_model_yaml(tmp_path / "bad.yaml", "lr", {}, embedding_dim=4))
    with pytest.raises(ValueError, match="no preset 'tiny'"):
        load_runner_config(path, "tiny")
    with pytest.raises(ValueError, match="batch_size: must be >= 1"):
        load_runner_config(path, overrides=["train.batch_size=0"])
    with pytest.raises(ValueError, match="lr_decay_factor: must be in"):
        load_runner_config(path, overrides=["train.lr_decay_factor=1.5"])
    assert load_runner_config(path, overrides=["train.lr_decay_factor=0.5"]) \
        .train.lr_decay_factor == 0.5


def test_every_model_id_has_a_config_that_loads_in_every_preset():
    from models import registry
    from models.cli import PRESETS

    assert set(MODEL_IDS) <= {path.stem for path in CONFIG_DIR.glob("*.yaml")}
    for model_id in MODEL_IDS:
        for preset in PRESETS:
            config = load_runner_config(CONFIG_DIR / f"{model_id}.yaml", preset,
                                        check_model=False)
            if config.arch in registry.MODELS:  # the registry is filled by another issue
                load_runner_config(CONFIG_DIR / f"{model_id}.yaml", preset)


def test_train_step_under_jax_backend():
    """The optimiser tests, early stopping and resume after a kill (same final weights as a
    straight run), in a subprocess with KERAS_BACKEND=jax, the GPU machines' backend."""
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    tests = ["tests/test_optimizers.py",
             "tests/test_runner.py::test_early_stopping_restores_best_weights",
             "tests/test_runner.py::test_resume_after_kill_ends_bit_identical",
             "tests/test_runner.py::test_learning_rate_decays_on_a_plateau_and_off_changes_nothing",
             "tests/test_runner.py::test_resume_after_kill_keeps_the_decayed_learning_rate"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *tests], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


@pytest.mark.parametrize("preset, rows, every, patience", [
    ("small", 8_571, 2_143, 8),          # the 10,000-row head of train.txt
    ("small", 171_429, 42_858, 8),       # 200k rows: the same 4 evaluations, 2 epochs' wait
    ("paper", 39_291_958, 9_822_990, 2),  # full Criteo: every ~9.8M rows, half an epoch's wait
])
def test_the_evaluation_schedule_follows_the_row_count(preset, rows, every, patience):
    from models.train import evaluation_schedule
    config = load_runner_config(CONFIG_DIR / "ipnn.yaml", preset, check_model=False)
    assert evaluation_schedule(config.train, rows) == (every, patience)
    assert config.train.min_epochs == 1 and config.train.epochs >= 20


def test_early_stopping_never_ends_before_min_epochs_and_logs_an_improving_cap(capsys):
    make_field_files("noise", rows=(2000, 1000, 100), noise=True)
    config = RunnerConfig(model={"arch": "lr"}, train=TrainConfig(
        batch_size=100, epochs=3, learning_rate=0.3, patience_epochs=0.5, min_epochs=2,
        evals_per_epoch=4, eval_batch_size=500))
    metrics = train_model("noise", "lr", config)  # memorising noise: worse after the first eval
    epochs = [row["epoch"] for row in _history("noise", "lr")]
    assert epochs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert metrics["stopped_early"] and metrics["epochs"] == pytest.approx(2.0)
    assert metrics["ended_by"] == "early_stopping"
    learnable = RunnerConfig(model={"arch": "lr"}, train=TrainConfig(
        batch_size=100, epochs=2, learning_rate=0.01, evals_per_epoch=3, eval_batch_size=500))
    make_field_files("learnable", rows=(2000, 1000, 100))
    metrics = train_model("learnable", "lr", learnable)
    epochs = [round(row["epoch"], 2) for row in _history("learnable", "lr")]
    assert epochs == [0.35, 0.7, 1.0, 1.35, 1.7, 2.0]  # none just after an epoch's end
    assert metrics["ended_by"] == "epoch_cap" and metrics["improving_at_cap"]
    assert "the epoch cap (train.epochs 2) ended training while validation logloss was still " \
        "improving" in capsys.readouterr().out


def decaying(**train) -> RunnerConfig:
    """LR memorising noise (validation stops improving early) with the rate halved after each
    evaluation without a new best (2 per epoch, a plateau of half an epoch), floor 0.05."""
    return RunnerConfig(model={"arch": "lr"}, train=TrainConfig(**{
        "batch_size": 100, "epochs": 3, "learning_rate": 0.3, "early_stopping_patience": 0,
        "evals_per_epoch": 2, "eval_batch_size": 500, "deterministic": True,
        "lr_decay_factor": 0.5, "lr_decay_patience_epochs": 0.5, "min_learning_rate": 0.05,
        **train}))


def decay_rule(losses, rate=0.3, factor=0.5, floor=0.05) -> tuple[list[float], float]:
    """(the rate in effect at each evaluation, the rate after the last) that a decay on every
    evaluation without a new best gives for these validation loglosses."""
    rates, best = [], float("inf")
    for loss in losses:
        rates.append(rate)
        if loss < best:
            best = loss
        else:
            rate = max(rate * factor, floor)
    return rates, rate


def test_learning_rate_decays_on_a_plateau_and_off_changes_nothing(capsys):
    make_field_files("noise", rows=(2000, 1000, 100), noise=True)
    metrics = train_model("noise", "decay", decaying())
    history = _history("noise", "decay")
    rates, final = decay_rule([row["valid_logloss"] for row in history])
    assert len(history) == 6 and [row["learning_rate"] for row in history] == \
        pytest.approx(rates, rel=1e-6)
    decays = sum(after < before for before, after in zip(rates, rates[1:] + [final]))
    assert decays >= 2 and metrics["learning_rate_decays"] == decays
    assert metrics["final_learning_rate"] == pytest.approx(final, rel=1e-6) and final >= 0.05
    assert "no new best for 1 evaluations: learning rate 0.3 -> 0.15" in capsys.readouterr().out

    fixed = train_model("noise", "fixed", decaying(lr_decay_factor=1.0))  # the default
    plain = _history("noise", "fixed")
    assert "learning_rate" not in plain[0] and "learning_rate_decays" not in fixed
    first = next(index for index, rate in enumerate(rates) if rate < 0.3)
    # the same run up to the first decay, another one after it: the rate reached the optimiser
    assert [row["valid_logloss"] for row in plain[:first]] == \
        [row["valid_logloss"] for row in history[:first]]
    assert plain[first]["valid_logloss"] != history[first]["valid_logloss"]


def test_resume_after_kill_keeps_the_decayed_learning_rate(capsys):
    make_field_files("straight", rows=(2000, 1000, 100), noise=True)
    make_field_files("killed", rows=(2000, 1000, 100), noise=True)
    config = decaying(epochs=2, checkpoint_every_steps=3)
    train_model("straight", "lr", config)
    history = _history("straight", "lr")
    first = next(index for index, row in enumerate(history) if row["learning_rate"] < 0.3)
    decayed_at = int(history[first - 1]["steps"])  # the evaluation that lowered the rate
    assert train_model("killed", "lr", config, interrupt_after_steps=decayed_at + 4) is None
    with np.load(stage_dir("killed", "05_train") / ".checkpoints/lr/checkpoint.npz") as saved:
        assert saved["learning_rate"] == np.float32(history[first]["learning_rate"])
    capsys.readouterr()
    train_model("killed", "lr", config, resume=True)
    assert f"learning rate {history[first]['learning_rate']:.4g}" in capsys.readouterr().out
    untimed = [{key: value for key, value in row.items() if key != "train_seconds"}
               for row in history]
    assert [{key: value for key, value in row.items() if key != "train_seconds"}
            for row in _history("killed", "lr")] == untimed
    for name in ("valid.pred.npy", "test.pred.npy"):
        np.testing.assert_array_equal(np.load(stage_dir("straight", "05_train", "lr") / name),
                                      np.load(stage_dir("killed", "05_train", "lr") / name))


@pytest.mark.parametrize("rows, source, asked, chosen", [
    (8_571, "real", "auto", "small"),       # the 10,000-row head of train.txt
    (49_999, "real", "auto", "small"),
    (50_000, "real", "auto", "medium"),
    (171_429, "real", "auto", "medium"),
    (999_999, "real", "auto", "medium"),
    (1_000_000, "real", "auto", "paper"),
    (39_291_958, "real", "auto", "paper"),  # full Criteo
    (8_571, "real", "paper", "paper"),      # an explicit preset wins
    (39_291_958, "real", "demo", "demo"),
    (170_000, "synthetic", "auto", "demo"),
])
def test_the_auto_preset_follows_the_training_row_count(rows, source, asked, chosen):
    from models.cli import preset_for

    assert preset_for("unbuilt", asked) == ("demo" if asked == "auto" else asked)
    directory = stage_dir("sized", "03_hash")
    directory.mkdir(parents=True)
    FieldSpec(fields=(Field("C0", "cat", 10, 0),), rows={"train": rows, "valid": 10, "test": 10},
              hashing={"mode": "xxh64"}, min_count={"cat": 1},
              label_rate={"train": 0.25, "valid": 0.25}, test_id_start=60_000_000,
              extra={"source": source}).write(directory)
    assert preset_for("sized", asked) == chosen


def test_fnn_starts_from_a_trained_fm_when_its_config_says_so():
    make_field_files("pre")
    fm = RunnerConfig(model={"arch": "fm", "embedding_dim": 4},
                      train=TrainConfig(batch_size=200, epochs=1, learning_rate=0.05))
    train_model("pre", "fm", fm)
    fnn = RunnerConfig(model={"arch": "fnn", "embedding_dim": 4, "hidden_units": [8]},
                       train=TrainConfig(batch_size=200, epochs=1, learning_rate=1e-12,
                                         pretrained_fm="fm"))
    train_model("pre", "fnn", fnn)
    tables = {model_id: keras.saving.load_model(
        stage_dir("pre", "05_train", model_id) / "model.keras", compile=False).embedding.embeddings
        for model_id in ("fm", "fnn")}
    np.testing.assert_allclose(np.asarray(tables["fnn"]), np.asarray(tables["fm"]), atol=1e-6)
    manifest = json.loads((stage_dir("pre", "05_train", "fnn") / "manifest.json").read_text())
    assert "05_train/fm" in manifest["inputs"]  # retrained when the FM is
    with pytest.raises(ValueError, match="has no load_fm"):
        train_model("pre", "lr", RunnerConfig(model={"arch": "lr"}, train=TrainConfig(
            pretrained_fm="fm")))


@pytest.mark.parametrize("preset", ["small", "medium"])
def test_afm_presets_learn_the_pairs_lr_cannot_see(preset):
    """AFM pools its pairs by a softmax average (1/pairs of FM's sum), so per-lookup sparse L2
    (1e-4 in small, 1e-5) holds its embeddings near zero, where it scores as LR to four
    decimals on real and synthetic rows."""
    from tests.test_models import PLANTED_FIELDS, PLANTED_VALUES, planted_interactions

    overrides = ["train.evals_per_epoch=1", "train.patience_epochs=3"]
    configs = {model_id: load_runner_config(CONFIG_DIR / f"{model_id}.yaml", preset, overrides)
               for model_id in ("lr", "afm")}
    small = load_runner_config(CONFIG_DIR / "afm.yaml", "small", overrides)
    if preset != "small" and (configs["afm"].model, configs["afm"].train) == \
            (small.model, small.train):
        pytest.skip(f"AFM's {preset} preset is its small one: the same training")
    write_arrays("planted", {"train": planted_interactions(6000, 1),
                             "valid": planted_interactions(2000, 2),
                             "test": planted_interactions(100, 3)},
                 [PLANTED_VALUES] * PLANTED_FIELDS, "planted")
    losses = {model_id: train_model("planted", model_id, config)["valid_logloss"]
              for model_id, config in configs.items()}
    assert losses["afm"] < losses["lr"] - 0.01, losses  # they were equal to 1e-5
