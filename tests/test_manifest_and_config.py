"""Atomic publishing, skip/rebuild logic and strict configuration."""

import dataclasses
import functools
import os
import signal
import subprocess
import sys

import pytest

from pipeline import config as config_lib
from pipeline import settings
from pipeline.manifest import Stage, read_manifest
from pipeline.paths import stage_dir
from tests.conftest import REPO_ROOT


def make(config=None, inputs=(), unit=None):
    return Stage("t", "09_test", config or {"alpha": 1}, list(inputs), "pipeline.paths", unit)


def publish(stage, text="new"):
    with stage.build() as out:
        (out / "data.txt").write_text(text)
        stage.record(rows=3)


def test_status_moves_from_missing_to_done_to_stale_with_reasons(artifacts):
    stage = make()
    assert stage.status() == ("missing", "never built")
    publish(stage)
    assert stage.status() == ("done", "up to date")
    manifest = read_manifest(stage.directory)
    assert manifest["rows"] == 3 and manifest["outputs"]["data.txt"] == 3
    assert (stage.directory / "config.resolved.json").exists()
    assert make({"alpha": 2}).status() == ("stale", "config changed: alpha")


def test_downstream_stage_is_stale_when_its_input_is_rebuilt(artifacts):
    upstream = make()
    publish(upstream)
    downstream = Stage("t", "10_next", {}, [upstream.directory], "pipeline.paths")
    publish(downstream)
    assert downstream.status()[0] == "done"
    publish(make({"alpha": 5}))
    assert downstream.status() == ("stale", "input 09_test was rebuilt")


def test_missing_input_blocks_a_stage(artifacts):
    downstream = Stage("t", "10_next", {}, [stage_dir("t", "09_test")], "pipeline.paths")
    assert downstream.status()[0] == "missing"
    with pytest.raises(RuntimeError, match="input stage"):
        downstream.should_run()


def test_a_failed_build_keeps_the_old_output_and_leaves_no_temporary(artifacts):
    stage = make()
    publish(stage, "old")
    with pytest.raises(KeyError), make({"alpha": 2}).build() as out:
        (out / "data.txt").write_text("half")
        raise KeyError("killed")
    assert (stage.directory / "data.txt").read_text() == "old"
    assert sorted(p.name for p in stage.directory.parent.iterdir()) == ["09_test"]


KILLED_BUILD = """
import sys, time
from pipeline.manifest import Stage
from pipeline.paths import set_artifacts_root
set_artifacts_root(sys.argv[1])
stage = Stage("t", "09_test", {"alpha": 2}, [], "pipeline.paths")
with stage.build() as out:
    (out / "data.txt").write_text("half")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_build_leaves_the_old_output_and_the_rerun_cleans_up(artifacts):
    stage = make()
    publish(stage, "old")
    process = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(artifacts)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, env={**os.environ})
    assert process.stdout.readline().strip() == b"writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    leftovers = [p.name for p in stage.directory.parent.iterdir() if p.name.startswith(".tmp")]
    assert len(leftovers) == 1
    assert (stage.directory / "data.txt").read_text() == "old"
    assert stage.status()[0] == "done"
    publish(make({"alpha": 2}), "new")
    assert sorted(p.name for p in stage.directory.parent.iterdir()) == ["09_test"]
    assert (stage.directory / "data.txt").read_text() == "new"


def test_an_output_moved_aside_by_a_kill_during_the_swap_is_restored(artifacts):
    stage = make()
    publish(stage, "old")
    os.replace(stage.directory, stage.directory.with_name(".old-09_test-123"))
    publish(make({"alpha": 3}), "new")  # the next publish cleans leftovers first
    assert (stage.directory / "data.txt").read_text() == "new"
    assert sorted(p.name for p in stage.directory.parent.iterdir()) == ["09_test"]


def test_pipeline_config_is_strict_and_typed():
    config = settings.load_pipeline_config(overrides=["hash.mode=md5", "hash.min_count=20"])
    assert config.hash.mode == "md5" and config.hash.min_count == 20
    assert config.split.valid_fraction == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match=r"config.hash: unknown key\(s\) \['bins'\]"):
        settings.load_pipeline_config(overrides=["hash.bins=3"])
    with pytest.raises(ValueError, match=r"config.hash.min_count: expected int"):
        settings.load_pipeline_config(overrides=["hash.min_count=ten"])
    with pytest.raises(ValueError, match=r"'sha1' is not one of"):
        settings.load_pipeline_config(overrides=["hash.mode=sha1"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        config_lib.parse_override("hash.mode")


def test_overrides_parse_as_yaml_and_lists_become_tuples():
    @dataclasses.dataclass(frozen=True)
    class Example:
        rate: float = 0.1
        units: tuple[int, ...] = ()
        name: str | None = None

    data = config_lib.merge({"rate": 1}, config_lib.parse_override("units=[700, 700]"))
    built = config_lib.build(Example, data)
    assert built == Example(rate=1.0, units=(700, 700))
    assert config_lib.build(Example, config_lib.parse_override("rate=1e-3")).rate == 0.001


def test_a_preset_lays_itself_over_the_preset_its_base_names(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Model:
        k: int = 20
        units: tuple[int, ...] = (700,)
        l2: float = 0.0

    @dataclasses.dataclass(frozen=True)
    class Config:
        model: Model = Model()
        preset: str = "paper"

    path = tmp_path / "m.yaml"
    path.write_text("model: {k: 20}\npresets:\n  paper: {}\n"
                    "  small: {model: {k: 4, units: [32], l2: 1.0e-3}}\n"
                    "  medium: {base: small, model: {k: 8}}\n"
                    "  large: {base: medium, model: {l2: 0.0}}\n"
                    "  loop: {base: loop2}\n  loop2: {base: loop}\n  lost: {base: nowhere}\n")
    load = functools.partial(config_lib.load_with_preset, Config, path)
    assert load("medium").model == Model(k=8, units=(32,), l2=1e-3)
    assert load("large").model == Model(k=8, units=(32,), l2=0.0)
    assert load("medium", ["model.units=[64]"]) == Config(Model(8, (64,), 1e-3), "medium")
    with pytest.raises(ValueError, match="presets loop -> loop2 -> loop: a base cycle"):
        load("loop")
    with pytest.raises(ValueError, match=r"no preset 'nowhere' under presets: \(has \['large'"):
        load("lost")


def test_run_sh_list_reports_every_stage(artifacts):
    result = subprocess.run(["bash", str(REPO_ROOT / "run.sh"), "--tag", "t", "--list"],
                            capture_output=True, text=True, cwd=REPO_ROOT, check=True,
                            env={**os.environ, "CRITEO_PNN_ARTIFACTS": str(artifacts)},
                            timeout=120)
    assert "00_raw" in result.stdout and "04_export" in result.stdout
    assert "missing  never built" in result.stdout
