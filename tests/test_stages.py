"""Stages 00-04 on small raw files: outputs, the field-spec contract, skip/rebuild, bad input."""

import gzip
import json
import shutil
import tarfile

import numpy as np
import pytest

from preprocessing import count, field_spec, keys, parse, raw, schema
from pipeline.manifest import read_manifest
from pipeline.paths import stage_dir
from tests.conftest import run_stages, write_raw

ALL = ("raw", "split", "count", "hash_fields", "export")


def data_option(directory):
    return ("--set", f"raw.data_dir={directory}")


def test_field_files_follow_the_spec(artifacts, raw_dir):
    run_stages("t", *data_option(raw_dir))
    spec, splits = field_spec.open_field_files(stage_dir("t", "03_hash"), check_ids=True)
    assert spec.rows == {"train": 1714, "valid": 286, "test": 300}
    assert spec.num_fields == 39 and spec.field_names == list(schema.FIELD_NAMES)
    assert splits["train"].ids[0] == schema.TRAIN_ID_START
    assert splits["valid"].ids[0] == schema.TRAIN_ID_START + 1714
    np.testing.assert_array_equal(splits["test"].ids, schema.TEST_ID_START + np.arange(300))
    labels = np.concatenate([splits["train"].labels, splits["valid"].labels])
    rows = list(parse.iter_chunks(raw_dir / "train.txt", True))
    np.testing.assert_array_equal(labels, rows[0].labels)
    assert spec.label_rate["train"] == pytest.approx(splits["train"].labels.mean())


def test_rare_training_values_share_one_id_and_unseen_values_get_oov(artifacts, raw_dir):
    run_stages("t", *data_option(raw_dir))
    spec, splits = field_spec.open_field_files(stage_dir("t", "03_hash"))
    codes, value_counts = next((codes, counts) for name, codes, counts in count.iter_counts("t")
                               if name == "C3")
    field = schema.FIELD_NAMES.index("C3")
    train_codes = np.concatenate([chunk.codes[:, field] for chunk in
                                  parse.iter_chunks(raw_dir / "train.txt", True, stop_row=1714)])
    local = np.asarray(splits["train"].fields[:, field]) - spec.offsets[field]
    count_of = dict(zip(codes.tolist(), value_counts.tolist()))
    frequent = np.array([count_of[code] >= 10 for code in train_codes])
    assert (local[~frequent] == field_spec.RARE_ID).all() and (~frequent).any()
    assert (local[frequent] >= field_spec.FIRST_VALUE_ID).all() and frequent.any()
    # One id per distinct frequent value.
    pairs = set(zip(train_codes[frequent].tolist(), local[frequent].tolist()))
    assert len(pairs) == len({code for code, _ in pairs}) == len({i for _, i in pairs})
    test_local = np.asarray(splits["test"].fields[:, field]) - spec.offsets[field]
    test_codes = np.concatenate([chunk.codes[:, field] for chunk in
                                 parse.iter_chunks(raw_dir / "test.txt", False)])
    unseen = ~np.isin(test_codes, codes)
    assert unseen.any() and (test_local[unseen] == field_spec.OOV_ID).all()


def test_md5_mode_ids_follow_the_sorted_winners_hashes(artifacts, raw_dir):
    run_stages("t", *data_option(raw_dir), "--set", "hash.mode=md5")
    spec = field_spec.FieldSpec.load(stage_dir("t", "03_hash"))
    assert spec.hashing["mode"] == "md5"
    with np.load(stage_dir("t", "03_hash") / "vocabulary.npz") as vocabulary:
        codes, ids = vocabulary["codes_I1"], vocabulary["ids_I1"]
    hashes = [keys.hash_key(keys.key(0, int(code)), "md5") for code in codes]
    assert np.all(np.diff(np.array(hashes)[np.argsort(ids)]) >= 0)


def test_done_stages_are_skipped_and_changes_rebuild_with_a_reason(artifacts, raw_dir, capsys):
    run_stages("t", *data_option(raw_dir))
    first = read_manifest(stage_dir("t", "03_hash"))
    fields_before = (stage_dir("t", "03_hash") / "train.fields.npy").read_bytes()
    capsys.readouterr()
    run_stages("t", *data_option(raw_dir))
    assert capsys.readouterr().out.count("done, skipped") == 4
    run_stages("t", *data_option(raw_dir), "--set", "hash.min_count=5")
    output = capsys.readouterr().out
    assert "[03_hash] stale: config changed: hash.min_count" in output
    assert read_manifest(stage_dir("t", "03_hash"))["fingerprint"] != first["fingerprint"]
    run_stages("t", *data_option(raw_dir), "--force")
    assert (stage_dir("t", "03_hash") / "train.fields.npy").read_bytes() == fields_before


