"""The Criteo 1TB day-file input: detection, the split by day, binned counting (count.max_bins),
stage 03 over day files, run.sh's tag, and stage 08/09 without a test set."""

import gzip
import json
import os
import subprocess

import numpy as np
import pytest

from preprocessing import bins, count, field_spec, leaves, parse, raw, schema, synthetic
from preprocessing.split import Part, load_split, parse_split
from pipeline import settings
from pipeline.paths import stage_dir
from submissions import upload, write
from tests.conftest import REPO_ROOT, run_stages

DAY_ROWS = (1200, 1000, 800)
DAY_NAMES = ("day_0", "day_1.gz", "day_2.txt.gz")


def write_text(path, text: str) -> None:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def split_into_days(lines: list[str], directory, rows=DAY_ROWS, names=DAY_NAMES):
    """Writes consecutive blocks of `lines` as day files (gzipped when the name ends in .gz)."""
    directory.mkdir()
    start = 0
    for name, count_rows in zip(names, rows):
        write_text(directory / name, "".join(lines[start:start + count_rows]))
        start += count_rows
    return directory


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """3,000 synthetic train rows (and a test.txt) as one Kaggle folder and as 3 day files."""
    root = tmp_path_factory.mktemp("criteo1tb")
    synthetic.generate(root / "kaggle", sum(DAY_ROWS), 50, seed=7)
    lines = (root / "kaggle" / "train.txt").read_text().splitlines(keepends=True)
    return {"kaggle": root / "kaggle", "days": split_into_days(lines, root / "days"),
            "lines": lines}


def data_option(directory):
    return ("--set", f"raw.data_dir={directory}")


def touch_days(directory, names):
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_text("")
    return directory


def test_day_files_are_found_in_day_order(tmp_path):
    names = [f"day_{day}" + (".gz" if day % 2 else "") for day in range(11)]
    days = raw.find_days(touch_days(tmp_path / "d", names + ["README", "day_x", "day_01"]))
    assert list(days) == [f"day_{day}" for day in range(11)]
    assert [path.name for path in days.values()] == names
    assert raw.find_raw_input(tmp_path / "d").source == raw.CRITEO_1TB
    assert raw.find_days(touch_days(tmp_path / "none", ["train.txt"])) is None


@pytest.mark.parametrize("names, message", [
    (["day_0", "day_1", "day_3"], "day_2 is missing"),
    (["day_1", "day_2"], "day_0 is missing"),
    (["day_0", "day_0.gz", "day_1"], "day_0 and day_0.gz are the same day"),
    (["day_0.txt.gz"], "only day_0.txt.gz; the Criteo 1TB input needs at least two days"),
    (["day_0", "day_1", "train.txt", "test.txt"], r"both Kaggle files \(train.txt, test.txt\)"),
    (["day_0", "day_1", "dac.tar.gz"], r"both Kaggle files \(dac.tar.gz\)"),
])
def test_bad_day_folders_are_refused_with_the_reason(tmp_path, names, message):
    with pytest.raises(ValueError, match=message):
        raw.find_raw_input(touch_days(tmp_path / "d", names))


def test_stage_00_links_the_days_without_counting_and_checks_columns(artifacts, generated,
                                                                    tmp_path):
    run_stages("d", *data_option(generated["days"]), modules=("raw",))
    out = stage_dir("d", "00_raw")
    info = json.loads((out / "raw.json").read_text())
    assert info["source"] == "criteo_1tb" and info["days"] == list(DAY_NAMES)
    assert info["rows"] is None and "not counted" in info["rows_note"]
    for name in DAY_NAMES:
        assert (out / name).is_symlink()
        assert (out / name).resolve() == (generated["days"] / name).resolve()
    unlabelled = split_into_days([line.split("\t", 1)[1] for line in generated["lines"]],
                                 tmp_path / "unlabelled")
    with pytest.raises(ValueError, match=r"day_0:1: 39 columns and no 0/1 label"):
        run_stages("u", *data_option(unlabelled), modules=("raw",))


def test_split_is_by_day_with_the_last_day_for_validation(artifacts, generated):
    run_stages("d", *data_option(generated["days"]), modules=("raw", "split"))
    splits = load_split("d")
    assert splits == {"train": [Part("day_0"), Part("day_1.gz")],
                      "valid": [Part("day_2.txt.gz")], "test": []}
    text = json.loads((stage_dir("d", "01_split") / "split.json").read_text())
    assert text["train"][1] == {"file": "day_1.gz", "rows": None}


