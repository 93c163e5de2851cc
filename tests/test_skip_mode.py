"""raw.on_bad_row=skip: test rows are never dropped (their Ids stay 60000000 + line), skipped
train/valid rows keep the split and Ids of stage 01, the skipped share is bounded, empty splits
are refused; non-hex categorical values stay distinct byte for byte and are reported."""

import json

import numpy as np
import pytest

from preprocessing import count, keys, parse, schema
from pipeline.manifest import read_manifest
from pipeline.paths import stage_dir
from tests.conftest import raw_line, run_stages, write_raw

SKIP = ("--set", "raw.on_bad_row=skip")


def data_option(directory):
    return ("--set", f"raw.data_dir={directory}")


def make_raw(tmp_path, train_rows, test_rows, name="raw"):
    directory = tmp_path / name
    directory.mkdir()
    write_raw(directory / "train.txt", train_rows, True, seed=1)
    write_raw(directory / "test.txt", test_rows, False, seed=2)
    return directory


def edit_lines(path, edits: dict):
    """Replaces 0-based data rows of `path` (bytes or str values)."""
    lines = path.read_bytes().splitlines(keepends=True)
    for row, line in edits.items():
        lines[row] = line if isinstance(line, bytes) else line.encode()
    path.write_bytes(b"".join(lines))


def load(tag, split, name):
    return np.load(stage_dir(tag, "03_hash") / f"{split}.{name}.npy")


def test_a_bad_test_row_is_kept_with_missing_values_and_every_id_stays_its_line(
        artifacts, tmp_path, capsys):
    """Test line 101 (1-based; data row 100, Id 60000100) has one extra tab field. Before the
    fix it was dropped and every later row took the previous row's Id."""
    clean = make_raw(tmp_path, 3000, 1000, "clean")
    edit_lines(clean / "test.txt", {500: raw_line(None, [None] * 13, [None] * 26)})
    bad = make_raw(tmp_path, 3000, 1000, "bad")
    lines = (clean / "test.txt").read_text().splitlines(keepends=True)
    edit_lines(bad / "test.txt", {100: lines[100].rstrip("\n") + "\textra\n", 500: lines[500]})
    run_stages("clean", *data_option(clean))
    capsys.readouterr()
    run_stages("bad", *data_option(bad), *SKIP)
    output = capsys.readouterr().out
    assert "1 test row kept with missing values" in output

    ids = load("bad", "test", "ids")
    np.testing.assert_array_equal(ids, schema.TEST_ID_START + np.arange(1000))
    fields, ints = load("bad", "test", "fields"), load("bad", "test", "ints")
    clean_fields, clean_ints = load("clean", "test", "fields"), load("clean", "test", "ints")
    # Id 60000101 (row 101) holds file line 102's data, as every row but the bad one does.
    others = np.arange(1000) != 100
    np.testing.assert_array_equal(fields[others], clean_fields[others])
    np.testing.assert_array_equal(ints[others], clean_ints[others])
    expected_101 = next(parse.iter_chunks(clean / "test.txt", False, start_row=101,
                                          stop_row=102)).ints[0]
    np.testing.assert_array_equal(ints[101], expected_101)
    assert ids[101] == 60000101
    # The bad row reads as all fields missing: like the all-missing row 500.
    assert np.isnan(ints[100]).all()
    np.testing.assert_array_equal(fields[100], fields[500])

    spec = json.loads((stage_dir("bad", "03_hash") / "field_spec.json").read_text())
    assert spec["rows"]["test"] == 1000
    assert spec["extra"]["test_rows_with_missing_values"] == 1
    manifest = read_manifest(stage_dir("bad", "03_hash"))
    assert manifest["test_rows_with_missing_values"] == 1
    assert manifest["skipped_rows"] == {"train": 0, "valid": 0, "test": 0}


