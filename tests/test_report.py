"""The results report: where the numbers come from, the model and blend rows, README markers."""

import json

import pytest

from ensembles import report
from pipeline.paths import stage_dir


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def model(tag, model_id, logloss, preset, **extra):
    write_json(stage_dir(tag, "05_train", model_id) / "metrics.json",
               {"valid_logloss": logloss, "valid_auc": 0.75, "relative_information_gain": 0.13,
                "examples_per_second": 12345.6, "parameter_count": 2463, "wall_seconds": 14.44,
                **extra})
    write_json(stage_dir(tag, "05_train", model_id) / "config.resolved.json", {"preset": preset})


@pytest.fixture
def real_sample(artifacts):
    """A tag made from a 10,000-row real sample: two small-preset models, one paper GBDT, and a
    blend that fell back to its best single member."""
    write_json(stage_dir("r", "00_raw") / "raw.json",
               {"source": "real", "inputs": {"train": "/somewhere/train.txt",
                                             "test": "/somewhere/test.csv"},
                "rows": {"train": 10000, "test": 1999}, "md5": {}, "full_size": False})
    write_json(stage_dir("r", "03_hash") / "field_spec.json",
               {"rows": {"train": 8571, "valid": 1429, "test": 1999},
                "total_vocabulary_size": 2462, "min_count": {"cat": 10, "int": 1}})
    model("r", "lr", 0.455, "small")
    model("r", "fm", 0.4563, "small")
    model("r", "lgbm_raw", 0.4655, "paper")
    members = {"lr": {"valid_logloss": 0.455}, "fm": {"valid_logloss": 0.4563}}
    write_json(stage_dir("r", "07_ensemble", "ens_logit") / "metrics.json",
               {"name": "ens_logit", "method": "single", "single_member": "lr",
                "source": "06_calibrate", "weights": {"lr": 1.0, "fm": 0.0},
                "valid_logloss": 0.4551, "valid_auc": 0.766, "relative_information_gain": 0.15,
                "average": {"valid_logloss": 0.4556}, "member_metrics": members,
                "held_out_logloss": {"weighted": 0.4571, "average": 0.4556, "single": 0.4551}})
    return artifacts


def test_report_says_what_data_and_presets_it_was_made_from(real_sample):
    text = report.render("r")
    assert ("Data: real Criteo rows: `train.txt` (10,000 rows), `test.csv` (1,999 rows), a "
            "sample, not the full Kaggle files; time-ordered split train 8,571 / valid 1,429 / "
            "test 1,999 rows, 2,462 feature ids (min count 10); model presets: paper "
            "(lgbm_raw); small (fm, lr).") in text
    assert "/somewhere" not in text  # no local paths in a committed table
    assert "Artifact tree `r`" in text


def test_synthetic_and_missing_inputs_are_named(artifacts):
    write_json(stage_dir("d", "00_raw") / "raw.json",
               {"source": "synthetic", "rows": {"train": 200, "test": 40}})
    model("d", "lr", 0.5, "demo")
    assert ("Data: synthetic Criteo-like data (`preprocessing/synthetic/`); model presets: "
            "demo.") in report.render("d")
    assert "Data: unknown (no 00_raw/03_hash)." in report.render("nothing")
    assert "No trained models in 05_train." in report.render("nothing")


def test_markdown_table_keeps_cells_unpadded():
    assert report.markdown_table([{"a": "1", "b c": "x"}, {"a": "22", "b c": ""}]) == [
        "| a | b c |", "|---|---|", "| 1 | x |", "| 22 |  |"]


def test_models_sorted_by_logloss_and_blend_shows_its_choice(real_sample):
    lines = report.render("r").splitlines()
    model_lines = [line for line in lines if line.startswith(("| lr |", "| fm |", "| lgbm_raw |"))]
    assert [line.split(" | ")[0] for line in model_lines] == ["| lr", "| fm", "| lgbm_raw"]
    assert model_lines[0].startswith("| lr | 0.45500 | 0.7500 | 0.1300 | 12,346 | 2,463 | 14.4 |")
    [blend_line] = [line for line in lines if line.startswith("| ens_logit |")]
    assert "| single lr (06_calibrate) | lr 1.00, fm 0.00 | 0.45510 |" in blend_line
    assert "| 0.45710 / 0.45560 / 0.45510 |" in blend_line and "| lr 0.45500 |" in blend_line


def test_readme_block_is_replaced_and_links_reach_the_artifacts(real_sample, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Results\n\nprose\n<!-- results:begin -->\nold\n"
                      "<!-- results:end -->\n\n## Layout\n")
    (stage_dir("r", "05_train", "lr") / "learning_curve.png").write_bytes(b"png")
    report.update_readme("r", readme)
    text = readme.read_text()
    assert text.startswith("# x\n\n## Results\n\nprose\n<!-- results:begin -->\nArtifact tree")
    assert text.endswith("<!-- results:end -->\n\n## Layout\n") and "old" not in text
    [link] = [part for part in text.split("(") if "learning_curve.png" in part]
    assert (tmp_path / link.split(")")[0]).resolve() == \
        (stage_dir("r", "05_train", "lr") / "learning_curve.png").resolve()
    report.update_readme("r", readme)  # idempotent: one block, same text
    assert readme.read_text() == text


def test_a_write_cut_short_leaves_the_readme_as_it_was(real_sample, tmp_path, monkeypatch):
    """Writing stops half-way (a full disk, a kill): the user's README keeps its old text and no
    temporary file stays beside it."""
    (tmp_path / "repo").mkdir()
    readme = tmp_path / "repo" / "README.md"
    original = "# x\n<!-- results:begin -->\nold\n<!-- results:end -->\n" + "prose\n" * 500
    readme.write_text(original)
    write_text = type(readme).write_text

    def half_then_fail(path, text, *args, **kwargs):
        write_text(path, text[:len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(readme), "write_text", half_then_fail)
    with pytest.raises(OSError):
        report.update_readme("r", readme)
    monkeypatch.undo()
    assert readme.read_text() == original
    assert [path.name for path in readme.parent.iterdir()] == ["README.md"]