def test_export_writes_libffm_and_gbdt_inputs(artifacts, raw_dir):
    run_stages("t", *data_option(raw_dir), "--set", "export.gbdt_frequent_fraction=0.05",
               modules=ALL)
    spec, splits = field_spec.open_field_files(stage_dir("t", "03_hash"))
    out = stage_dir("t", "04_export")
    lines = (out / "valid.ffm").read_text().splitlines()
    assert len(lines) == spec.rows["valid"]
    tokens = lines[3].split(" ")
    assert int(tokens[0]) == splits["valid"].labels[3]
    assert [token.split(":") for token in tokens[1:]] == \
        [[str(f), str(i), "1"] for f, i in enumerate(splits["valid"].fields[3])]
    assert (out / "test.ffm").read_text().startswith("0 ")
    gbdt = np.load(out / "train.gbdt.npy")
    columns = json.loads((out / "gbdt_columns.json").read_text())
    assert gbdt.shape == (spec.rows["train"], len(columns)) and len(columns) > 13
    ints = np.asarray(splits["train"].ints)
    np.testing.assert_array_equal(gbdt[:, :13], np.nan_to_num(ints, nan=-10))
    assert all(0.05 * spec.rows["train"] < gbdt[:, column].sum() for column in range(13, len(columns)))


def test_a_frequent_value_that_is_not_hex_gets_a_gbdt_column(artifacts, raw_dir):
    lines = (raw_dir / "train.txt").read_text().splitlines(keepends=True)
    with open(raw_dir / "train.txt", "w") as handle:  # C1 (column 15) is "Other" in every row
        handle.writelines("\t".join(line.split("\t")[:14] + ["Other"] + line.split("\t")[15:])
                          for line in lines)
    run_stages("t", *data_option(raw_dir), "--set", "export.gbdt_frequent_fraction=0.5",
               modules=ALL)
    columns = json.loads((stage_dir("t", "04_export") / "gbdt_columns.json").read_text())
    assert any(str(column).startswith("C1=#") for column in columns), columns


