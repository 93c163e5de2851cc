"""Stage 08 and the upload step: the writer, the validator on every kind of broken file, LOG.md,
and the kaggle CLI (faked by a script on PATH)."""

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensembles import metrics, report
from ensembles.report import read_json
from preprocessing.schema import FULL_TEST_ROWS, TEST_ID_START
from pipeline.manifest import file_md5
from pipeline.paths import stage_dir
from tests.conftest import use_artifacts
from submissions import upload, validate, write
from tests.test_calibrate import fake_hash_stage, fake_model, logistic_data

IDS = TEST_ID_START + np.arange(5, dtype=np.int64)
GOOD_ROWS = ["60000000,0.1", "60000001,0.25", "60000002,1e-06", "60000003,0.999999",
             "60000004,0.5"]


def write_text(path, lines, compress=False):
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_writer_output_passes_the_validator(tmp_path, compress):
    path = tmp_path / ("sub.csv.gz" if compress else "sub.csv")
    probabilities = np.array([0.0, 1.0, 0.123456789, 2e-7, 0.5], np.float32)
    summary = write.write_submission(path, IDS, probabilities, rows=5)
    assert summary.rows == 5 and summary.path == str(path)
    assert validate.validate(path, rows=5).rows == 5
    text = (gzip.decompress(path.read_bytes()) if compress else path.read_bytes()).decode()
    assert text.splitlines() == ["Id,Predicted", "60000000,1e-06", "60000001,0.999999",
                                 "60000002,0.123457", "60000003,1e-06", "60000004,0.5"]
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if compress else b"Id")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_csv_text_is_what_pandas_writes():
    """The writer formats rows itself only for speed: pandas' to_csv gives the same text."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"Id": TEST_ID_START + np.arange(1000),
                          "Predicted": np.clip(rng.beta(0.3, 2, 1000), 1e-6, 1 - 1e-6)})
    frame.loc[:2, "Predicted"] = [1e-6, 1 - 1e-6, 0.0001]
    assert write.csv_text(frame, header=True) == frame.to_csv(
        index=False, float_format="%.6g", lineterminator="\n").encode()
    assert write.csv_text(frame[5:], header=False).startswith(b"60000005,")


def test_gzip_output_is_byte_identical_across_runs(tmp_path):
    probabilities = np.linspace(0.01, 0.9, 5)
    write.write_submission(tmp_path / "a.csv.gz", IDS, probabilities, rows=5)
    write.write_submission(tmp_path / "b.csv.gz", IDS, probabilities, rows=5)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


@pytest.mark.parametrize("ids, probabilities, message", [
    (IDS, [0.5, 0.5, np.nan, 0.5, 0.5], "non-finite prediction nan at test row 2"),
    (IDS + 1, [0.5] * 5, "test Id 60000001 at row 0, expected 60000000"),
    (IDS, [0.5] * 4, r"\(4,\) predictions for \(5,\) test Ids"),
])
def test_writer_refuses_bad_inputs_and_leaves_no_file(tmp_path, ids, probabilities, message):
    with pytest.raises(ValueError, match=message):
        write.write_submission(tmp_path / "sub.csv", ids, np.array(probabilities), rows=5)
    assert list(tmp_path.iterdir()) == []


BROKEN = {
    "empty file": ([], "empty file"),
    "wrong header": (["id,predicted"] + GOOD_ROWS, r"line 1: header 'id,predicted'"),
    "header only": (["Id,Predicted"], r"0 rows, expected 5 \(missing Id 60000000..60000004\)"),
    "missing row": (["Id,Predicted"] + GOOD_ROWS[:4],
                    r"4 rows, expected 5 \(missing Id 60000004\)"),
    "extra row": (["Id,Predicted"] + GOOD_ROWS + ["60000005,0.5"], "line 7: extra row"),
    "gap in Ids": (["Id,Predicted"] + GOOD_ROWS[:2] + GOOD_ROWS[3:] + ["60000005,0.5"],
                   r"line 4: Id 60000003, expected 60000002: Ids must be consecutive"),
    "duplicate Id": (["Id,Predicted"] + GOOD_ROWS[:3] + ["60000001,0.5", "60000004,0.5"],
                     r"line 5: duplicate Id 60000001 \(already on line 3\)"),
    "wrong first Id": (["Id,Predicted"] + [f"{i},0.5" for i in range(10000000, 10000005)],
                       "line 2: Id 10000000, expected 60000000: test Ids start at 60000000"),
    "NaN": (["Id,Predicted"] + GOOD_ROWS[:4] + ["60000004,nan"], "line 6: Predicted 'nan' is not"),
    "infinity": (["Id,Predicted", "60000000,inf"] + GOOD_ROWS[1:], "line 2: Predicted 'inf'"),
    "zero": (["Id,Predicted", "60000000,0"] + GOOD_ROWS[1:],
             "line 2: Predicted '0' is not a probability strictly between 0 and 1"),
    "one": (["Id,Predicted", "60000000,1.0"] + GOOD_ROWS[1:], "line 2: Predicted '1.0' is not a"),
    "above one": (["Id,Predicted", "60000000,1.5"] + GOOD_ROWS[1:], "line 2: Predicted '1.5'"),
    "negative": (["Id,Predicted", "60000000,-0.1"] + GOOD_ROWS[1:], "line 2: Predicted '-0.1'"),
    "not a number": (["Id,Predicted", "60000000,0.5x"] + GOOD_ROWS[1:],
                     "line 2: Predicted '0.5x' is not a decimal number"),
    "blank line": (["Id,Predicted"] + GOOD_ROWS[:2] + [""] + GOOD_ROWS[2:], "line 4: '' does not"),
    "three columns": (["Id,Predicted", "60000000,0.5,1"] + GOOD_ROWS[1:],
                      "line 2: '60000000,0.5,1' does not have 2 comma-separated values"),
    "non-integer Id": (["Id,Predicted", "6e7,0.5"] + GOOD_ROWS[1:],
                       "line 2: Id '6e7' is not a non-negative integer"),
}


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validator_rejects_broken_files_with_the_line(tmp_path, case, compress):
    lines, message = BROKEN[case]
    path = write_text(tmp_path / "sub.csv", lines, compress)
    with pytest.raises(validate.SubmissionError, match=message):
        validate.validate(path, rows=5)


def test_validator_accepts_crlf_and_a_missing_final_newline(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_bytes(("\r\n".join(["Id,Predicted"] + GOOD_ROWS)).encode())
    summary = validate.validate(path, rows=5)
    assert (summary.first_id, summary.last_id) == (60000000, 60000004)
    assert summary.min_prediction == 1e-06 and summary.max_prediction == 0.999999


def test_validator_rejects_a_truncated_gzip(tmp_path):
    rows = "".join(f"{60000000 + i},0.5\n" for i in range(2000))
    data = gzip.compress(("Id,Predicted\n" + rows).encode())
    path = tmp_path / "sub.csv.gz"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(validate.SubmissionError, match="cannot read"):
        validate.validate(path, rows=2000)


def test_validator_command(tmp_path, capsys):
    path = write_text(tmp_path / "sub.csv.gz", ["Id,Predicted"] + GOOD_ROWS, compress=True)
    assert validate.main([str(path), "--rows", "5"]) == 0
    assert "OK" in capsys.readouterr().out
    assert validate.main([str(path)]) == 1  # the default is the full Kaggle test set
    assert f"5 rows, expected {FULL_TEST_ROWS:,}" in capsys.readouterr().err


OPTIONS = ["--tag", "t", "--set", "models=[m1, m2]", "--set", "calibrate.candidates=[none, platt]"]


def fake_raw_stage(tag: str, test_rows: int):
    """A published 00_raw/ whose raw.json counts `test_rows` test rows (what stage 08 checks)."""
    from pipeline.manifest import Stage

    with Stage(tag, "00_raw", {"fake": True}, inputs=[]).build() as out:
        (out / "raw.json").write_text(json.dumps({"source": "synthetic",
                                                  "rows": {"train": 1000, "test": test_rows}}))


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory):
    """03_hash, two models, their calibration and a blend (tag t), built once per module."""
    from ensembles import blend, calibrate

    root = tmp_path_factory.mktemp("built") / "artifacts"
    with pytest.MonkeyPatch.context() as patch:
        use_artifacts(patch, root)
        logits, labels = logistic_data(1500, seed=31)
        fake_raw_stage("t", test_rows=500)
        fake_hash_stage("t", labels[:1000], test_rows=500)
        rng = np.random.default_rng(32)
        for model_id in ("m1", "m2"):
            seen = logits + 0.7 * rng.standard_normal(len(logits))
            fake_model("t", model_id, metrics.sigmoid(seen[:1000]), metrics.sigmoid(seen[1000:]))
        calibrate.main(OPTIONS)
        blend.main(OPTIONS)
    return root


@pytest.fixture
def submitted(built_tree, artifacts):
    """A private copy of the built tree, ready for stage 08; returns the stage options."""
    shutil.copytree(built_tree / "t", artifacts / "t")
    return OPTIONS


def log_rows(log):
    return [line for line in log.read_text().splitlines() if line.startswith("| 20")]


def test_stage_writes_a_valid_file_and_logs_it(submitted, artifacts, capsys):
    write.main(submitted)
    record = json.loads((stage_dir("t", "08_submit") / "submission.json").read_text())
    path = artifacts / "submissions" / "csv" / os.path.basename(record["path"])
    assert path.name.endswith("_t_ens_logit.csv.gz") and path.exists()
    assert validate.validate(path, rows=500).rows == 500 and record["rows"] == 500
    blended = np.load(stage_dir("t", "07_ensemble", "ens_logit") / "test.pred.npy")
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert float(lines[1].split(",")[1]) == pytest.approx(blended[0], rel=1e-5)
    [row] = log_rows(artifacts / "t" / "SUBMISSIONS.md")
    assert "for tag `t`" in (artifacts / "t" / "SUBMISSIONS.md").read_text()
    # 500 rows is no Kaggle submission: the tracked log stays untouched.
    assert not (artifacts / "submissions" / "LOG.md").exists()
    ensemble_metrics = read_json(stage_dir("t", "07_ensemble", "ens_logit") / "metrics.json")
    assert f"`{path.name}` | t | 07_ensemble/ens_logit | m1, m2 |" in row
    assert f"{ensemble_metrics['valid_logloss']:.5f}" in row and "| 500 |" in row
    calibration = [read_json(stage_dir("t", "06_calibrate", m) / "calibrator.json")["method"]
                   for m in ("m1", "m2")]
    assert f"m1: {calibration[0]}; m2: {calibration[1]}" in row
    report_text = report.render("t")  # ./run.sh refreshes REPORT.md after the stages
    assert "| m1 |" in report_text and "| ens_logit |" in report_text and path.name in report_text
    capsys.readouterr()
    write.main(submitted)  # up to date: no new file, no new row
    assert "done, skipped" in capsys.readouterr().out
    assert len(log_rows(artifacts / "t" / "SUBMISSIONS.md")) == 1
    md5 = record["md5"]
    path.unlink()  # a deleted file is put back from 08_submit/, logged once
    write.main(submitted)
    assert path.exists() and file_md5(path) == md5
    assert len(log_rows(artifacts / "t" / "SUBMISSIONS.md")) == 1


def test_only_full_test_set_files_reach_the_tracked_log(submitted, artifacts, monkeypatch, capsys):
    """LOG.md is for files Kaggle accepts (the full test set; 500 rows stands in for it here);
    they are logged in the tag's own log as well."""
    assert write.KAGGLE_LOG_ROWS == FULL_TEST_ROWS
    monkeypatch.setattr(write, "KAGGLE_LOG_ROWS", 500)
    write.main(submitted)
    tracked = artifacts / "submissions" / "LOG.md"
    [row] = log_rows(tracked)
    assert log_rows(artifacts / "t" / "SUBMISSIONS.md") == [row] and "| 500 |" in row
    assert "full Kaggle test set (6,042,135 rows)" in tracked.read_text()
    assert f"SUBMISSIONS.md and {tracked}" in capsys.readouterr().out


