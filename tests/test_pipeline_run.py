"""The pipeline core: code fingerprints from import closures, one registry for run order,
`--only`/`--from` agreeing with `--list`, tags that remember their data, quiet start-up logs."""

import io
import json
import re

import pytest

from pipeline import code, registry, run, status, tags
from tests.conftest import REPO_ROOT

PREPROCESSING = ("--only", "00,01,02,03")


def run_main(*options):
    return run.main(list(options))


@pytest.fixture
def built(artifacts, raw_dir, capsys):
    """Stages 00-03 of tag t on the small raw folder."""
    assert run_main("--tag", "t", "--data", str(raw_dir), *PREPROCESSING) == 0
    capsys.readouterr()
    return raw_dir


def edited(monkeypatch, file_name: str):
    """As if `file_name` (a project source file) had been edited since the last build."""
    original = code.file_digest
    monkeypatch.setattr(code, "file_digest", lambda path: "edited" if path.name == file_name
                        else original(path))


def listing(capsys, *options) -> dict[str, tuple[str, str]]:
    assert run_main("--list", *options) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    return {line.split()[0]: (line.split()[1], line.split(None, 2)[2]) for line in lines}


def test_each_stage_depends_on_the_modules_it_imports_at_any_depth():
    closure = {entry.folder: set(code.import_closure(entry.module)) for entry in registry.STAGES}
    for folder, modules in closure.items():
        assert "pipeline.manifest" in modules, folder  # the publishing code of every stage
    assert "preprocessing.split" in closure["03_hash"]  # via count / load_split
    assert "pipeline.metrics" in code.import_closure("models.train")  # down-sampling fix
    assert "ensembles.calibrate" not in code.import_closure("models.stage")  # 05 never loads 06
    assert "preprocessing.leaves" not in code.import_closure("models.gbdt")  # nor stage 04
    assert "models.ipnn" in code.import_closure("models.train")  # loaded by name, f"models.{x}"
    assert "models.libffm" in closure["05_train"]  # models.stage picks learners by name
    assert "models.train" not in code.import_closure("models.libffm")  # learners stay apart
    assert "preprocessing.hash_fields" not in closure["01_split"]
    # The report reads every stage's output: a view no stage imports (./run.sh runs it after).
    assert not any("ensembles.report" in modules for modules in closure.values())


def test_registry_matches_the_stage_scripts():
    scripts = sorted(path.stem for path in (REPO_ROOT / "stages").glob("[0-9][0-9]_*.sh"))
    assert scripts == sorted(entry.folder for entry in registry.STAGES)
    for entry in registry.STAGES:
        assert re.search(rf"\b{re.escape(entry.module)}\b", entry.script.read_text()), entry
        assert entry.folder.startswith(entry.number + "_")
    numbers = [entry.number for entry in registry.STAGES]
    assert numbers == sorted(numbers)


def test_select_by_only_and_from():
    assert [e.folder for e in registry.select("3,02")] == ["02_count", "03_hash"]
    assert [e.folder for e in registry.select("", "08")] == ["08_submit", "09_upload"]
    assert [e.folder for e in registry.select("04")] == ["04_export", "04_leaves"]
    with pytest.raises(ValueError, match="unknown stage number"):
        registry.select("12")


def test_an_edit_to_an_imported_module_makes_the_stage_stale(built, monkeypatch, capsys):
    edited(monkeypatch, "manifest.py")  # imported by every stage, listed by none before
    table = listing(capsys, "--tag", "t")
    for label in ("00_raw", "01_split", "02_count", "03_hash"):
        assert table[label] == ("stale", "code changed: pipeline/manifest.py"), label


def test_only_refuses_a_stage_whose_input_is_stale_like_list_says(built, monkeypatch, capsys):
    edited(monkeypatch, "planted.py")  # stage 00's code only (preprocessing/synthetic/)
    table = listing(capsys, "--tag", "t")
    assert table["00_raw"][0] == "stale" and table["03_hash"][0] == "stale"
    assert "upstream 00_raw" in table["03_hash"][1]
    assert run_main("--tag", "t", "--only", "03") == 2
    error = capsys.readouterr().err
    assert "[03_hash] cannot run: its input 00_raw is stale" in error
    assert "--from 00" in error
    assert "done, skipped" not in error


def test_a_tag_remembers_its_data_and_overlays(built, capsys, tmp_path):
    saved = json.loads(tags.tag_file("t").read_text())
    assert saved["set"] == [f"raw.data_dir={built.resolve()}"]
    table = listing(capsys, "--tag", "t")  # no --data: judged against the remembered folder
    assert all(table[label] == ("done", "up to date")
               for label in ("00_raw", "01_split", "02_count", "03_hash")), table
    other = tmp_path / "other"
    other.mkdir()
    assert run_main("--tag", "t", "--data", str(other), "--only", "00") == 2
    assert f"was built from {built.resolve()}" in capsys.readouterr().err
    # a later --set of a remembered key replaces it; new keys are added
    files, overrides = tags.resolve("t", (), ["hash.min_count=3", "raw.data_dir=/x"])
    assert overrides == ["hash.min_count=3", "raw.data_dir=/x"]


def test_force_lets_a_tag_take_other_data(built, capsys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train.txt", "test.txt"):
        (other / name).write_bytes((built / name).read_bytes())
    assert run_main("--tag", "t", "--data", str(other), "--only", "00", "--force") == 0
    assert tags.remembered("t")[1] == [f"raw.data_dir={other.resolve()}"]


def test_start_up_noise_is_dropped_and_the_rest_kept():
    noise = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
             b"STDERR\n"
             b"I0000 00:00:1796191640.822668    4718 port.cc:153] oneDNN custom operations are "
             b"on.\n"
             b"I0000 00:00:1796191641.043748    4718 cpu_feature_guard.cc:227] This TensorFlow "
             b"binary is optimized\n"
             b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
             b"TensorFlow with the appropriate compiler flags.\n")
    kept = b"[03_hash] published\rprogress 10%\rprogress 20%\nerror: file.txt:3: bad\n"
    source, target = io.BytesIO(noise + kept + noise), io.BytesIO()
    run.filtered_copy(source, target)
    assert target.getvalue() == kept


def test_list_rows_follow_the_registry_order(artifacts):
    from pipeline import settings
    labels = [label for label, _, _ in status.rows("t", settings.load_pipeline_config(
        overrides=["models=[lr]"]))]
    folders = [label.split("/")[0] for label in labels]
    order = [entry.folder for entry in registry.STAGES]
    assert folders == sorted(folders, key=order.index)