def test_reader_rejects_arrays_that_disagree_with_the_spec(artifacts, raw_dir):
    run_stages("t", *data_option(raw_dir))
    directory = stage_dir("t", "03_hash")
    np.save(directory / "valid.fields.npy", np.zeros((5, 39), np.int32))
    with pytest.raises(ValueError, match=r"valid.fields.npy: shape \(5, 39\)"):
        field_spec.open_field_files(directory)
    spec = json.loads((directory / "field_spec.json").read_text())
    spec["fields"][1]["offset"] += 1
    (directory / "field_spec.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="field I2: offset"):
        field_spec.FieldSpec.load(directory)


@pytest.mark.parametrize("packing", ["gz", "tar", "csv"])
def test_compressed_and_kaggle_csv_inputs_give_the_same_field_files(artifacts, raw_dir, tmp_path,
                                                                    packing):
    run_stages("plain", *data_option(raw_dir))
    packed = tmp_path / "packed"
    packed.mkdir()
    if packing == "gz":
        for split in ("train", "test"):
            with open(raw_dir / f"{split}.txt", "rb") as source, \
                    gzip.open(packed / f"{split}.txt.gz", "wb") as target:
                shutil.copyfileobj(source, target)
    elif packing == "tar":
        with tarfile.open(packed / "dac.tar.gz", "w:gz") as tar:
            for split in ("train", "test"):
                tar.add(raw_dir / f"{split}.txt", arcname=f"{split}.txt")
    else:
        write_kaggle_csv(raw_dir / "train.txt", packed / "train.csv", schema.CSV_TRAIN_HEADER,
                         schema.TRAIN_ID_START)
        write_kaggle_csv(raw_dir / "test.txt", packed / "test.csv", schema.CSV_TEST_HEADER,
                         schema.TEST_ID_START)
    run_stages("packed", *data_option(packed))
    for name in ("train.fields.npy", "test.fields.npy", "valid.labels.npy"):
        assert (stage_dir("packed", "03_hash") / name).read_bytes() == \
            (stage_dir("plain", "03_hash") / name).read_bytes()


def write_kaggle_csv(source, target, header, first_id):
    lines = source.read_text().splitlines()
    rows = [f"{first_id + index}," + line.replace("\t", ",") for index, line in enumerate(lines)]
    target.write_text(",".join(header) + "\r\n" + "\r\n".join(rows) + "\r\n")


def test_kaggle_csv_with_a_wrong_header_or_gap_is_rejected(tmp_path):
    bad_header = tmp_path / "train.csv"
    bad_header.write_text("Id,Label,I1\n10000000,1,3\n")
    with pytest.raises(ValueError, match=r"train.csv:1: header"):
        raw.convert_kaggle_csv(bad_header, "train", tmp_path / "out.txt")
    gap = tmp_path / "test.csv"
    row = ",".join([""] * 39)
    gap.write_text(",".join(schema.CSV_TEST_HEADER) + f"\n60000000,{row}\n60000002,{row}\n")
    with pytest.raises(ValueError, match=r"test.csv:3: Id 60000002, expected 60000001"):
        raw.convert_kaggle_csv(gap, "test", tmp_path / "out.txt")


def test_swapped_or_empty_files_are_rejected_at_stage_00(artifacts, tmp_path):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    write_raw(swapped / "train.txt", 50, labelled=True)
    shutil.copy(swapped / "train.txt", swapped / "test.txt")
    with pytest.raises(ValueError, match="test.txt:1: 40 columns; a test file has 39"):
        run_stages("s", *data_option(swapped), modules=("raw",))
    write_raw(swapped / "train.txt", 50, labelled=False)
    with pytest.raises(ValueError, match="train.txt:1: 39 columns and no 0/1 label"):
        run_stages("s", *data_option(swapped), modules=("raw",))
    (swapped / "train.txt").write_text("")
    with pytest.raises(ValueError, match="train.txt: empty file"):
        run_stages("s", *data_option(swapped), modules=("raw",))
    assert not stage_dir("s", "00_raw").exists()


def test_missing_test_file_is_named(tmp_path):
    write_raw(tmp_path / "train.txt", 5, labelled=True)
    with pytest.raises(FileNotFoundError, match="no test file"):
        raw.find_inputs(tmp_path)


def test_bad_row_in_a_later_stage_names_file_and_line_or_is_skipped(artifacts, raw_dir):
    lines = (raw_dir / "train.txt").read_text().splitlines(keepends=True)
    lines[1500] = lines[1500].replace("\t", "\tx", 1)
    (raw_dir / "train.txt").write_text("".join(lines))
    with pytest.raises(parse.BadRowError, match=r"train.txt:1501: field I1: not an integer") \
            as error:
        run_stages("t", *data_option(raw_dir))
    # stage 00 links the plain file: the message names the user's file, not the link
    assert str(error.value).startswith(f"{(raw_dir / 'train.txt').resolve()}:1501:")
    assert not stage_dir("t", "02_count").exists()
    run_stages("t", *data_option(raw_dir), "--set", "raw.on_bad_row=skip")
    spec = field_spec.FieldSpec.load(stage_dir("t", "03_hash"))
    assert spec.extra["skipped_rows"] == 1
    assert spec.rows["train"] + spec.rows["valid"] == 1999
    field_spec.open_field_files(stage_dir("t", "03_hash"), check_ids=True)


def test_real_sample_rows(artifacts, tmp_path, shared_criteo):
    """The real head of train.txt and the Kaggle-CSV head of test.csv (never committed)."""
    data = tmp_path / "real"
    data.mkdir()
    shutil.copy(shared_criteo / "autoint_train_examples.txt", data / "train.txt")
    shutil.copy(shared_criteo / "guestwalk_test.tiny.csv", data / "test.csv")
    run_stages("real", *data_option(data), modules=ALL)
    spec, splits = field_spec.open_field_files(stage_dir("real", "03_hash"), check_ids=True)
    assert spec.rows == {"train": 8571, "valid": 1429, "test": 1999}
    assert 0.2 < spec.label_rate["train"] < 0.24
    # The winners' rare token takes most of the big fields on 10k rows.
    c3 = schema.FIELD_NAMES.index("C3")
    assert np.mean(np.asarray(splits["train"].fields[:, c3]) == spec.offsets[c3] + 1) > 0.5


def test_real_rows_with_trimmed_trailing_fields_are_padded(tmp_path, shared_criteo):
    path = shared_criteo / "paddlerec_ctr_dnn_sample_train.txt"
    report = parse.ParseReport()
    rows = sum(chunk.rows for chunk in parse.iter_chunks(path, True, report=report))
    assert rows == 100 and report.padded_rows == 36
