"""bench/train.py's figures for IPNN: the runner, plain Keras and the MLP-only bound."""

import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

import train as bench_train  # bench/ is a folder of scripts, on sys.path above


@pytest.mark.slow
def test_ipnn_bench_reports_the_runner_plain_keras_and_the_mlp_alone():
    result = bench_train.bench_model("ipnn", "demo", steps=3, warmup=1,
                                     overrides=["train.jit_compile=false"], rounds=2)
    for key in ("examples_per_second", "plain_keras_examples_per_second",
                "mlp_only_examples_per_second"):
        assert result[key] > 0
    assert len(result["speedups_per_round"]) == result["rounds"] == 2
    assert result["speedup_over_plain_keras"] == pytest.approx(
        sum(result["speedups_per_round"]) / 2, abs=1e-3)  # the median of two
    assert result["parameter_count"] > 0 and result["batch_size"] == 1000