def test_stage_checks_the_test_rows_against_stage_00s_count(submitted, artifacts):
    """03_hash holds 500 test rows; if stage 00 counted 501 in test.txt, a row went missing
    on the way (a dropped bad row) and no file may be written."""
    raw_json = stage_dir("t", "00_raw") / "raw.json"
    info = json.loads(raw_json.read_text())
    raw_json.write_text(json.dumps({**info, "rows": {**info["rows"], "test": 501}}))
    with pytest.raises(ValueError, match=r"03_hash holds 500 test rows, but stage 00 counted 501 "
                                         r"in test\.txt"):
        write.main(submitted)
    assert not (artifacts / "submissions").exists() and not stage_dir("t", "08_submit").exists()
    (stage_dir("t", "00_raw") / "raw.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"00_raw/raw\.json"):
        write.main(submitted)


def test_writer_checks_the_rows_stage_00_counted(tmp_path):
    with pytest.raises(ValueError, match="4 test Ids, but stage 00 counted 5 test rows"):
        write.write_submission(tmp_path / "sub.csv", IDS[:4], np.full(4, 0.5), rows=5)
    assert list(tmp_path.iterdir()) == []


def test_validator_takes_the_row_count_of_a_tags_stage_00(submitted, artifacts, tmp_path, capsys):
    path = write_text(tmp_path / "sub.csv", ["Id,Predicted"] + [f"{60000000 + i},0.5"
                                                                for i in range(500)])
    assert validate.main([str(path), "--tag", "t"]) == 0
    assert validate.validate_for_tag(path, "t").rows == 500
    raw_json = stage_dir("t", "00_raw") / "raw.json"
    raw_json.write_text(raw_json.read_text().replace('"test": 500', '"test": 501'))
    assert validate.main([str(path), "--tag", "t"]) == 1
    assert "500 rows, expected 501" in capsys.readouterr().err


def test_validator_reads_the_tag_under_its_artifacts_option(submitted, artifacts, tmp_path,
                                                            monkeypatch, capsys):
    path = write_text(tmp_path / "sub.csv", ["Id,Predicted"] + [f"{60000000 + i},0.5"
                                                                for i in range(500)])
    moved = tmp_path / "elsewhere"
    artifacts.rename(moved)
    use_artifacts(monkeypatch, tmp_path / "empty")
    assert validate.main([str(path), "--tag", "t"]) == 2
    assert "00_raw/raw.json" in capsys.readouterr().err
    assert validate.main([str(path), "--tag", "t", "--artifacts", str(moved)]) == 0


def test_stage_submits_a_chosen_source_uncompressed(submitted, artifacts):
    write.main([*submitted, "--set", "submit.source=05_train/m2", "--set", "submit.gzip=false"])
    record = json.loads((stage_dir("t", "08_submit") / "submission.json").read_text())
    assert record["path"].endswith("_t_m2.csv") and record["calibration"] == {"m2": "none"}
    assert Path(record["path"]).read_text().startswith("Id,Predicted\n60000000,")
    with pytest.raises(ValueError, match="submit.source='ipnn': expected STAGE/ID"):
        write.main([*submitted, "--set", "submit.source=ipnn"])


def test_report_tables_and_readme_markers(submitted, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\nrest\n")
    report.update_readme("t", readme)
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:begin -->\n")
    assert text.endswith("<!-- results:end -->\nrest\n")
    assert "old" not in text and "| ens_logit | " in text and "| m1 | " in text
    assert "06_calibrate/m1/reliability.png" in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="needs one <!-- results:begin -->"):
        report.update_readme("t", readme)


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """A `kaggle` script on PATH that records its arguments (and, for a download, writes a zip),
    plus a HOME with ~/.kaggle/kaggle.json."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    script = bin_dir / "kaggle"
    script.write_text(f"""#!{sys.executable}
import json, sys, zipfile, pathlib
with open({str(calls)!r}, "a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["competitions", "download"]:
    folder = pathlib.Path(sys.argv[sys.argv.index("-p") + 1])
    with zipfile.ZipFile(folder / "criteo-display-ad-challenge.zip", "w") as archive:
        archive.writestr("train.csv", "Id,Label\\n")
        archive.writestr("test.csv", "Id\\n")
""")
    script.chmod(0o755)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)

    def recorded():
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text().splitlines()]
    return recorded


def test_upload_validates_then_calls_the_cli(tmp_path, fake_kaggle):
    path = tmp_path / "sub.csv.gz"
    write.write_submission(path, IDS, np.full(5, 0.2), rows=5)
    upload.upload(path, "first try", rows=5)
    assert fake_kaggle() == [["competitions", "submit", "-c", "criteo-display-ad-challenge",
                              "-f", str(path), "-m", "first try"]]
    with pytest.raises(validate.SubmissionError, match="5 rows, expected 6,042,135"):
        upload.upload(path, "too small")  # Kaggle's row count by default
    assert len(fake_kaggle()) == 1


def test_upload_explains_a_missing_cli_or_missing_credentials(tmp_path, fake_kaggle, monkeypatch,
                                                              capsys):
    path = write_text(tmp_path / "sub.csv", ["Id,Predicted"] + GOOD_ROWS)
    (tmp_path / "home" / ".kaggle" / "kaggle.json").unlink()
    with pytest.raises(upload.KaggleError, match="no Kaggle credentials: .*kaggle.json.*KEY"):
        upload.upload(path, "m", rows=5)
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    upload.upload(path, "m", rows=5)
    assert len(fake_kaggle()) == 1
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert upload.main([str(path), "--rows", "5"]) == 1
    assert "kaggle command is not installed" in capsys.readouterr().err


def test_download_unpacks_the_competition_zip(tmp_path, fake_kaggle):
    destination = tmp_path / "raw"
    files = upload.download(destination)
    assert [path.name for path in files] == ["test.csv", "train.csv"]
    assert not (destination / "criteo-display-ad-challenge.zip").exists()
    assert fake_kaggle()[0][:4] == ["competitions", "download", "-c", "criteo-display-ad-challenge"]


def test_upload_stage_is_opt_in_and_refuses_a_demo_sized_file(submitted, fake_kaggle, capsys):
    write.main(submitted)
    assert upload.main(submitted) == 0
    assert "skipped: uploading to Kaggle is opt-in" in capsys.readouterr().out
    assert upload.main([*submitted, "--set", "submit.upload=true"]) == 1
    assert "not the Kaggle test set's 6,042,135" in capsys.readouterr().err
    assert fake_kaggle() == []


def test_validator_line_numbers_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "BLOCK_BYTES", 1000)  # about 60 lines per block
    rows = [f"{60000000 + i},0.{i + 1:04d}" for i in range(2000)]
    path = write_text(tmp_path / "sub.csv", ["Id,Predicted"] + rows, compress=True)
    summary = validate.validate(path, rows=2000)
    assert summary.rows == 2000 and summary.max_prediction == 0.2
    assert summary.mean_prediction == pytest.approx(np.mean(np.arange(1, 2001) / 10000))
    rows[1500] = "60001500,1.5"
    path = write_text(tmp_path / "sub.csv", ["Id,Predicted"] + rows)
    with pytest.raises(validate.SubmissionError, match="line 1502: Predicted '1.5'"):
        validate.validate(path, rows=2000)
    with pytest.raises(validate.SubmissionError, match="line 1202: extra row '60001200,0.1201'"):
        validate.validate(path, rows=1200)


def test_fast_block_check_accepts_only_what_the_line_check_accepts():
    """The pandas read of a block never passes a line the line-by-line check rejects (an Id like
    6e7 or +60000000, a third column, a blank line), and reads the same probabilities."""
    rng = np.random.default_rng(5)
    characters = list("0123456789.eE+-,")
    ids = [str(60000000 + i) for i in range(3)]
    odd_ids = ["6e7", "+60000000", "060000000", "60000000.", "6E7", "-60000000", ""]
    numbers = ["0.5", "1e-06", "5E-1", ".5", "+0.25", "0.999999", "1e", "1-2", "0", "1"]
    passed = 0
    for _ in range(3000):
        fields = [[row_id, str(rng.choice(numbers)) if rng.random() < 0.8 else
                   "".join(rng.choice(characters, rng.integers(0, 7)))] for row_id in ids]
        if rng.random() < 0.3:
            fields[rng.integers(3)][0] = str(rng.choice(odd_ids))
        if rng.random() < 0.2:  # a third column, at the end or after the Id
            row = fields[rng.integers(3)]
            row.insert(int(rng.integers(1, 3)), row[0] if rng.random() < 0.5 else "0.5")
        lines = [(",".join(row) + "\n").encode() for row in fields]
        fast = validate._block_probabilities(lines, 60000000)
        try:
            strict = validate._check_lines(Path("f"), lines, 0, 3, 60000000)
        except validate.SubmissionError:
            strict = None
        assert fast is None or (strict is not None and np.array_equal(fast, strict)), lines
        passed += fast is not None
    assert passed > 100  # the fast path is exercised, not only refused
    # Three columns on every line: pandas would take the first as an index.
    lines = [f"{row_id},{row_id},0.5\n".encode() for row_id in ids]
    assert validate._block_probabilities(lines, 60000000) is None
