"""Shared fixtures: temporary artifact trees, small raw Criteo files, the real-sample location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_CRITEO = REPO_ROOT.parent / "shared" / "data" / "criteo"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests, run with -m slow")


@pytest.fixture(autouse=True)
def no_artifacts_variable(monkeypatch):
    """A $CRITEO_PNN_ARTIFACTS of the shell would be the default --artifacts of every command a
    test runs in-process; tests choose their root with `use_artifacts`."""
    monkeypatch.delenv("CRITEO_PNN_ARTIFACTS", raising=False)


def use_artifacts(monkeypatch, root) -> Path:
    """Makes `root` the artifacts root of this process (pipeline.paths) until `monkeypatch` is
    undone; subprocesses get it as `--artifacts` or $CRITEO_PNN_ARTIFACTS."""
    root = Path(root).absolute()
    monkeypatch.setattr(paths, "_root", root)
    return root


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    """A private artifacts root for the test (stages write under it)."""
    return use_artifacts(monkeypatch, tmp_path / "artifacts")


def raw_line(label, ints, cats) -> str:
    """One raw TSV line; None = missing; label None for test rows."""
    values = ([] if label is None else [str(label)])
    values += ["" if value is None else str(value) for value in ints]
    values += ["" if value is None else value for value in cats]
    return "\t".join(values) + "\n"


def write_raw(path: Path, rows: int, labelled: bool, seed: int = 0) -> None:
    """Small raw Criteo-format file with Zipf-like values, so some pass the count threshold."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        for _ in range(rows):
            ints = [None if rng.random() < 0.2 else int(rng.zipf(1.5)) - 2 for _ in range(13)]
            cats = [None if rng.random() < 0.1 else f"{int(rng.zipf(1.3)) * 2654435761 % 2**32:08x}"
                    for _ in range(26)]
            label = int(rng.random() < 0.25) if labelled else None
            handle.write(raw_line(label, ints, cats))


@pytest.fixture
def raw_dir(tmp_path) -> Path:
    """data folder with a 2,000-row train.txt and a 300-row test.txt."""
    directory = tmp_path / "raw"
    directory.mkdir()
    write_raw(directory / "train.txt", 2000, True, seed=1)
    write_raw(directory / "test.txt", 300, False, seed=2)
    return directory


def run_stages(tag: str, *options: str, modules=("raw", "split", "count", "hash_fields")):
    """Runs stage entry points in-process, like ./run.sh does."""
    import importlib
    for module in modules:
        importlib.import_module(f"preprocessing.{module}").main(["--tag", tag, *options])


def error_message(result) -> str:
    """The one- or two-line `error:` message of a failed stage (a CompletedProcess): exit
    status 2, no traceback, no temporary path."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert ".tmp-" not in result.stderr
    return " ".join(lines)


@pytest.fixture
def shared_criteo() -> Path:
    if not SHARED_CRITEO.is_dir():
        pytest.skip("../shared/data/criteo (real Criteo sample rows) is not present")
    return SHARED_CRITEO


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