def test_skipped_rows_keep_stage_01s_split_and_line_ids_and_are_counted_per_split(
        artifacts, tmp_path, capsys):
    """Stage 01 puts rows [0, 1714) of 2,000 in train and [1714, 2000) in valid. Skipped rows
    (100 in train, 1800 and 1900 in valid) must not move that boundary; Ids stay 10000000 + line
    index; stage 02 counts the skips of the train split only."""
    directory = make_raw(tmp_path, 2000, 300)
    lines = (directory / "train.txt").read_text().splitlines(keepends=True)
    bad = [100, 1800, 1900]
    edit_lines(directory / "train.txt", {row: "2" + lines[row][1:] for row in bad})
    run_stages("t", *data_option(directory), *SKIP)
    output = capsys.readouterr().out

    summary = count.load_summary("t")
    assert summary["rows"] == 1713 and summary["skipped_rows"] == 1
    assert read_manifest(stage_dir("t", "02_count"))["skipped_rows"] == 1
    expected = {"train": np.setdiff1d(np.arange(1714), bad),
                "valid": np.setdiff1d(np.arange(1714, 2000), bad)}
    labels = np.array([int(line[0]) for line in lines])
    for split, rows in expected.items():
        np.testing.assert_array_equal(load("t", split, "ids"), schema.TRAIN_ID_START + rows)
        np.testing.assert_array_equal(load("t", split, "labels"), labels[rows])
    manifest = read_manifest(stage_dir("t", "03_hash"))
    assert manifest["rows"] == {"train": 1713, "valid": 284, "test": 300}
    assert manifest["skipped_rows"] == {"train": 1, "valid": 2, "test": 0}
    assert "skipped train 1, valid 2" in output


def test_a_test_format_train_file_stops_at_the_skip_bound(artifacts, tmp_path):
    """A test file (39 columns) given as train.txt: its first line passes stage 00's check (I1 is
    0 or 1) but nearly every row is bad; before the bound stages 00-03 passed with an empty
    validation split."""
    directory = make_raw(tmp_path, 10, 300)
    write_raw(directory / "train.txt", 1000, False, seed=4)
    first = (directory / "train.txt").read_text().splitlines(keepends=True)[0]
    edit_lines(directory / "train.txt", {0: "1" + first[first.index("\t"):]})
    with pytest.raises(parse.BadRowError,
                       match=r"train\.txt: [\d,]+ of [\d,]+ rows \(\d+\.\d%\) .*bad.*\n.*"
                             r"raw\.max_skipped_fraction"):
        run_stages("t", *data_option(directory), *SKIP)
    assert not stage_dir("t", "02_count").exists()


def test_empty_splits_are_refused(artifacts, tmp_path):
    directory = make_raw(tmp_path, 700, 50)
    lines = (directory / "train.txt").read_text().splitlines(keepends=True)
    edit_lines(directory / "train.txt", {row: "x" + lines[row][1:] for row in range(600, 700)})
    options = (*data_option(directory), *SKIP, "--set", "raw.max_skipped_fraction=1.0")
    with pytest.raises(ValueError, match=r"valid split.* 0 rows.*100 .*skipped"):
        run_stages("t", *options)
    assert not stage_dir("t", "03_hash").exists()
    edit_lines(directory / "train.txt", {row: "x" + lines[row][1:] for row in range(0, 600)})
    with pytest.raises(ValueError, match=r"train split.* 0 rows.*600 .*skipped"):
        run_stages("t2", *options)
    assert not stage_dir("t2", "02_count").exists()


def test_the_skip_bound_applies_per_split(artifacts, tmp_path):
    """1% of train.txt is bad, but all of it in the validation split (7% of it)."""
    directory = make_raw(tmp_path, 2100, 50)
    lines = (directory / "train.txt").read_text().splitlines(keepends=True)
    edit_lines(directory / "train.txt", {row: "x" + lines[row][1:] for row in range(1900, 1921)})
    with pytest.raises(parse.BadRowError, match=r"train\.txt, valid split.*21 of 300 rows"):
        run_stages("t", *data_option(directory), *SKIP, "--set", "raw.max_skipped_fraction=0.02")


def test_parser_keeps_bad_unlabelled_rows_and_bounds_bad_rows(tmp_path):
    path = tmp_path / "test.txt"
    good = raw_line(None, [1] * 13, ["0a1b2c3d"] * 26)
    path.write_text(good + good.replace("\n", "\tx\n") + "\n" + good)
    report = parse.ParseReport()
    chunks = list(parse.iter_chunks(path, False, "skip", report=report))
    codes = np.concatenate([chunk.codes for chunk in chunks])
    assert len(codes) == 4 and report.skipped_rows == 0 and report.kept_with_missing_values == 2
    assert (codes[1:3, :13] == parse.INT_MISSING).all()
    assert (codes[1:3, 13:] == parse.CAT_MISSING).all()
    np.testing.assert_array_equal(codes[3], codes[0])
    assert "test.txt:2: more than 39" in report.first_problems[0]
    with pytest.raises(parse.BadRowError, match=r"test\.txt: 2 of 4 rows \(50\.0%\)"):
        list(parse.iter_chunks(path, False, "skip", max_bad_fraction=0.25))


