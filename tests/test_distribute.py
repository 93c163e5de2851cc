"""tf.distribute in the runner (`models/distribute.py`): replicas and workers on one CPU.

The scenarios run in subprocesses (`python -m tests.test_distribute ROLE OUT`): logical CPU devices
and MultiWorkerMirroredStrategy must be set up before TensorFlow initialises its runtime, which
the test process has long done. The model is a small KPNN with sparse L2 and a kernel regulariser,
so every part of the distributed loss (data, sparse L2, regularisers) is exercised.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from models import distribute
from models.runner_config import RunnerConfig, TrainConfig
from pipeline.paths import REPO_ROOT, set_artifacts_root, stage_dir

# One vs two replicas differ only in the order of float32 sums (gradients all-reduced, duplicate
# rows merged). Over 3 epochs of 12 Adam steps that moves the validation logloss by ~1e-7 and
# weights by ~1e-6 (measured); the bounds leave a margin of ~100x.
LOGLOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-4
TRAIN_ROWS = 2999  # the last batch of each epoch (183 rows) splits unevenly over two replicas


def small_config(mode: str) -> RunnerConfig:
    return RunnerConfig(
        model={"arch": "kpnn", "embedding_dim": 4, "kernel_type": "vec", "kernel_l2": 1e-3,
               "hidden_units": [16, 16], "sparse_l2": 1e-4},
        train=TrainConfig(batch_size=256, epochs=3, learning_rate=0.01, eval_batch_size=500,
                          shuffle_buffer_rows=1000, checkpoint_every_steps=0, deterministic=True,
                          early_stopping_patience=0, distribute=mode))


def run_role(*arguments: str, environment=None, timeout=300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "tests.test_distribute", *arguments],
                            cwd=REPO_ROOT, env=environment or os.environ.copy(),
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def test_one_and_two_mirrored_replicas_agree(tmp_path):
    run_role("replicas", str(tmp_path))
    result = json.loads((tmp_path / "replicas.json").read_text())
    one, two = result["none"], result["mirrored"]
    assert two["replicas"] == 2 and one["replicas"] == 1
    assert one["metrics"]["steps"] == two["metrics"]["steps"] == 36
    assert one["metrics"]["valid_logloss"] < one["metrics"]["constant_logloss"]  # it learned
    assert abs(one["metrics"]["valid_logloss"] - two["metrics"]["valid_logloss"]) < \
        LOGLOSS_TOLERANCE
    assert result["max_weight_difference"] < WEIGHT_TOLERANCE
    assert result["max_weight_change"] > 100 * WEIGHT_TOLERANCE  # training moved the weights
    assert result["variable_types"] == ["MirroredVariable"]


def test_two_workers_on_localhost_finish_and_agree(tmp_path, artifacts):
    from tests.test_runner import make_field_files

    make_field_files("tiny", rows=(TRAIN_ROWS, 1000, 200))
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        environment = {**os.environ,
                       "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tests.test_distribute", "worker", str(tmp_path)],
            cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-5000:]
    chief, worker = (json.loads((tmp_path / f"worker{index}.json").read_text())
                     for index in range(2))
    assert chief["chief"] and not worker["chief"]
    assert chief["replicas"] == worker["replicas"] == 2
    assert chief["metrics"]["steps"] == worker["metrics"]["steps"] == 36
    # the same weights on both workers give the same validation predictions
    assert worker["metrics"]["valid_logloss"] == pytest.approx(chief["metrics"]["valid_logloss"],
                                                               abs=1e-7)
    published = json.loads((stage_dir("tiny", "05_train", "kpnn") / "metrics.json").read_text())
    assert published["valid_logloss"] == chief["metrics"]["valid_logloss"]
    assert published["valid_logloss"] < published["constant_logloss"]
    assert not (stage_dir("tiny", "05_train", "kpnn").parent / ".checkpoints").exists()


def test_shard_batch_cuts_disjoint_contiguous_slices():
    fields = np.arange(7 * 3, dtype=np.int32).reshape(7, 3)
    labels = np.arange(7) % 2
    shards = [distribute.shard_batch(fields, labels, 5, first_replica=replica, local_replicas=1,
                                     total_replicas=4) for replica in range(4)]
    rows = [batch.replicas[0].unique_ids[batch.replicas[0].compact_ids] for batch in shards]
    np.testing.assert_array_equal(np.concatenate(rows), fields)
    assert [len(part) for part in rows] == [2, 2, 2, 1] and shards[0].rows == 7
    tiny = distribute.shard_batch(fields[:1], labels[:1], 9, first_replica=0, local_replicas=2,
                                  total_replicas=2)
    empty = tiny.replicas[1]
    assert empty.rows == 0 and empty.counts.tolist() == [0.0]
    assert empty.unique_ids.tolist() == [fields[0, 0]]


def test_strategy_choice_is_checked(monkeypatch):
    assert distribute.create_strategy("none") is None
    with pytest.raises(ValueError, match="train.distribute: 'ring' is not one of"):
        distribute.create_strategy("ring")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="multi_worker needs TF_CONFIG"):
        distribute.create_strategy("multi_worker")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="needs KERAS_BACKEND=tensorflow"):
        distribute.create_strategy("mirrored")


# --- subprocess roles -----------------------------------------------------------------------

def _replicas_role(out: Path) -> None:
    """Trains the same model with one device and with two logical CPU replicas."""
    import tensorflow as tf

    from models.train import train_model
    from tests.test_runner import make_field_files

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    make_field_files("tiny", rows=(TRAIN_ROWS, 1000, 200))
    result, weights = {}, {}
    for mode in ("none", "mirrored"):
        metrics = train_model("tiny", f"kpnn_{mode}", small_config(mode))
        model = keras.saving.load_model(stage_dir("tiny", "05_train", f"kpnn_{mode}") /
                                        "model.keras")
        weights[mode] = model.get_weights()
        strategy = distribute.create_strategy(mode)
        result[mode] = {"metrics": metrics,
                        "replicas": 1 if strategy is None else strategy.num_replicas_in_sync}
    initial = initial_weights()
    result["max_weight_difference"] = max(float(np.abs(a - b).max()) for a, b in
                                          zip(weights["none"], weights["mirrored"]))
    result["max_weight_change"] = max(float(np.abs(a - b).max()) for a, b in
                                      zip(weights["none"], initial))
    result["variable_types"] = sorted({type(variable).__name__ for variable in
                                       mirrored_tables()})
    (out / "replicas.json").write_text(json.dumps(result))


def initial_weights() -> list[np.ndarray]:
    """Initial weights of the test model (same seed as train_model)."""
    from models import registry
    from preprocessing.field_spec import FieldSpec

    spec = FieldSpec.load(stage_dir("tiny", "03_hash"))
    config = small_config("none")
    keras.utils.set_random_seed(config.train.seed)
    model = registry.build(config.arch, spec, **config.hyperparameters)
    model(np.zeros((1, spec.num_fields), np.int32))
    return model.get_weights()


def mirrored_tables():
    """The embedding table variable of a model built under the mirrored strategy."""
    from models import registry
    from preprocessing.field_spec import FieldSpec

    spec = FieldSpec.load(stage_dir("tiny", "03_hash"))
    with distribute.scope(distribute.create_strategy("mirrored")):
        model = registry.build("kpnn", spec, embedding_dim=4, hidden_units=[4])
        model(np.zeros((1, spec.num_fields), np.int32))
    return [model.trainable_variables[0].value]


def _worker_role(out: Path) -> None:
    """One MultiWorkerMirroredStrategy worker (TF_CONFIG set by the test)."""
    from models.train import train_model

    strategy = distribute.create_strategy("multi_worker")
    metrics = train_model("tiny", "kpnn", small_config("multi_worker"))
    index = distribute.worker_index(strategy)
    (out / f"worker{index}.json").write_text(json.dumps({
        "chief": distribute.is_chief(strategy), "replicas": strategy.num_replicas_in_sync,
        "metrics": metrics}))


if __name__ == "__main__":
    role, directory = sys.argv[1], Path(sys.argv[2])
    set_artifacts_root(directory / "artifacts")
    {"replicas": _replicas_role, "worker": _worker_role}[role](directory)