def test_split_json_parts_are_checked():
    kaggle = {"train": [{"file": "train.txt", "rows": [0, 6]}],
              "valid": [{"file": "train.txt", "rows": [6, 7]}],
              "test": [{"file": "test.txt", "rows": [0, 2]}]}
    assert parse_split(kaggle)["valid"] == [Part("train.txt", 6, 7)]
    with pytest.raises(ValueError, match="rebuild stage 01"):
        parse_split({**kaggle, "train": {"file": "train.txt", "rows": [0, 6]}})
    with pytest.raises(ValueError, match=r"split.json: valid part .*expected"):
        parse_split({**kaggle, "valid": [{"file": "train.txt", "rows": [7, 6]}]})


def test_day_files_give_the_same_counts_and_field_ids_as_one_train_file(artifacts, generated):
    """Without bins, day_0 + day_1 (train) and day_2 (valid) equal rows [0, 2200) and [2200,
    3000) of the concatenated train.txt: same counts, field ids, labels, Ids and integers."""
    run_stages("days", *data_option(generated["days"]))
    valid_fraction = DAY_ROWS[2] / sum(DAY_ROWS)
    run_stages("kaggle", *data_option(generated["kaggle"]), "--set",
               f"split.valid_fraction={valid_fraction}")
    for (name, codes, counts), (_, kaggle_codes, kaggle_counts) in zip(
            count.iter_counts("days"), count.iter_counts("kaggle")):
        np.testing.assert_array_equal(codes, kaggle_codes, err_msg=name)
        np.testing.assert_array_equal(counts, kaggle_counts, err_msg=name)
    days = stage_dir("days", "03_hash")
    kaggle = stage_dir("kaggle", "03_hash")
    for split in ("train", "valid"):
        for kind in ("fields", "labels", "ids", "ints"):
            name = f"{split}.{kind}.npy"
            assert (days / name).read_bytes() == (kaggle / name).read_bytes(), name
    spec, splits = field_spec.open_field_files(days, check_ids=True)
    assert spec.rows == {"train": 2200, "valid": 800, "test": 0}
    assert spec.extra["source"] == "criteo_1tb" and spec.extra["valid_days"] == ["day_2.txt.gz"]
    assert splits["test"].fields.shape == (0, 39) and spec.hashing["max_bins"] is None
    np.testing.assert_array_equal(splits["valid"].ids, schema.TRAIN_ID_START + 2200 + np.arange(800))


def test_binned_counts_stay_within_the_bins_and_stage_03_bins_alike(artifacts, generated):
    run_stages("b", *data_option(generated["days"]), "--set", "count.max_bins=16")
    summary = count.load_summary("b")
    assert summary["max_bins"] == 16 and summary["rows"] == 2200
    for field, (name, codes, counts) in enumerate(count.iter_counts("b")):
        assert counts.sum() == 2200, name
        if field >= schema.NUM_INT_FIELDS:
            binned = codes[codes != parse.CAT_MISSING]
            assert len(codes) <= 17 and ((0 <= binned) & (binned < 16)).all(), name
    # Stage 03 takes the bins from stage 02's output, not from its own command line.
    run_stages("b", *data_option(generated["days"]), "--set", "count.max_bins=64",
               modules=("hash_fields",))
    spec, splits = field_spec.open_field_files(stage_dir("b", "03_hash"))
    assert spec.hashing["max_bins"] == 16
    assert all(size <= 16 + 1 + 2 for size in spec.vocabulary_sizes[schema.NUM_INT_FIELDS:])
    # Every valid row's ids are those of its binned codes in the vocabulary (or rare / OOV).
    codes = next(parse.iter_chunks(generated["days"] / "day_2.txt.gz", True)).codes
    bins.bin_codes(codes, 16)
    with np.load(stage_dir("b", "03_hash") / "vocabulary.npz") as vocabulary:
        for field, name in enumerate(schema.FIELD_NAMES[schema.NUM_INT_FIELDS:],
                                     schema.NUM_INT_FIELDS):
            ids = dict(zip(vocabulary[f"codes_{name}"].tolist(), vocabulary[f"ids_{name}"].tolist()))
            local = np.asarray(splits["valid"].fields[:, field]) - spec.offsets[field]
            expected = [ids.get(code, -1) for code in codes[:, field].tolist()]
            kept = np.array(expected) >= 0
            np.testing.assert_array_equal(local[kept], np.array(expected)[kept], err_msg=name)
            assert (local[~kept] <= field_spec.RARE_ID).all(), name