@pytest.mark.parametrize("mode", ["xxh64", "md5"])
def test_non_utf8_and_uppercase_values_stay_distinct_and_are_reported(artifacts, tmp_path, mode,
                                                                      capsys):
    """Latin-1 b'\\xe9t\\xe9' and b'\\xe8t\\xe8' both decoded to U+FFFD t U+FFFD before the
    fix (one key, one id); uppercase hex is its own value and is reported."""
    directory = make_raw(tmp_path, 2000, 100)
    lines = (directory / "train.txt").read_bytes().splitlines(keepends=True)
    values = {range(0, 30): b"\xe9t\xe9", range(30, 60): b"\xe8t\xe8",
              range(60, 80): b"ABCDEF12", range(80, 100): b"abcdef12"}
    c3 = 1 + 13 + 2  # column of C3 in a train line
    for rows, value in values.items():
        for row in rows:
            columns = lines[row].split(b"\t")
            columns[c3] = value
            lines[row] = b"\t".join(columns)
    (directory / "train.txt").write_bytes(b"".join(lines))
    run_stages("t", *data_option(directory), "--set", f"hash.mode={mode}")
    output = capsys.readouterr().out

    field = schema.FIELD_NAMES.index("C3")
    column = load("t", "train", "fields")[:, field]
    groups = [np.unique(column[list(rows)]) for rows in values]
    assert all(len(group) == 1 for group in groups)
    assert len({int(group[0]) for group in groups}) == 4  # four values, four ids

    texts = count.load_fallback_text("t")
    assert {text.encode("utf-8", "surrogateescape") for text in texts.values()} == \
        {b"\xe9t\xe9", b"\xe8t\xe8", b"ABCDEF12"}
    unusual = count.load_summary("t")["unusual_values"]
    assert set(unusual) == {"C3"}
    assert unusual["C3"]["values"] == 3 and unusual["C3"]["rows"] == 80
    assert unusual["C3"]["kinds"] == {"not UTF-8": 2, "uppercase hex": 1}
    assert read_manifest(stage_dir("t", "02_count"))["unusual_values"] == \
        {"C3": {"values": 3, "rows": 80}}
    assert "C3: 3 values not 8 lowercase hex chars" in output and "'ABCDEF12'" in output
    assert "uppercase hex is kept as its own value" in output


def test_keys_of_non_utf8_text_hash_the_raw_bytes():
    text = b"\xe9t\xe9".decode("utf-8", "surrogateescape")
    code = parse.FALLBACK_BIT | 7
    for mode in ("xxh64", "md5"):
        assert keys.hash_codes(20, np.array([code]), mode, 1_000_000, {code: text})[0] == \
            keys.hash_bytes(b"C8-\xe9t\xe9", mode)
    assert keys.hash_key("C8-\u00e9t\u00e9", "md5") == keys.hash_bytes("C8-été".encode(), "md5")


@pytest.mark.parametrize("block_bytes", [1000, parse.BLOCK_BYTES])
def test_windows_are_file_rows_and_count_only_their_own_bad_rows(tmp_path, block_bytes):
    """Rows [100, 200) of a file with bad rows 10, 150 and 250: the window holds file rows 100..199
    but 150, whatever the block size, and its report counts one skipped row."""
    rng = np.random.default_rng(5)
    lines = [raw_line(int(rng.integers(2)), [int(v) for v in rng.integers(0, 99, 13)],
                      ["0a1b2c3d"] * 26) for _ in range(300)]
    for row in (10, 150, 250):
        lines[row] = "x" + lines[row][1:]
    path = tmp_path / "train.txt"
    path.write_text("".join(lines))
    report = parse.ParseReport()
    chunks = list(parse.iter_chunks(path, True, "skip", block_bytes=block_bytes, report=report,
                                    start_row=100, stop_row=200))
    rows = np.concatenate([chunk.row_numbers() for chunk in chunks])
    np.testing.assert_array_equal(rows, np.setdiff1d(np.arange(100, 200), [150]))
    labels = np.concatenate([chunk.labels for chunk in chunks])
    np.testing.assert_array_equal(labels, [int(lines[row][0]) for row in rows])
    assert (report.skipped_rows, report.rows, report.lines) == (1, 99, 100)
    assert np.concatenate([chunk.skipped for chunk in chunks]).tolist() == [150]
    assert report.first_bad.startswith("train.txt:151: field Label: label is not 0 or 1")
