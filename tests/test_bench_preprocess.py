"""The preprocessing benchmarks run and report consistent figures (bench/ scripts, as a user runs
them: child processes, JSON lines)."""

import json
import subprocess
import sys

import pytest

from preprocessing import schema
from tests.conftest import REPO_ROOT

ROWS = 30_000


def bench_json(script: str, tmp_path, *options) -> list[dict]:
    output = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), "--rows",
                             str(ROWS), "--keep", str(tmp_path), "--json", *options],
                            check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout
    return [json.loads(line) for line in output.splitlines()]


@pytest.mark.slow
def test_stage_bench_reports_rows_rates_and_memory(tmp_path):
    lines = bench_json("preprocess.py", tmp_path, "--no-export")
    stages = {line["stage"]: line for line in lines if "stage" in line}
    test_rows = ROWS * schema.FULL_TEST_ROWS // schema.FULL_TRAIN_ROWS + 1
    assert stages["02_count"]["rows"] == ROWS - round(ROWS / 7)  # the training split only
    assert stages["03_hash"]["rows"] == stages["01-03"]["rows"] == ROWS + test_rows
    for stage in ("01_split", "02_count", "03_hash", "03_hash[md5]"):
        assert stages[stage]["rows_per_second"] > 0 and stages[stage]["peak_rss_mb"] > 0
    assert stages["01-03"]["seconds"] == pytest.approx(
        sum(stages[stage]["seconds"] for stage in ("01_split", "02_count", "03_hash")), abs=0.02)
    assert (tmp_path / "artifacts/bench/03_hash/train.fields.npy").exists()


@pytest.mark.slow
def test_parts_bench_reports_each_part_and_the_ceiling(tmp_path):
    lines = bench_json("preprocess_parts.py", tmp_path)
    passes = {line["pass"]: line for line in lines if "pass" in line}
    summary = lines[-1]
    assert list(passes) == ["read", "line ends", "parse", "count (stage 02)", "lookup",
                            "write (stage 03)"]
    assert summary["rows"] == ROWS and not (tmp_path / "fields.npy").exists()
    assert summary["stage03_cpu_ns_per_row"] == round(passes["write (stage 03)"]["cpu_s"]
                                                      / ROWS * 1e9)
    assert passes["lookup"]["part_cpu_ns_per_row"] == round(
        (passes["lookup"]["cpu_s"] - passes["parse"]["cpu_s"]) / ROWS * 1e9)
    per_row = 1 + schema.FULL_TEST_ROWS / schema.FULL_TRAIN_ROWS
    cpu = (6 / 7 * summary["stage02_cpu_ns_per_row"] + per_row * summary[
        "stage03_cpu_ns_per_row"]) / 1e9
    assert summary["ceiling_01_03_rows_per_second"] == pytest.approx(
        per_row / (cpu / summary["cores"]), rel=1e-3)
