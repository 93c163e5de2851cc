"""bench/gpu.sh's CPU path: tiny sizes, KERAS_BACKEND=jax, TensorFlow made unimportable (the GPU
machines have none), every benchmarked model reports a positive rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipeline.paths import REPO_ROOT

MODELS = ("ipnn", "kpnn_vec", "pin", "ffm")


def test_gpu_bench_cpu_path_runs_without_tensorflow(tmp_path):
    blocked = tmp_path / "blocked" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        'raise ImportError("tensorflow is blocked: bench/gpu.sh must run without it")\n')
    environment = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blocked.parent),
                   "WHEELS": str(tmp_path / "no-wheels"), "SITE": str(tmp_path / "site")}
    environment.pop("KERAS_BACKEND", None)
    result = subprocess.run(
        ["bash", "bench/gpu.sh", "--models", *MODELS, "--batch-sizes", "64", "--steps", "2",
         "--precisions", "mixed_bfloat16", "--scale", "0.01", "--rows", "1000", "--json",
         "--distinct-batches", "2",
         "--set", "model.hidden_units=[16]", "--set", "model.embedding_dim=4",
         "--set", "model.subnet_units=[8,2]"],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=400,
        check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# jax ") and "keras" in lines[0]
    results = [json.loads(line) for line in lines[1:]]
    assert [row["model"] for row in results] == list(MODELS)
    for row in results:
        assert row["batch_size"] == 64 and row["precision"] == "mixed_bfloat16"
        assert row["examples_per_second"] > 0 and row["input_examples_per_second"] > 0
        assert 0 < row["last_loss"] < 5
    assert not (tmp_path / "site").exists()  # keras was importable: no wheel unpacked