def test_bin_codes_maps_categorical_codes_in_place_and_keeps_missing():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << 32, size=(100_000, schema.NUM_FIELDS), dtype=np.int64)
    codes[::7, 20] = parse.CAT_MISSING
    codes[1, 30] = parse.FALLBACK_BIT | 12345
    codes[:, 15] = codes[:, 14]
    original = codes.copy()
    bins.bin_codes(codes, 10)
    np.testing.assert_array_equal(codes[:, :schema.NUM_INT_FIELDS],
                                  original[:, :schema.NUM_INT_FIELDS])
    assert (codes[::7, 20] == parse.CAT_MISSING).all()
    categorical = codes[:, schema.NUM_INT_FIELDS:]
    present = categorical[categorical != parse.CAT_MISSING]
    assert present.min() == 0 and present.max() == 9
    assert np.bincount(present).min() > 0.95 * len(present) / 10  # uniform within 5 %
    again = original.copy()
    bins.bin_codes(again, 10)
    np.testing.assert_array_equal(again, codes)
    np.testing.assert_array_equal(codes[:, 14], codes[:, 15])  # a function of the code alone


def test_count_max_bins_is_checked():
    with pytest.raises(ValueError, match=r"count.max_bins: 1; null or 2 .. 2\^32"):
        settings.load_pipeline_config(overrides=["count.max_bins=1"])
    overlay = settings.load_pipeline_config([REPO_ROOT / "configs" / "criteo1tb.yaml"])
    assert overlay.count.max_bins == 1 << 20 and not overlay.export.libffm
    assert not overlay.export.gbdt and overlay.models == ("lr", "fm", "ipnn")


def test_no_test_set_stops_submission_and_upload_with_a_message(artifacts, generated, capsys):
    run_stages("d", *data_option(generated["days"]))
    capsys.readouterr()
    write.main(["--tag", "d"])
    config = settings.load_pipeline_config(overrides=["submit.upload=true"])
    upload.upload_stage("d", config)
    output = capsys.readouterr().out
    message = "the Criteo 1TB input has no test set; nothing to submit"
    assert f"[08_submit] skipped: {message}" in output
    assert f"[09_upload] skipped: {message}" in output
    assert not (artifacts / "submissions").exists() and not stage_dir("d", "08_submit").exists()
    assert write.make_stages("d", config) == [] and upload.make_stages("d", config) == []


def test_report_describes_the_days(artifacts, generated):
    from ensembles import report

    run_stages("r", *data_option(generated["days"]))
    text = report.data_description("r")
    assert "the Criteo 1TB logs, 3 days (day_0 .. day_2.txt.gz" in text
    assert "train 2,200 / valid 800 / test 0 rows" in text


def test_leaves_stage_skips_itself_without_gbdt_inputs(artifacts, capsys):
    leaves.main(["--tag", "d", "--config", str(REPO_ROOT / "configs" / "criteo1tb.yaml")])
    assert "[04_leaves] skipped: export.gbdt is false" in capsys.readouterr().out
    assert not stage_dir("d", "04_leaves").exists()


def test_run_sh_names_the_tree_criteo1tb_for_day_files(artifacts, generated):
    environment = {**os.environ, "CRITEO_PNN_ARTIFACTS": str(artifacts)}
    listing = subprocess.run(["bash", str(REPO_ROOT / "run.sh"), "--data",
                              str(generated["days"]), "--list"], cwd=REPO_ROOT, env=environment,
                             capture_output=True, text=True, timeout=300, check=False)
    assert listing.returncode == 0, listing.stderr[-3000:]
    assert "artifact tree: criteo1tb" in listing.stdout
    assert "00_raw" in listing.stdout


def test_real_1tb_sample_split_into_days(artifacts, tmp_path, shared_criteo):
    """The 10,000-row head of the 1TB logs' day_0 (never committed) as three day files."""
    lines = (shared_criteo / "yuiskw_criteo1tb_day_0.part.txt").read_text().splitlines(
        keepends=True)
    days = split_into_days(lines, tmp_path / "days", rows=(4000, 3000, 3000),
                           names=("day_0.gz", "day_1", "day_2"))
    run_stages("real", *data_option(days), "--set", "count.max_bins=256")
    spec, splits = field_spec.open_field_files(stage_dir("real", "03_hash"), check_ids=True)
    assert spec.rows == {"train": 7000, "valid": 3000, "test": 0}
    positives = sum(line.startswith("1\t") for line in lines)
    assert positives == 265  # the sample's click rate 0.0265, not Kaggle's 0.256
    assert splits["train"].labels.sum() + splits["valid"].labels.sum() == positives
    assert all(size <= 256 + 3 for size in spec.vocabulary_sizes[schema.NUM_INT_FIELDS:])
    np.testing.assert_array_equal(splits["valid"].ids, schema.TRAIN_ID_START + 7000 + np.arange(3000))


def test_a_day_file_that_is_not_gzip_is_refused_at_stage_00(tmp_path):
    days = touch_days(tmp_path / "d", ["day_0"])
    (days / "day_0").write_text("1\t" + "\t" * 38 + "\n")
    (days / "day_1.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"day_1\.gz: not readable as gzip"):
        raw.check_columns(days / "day_1.gz", "train")
