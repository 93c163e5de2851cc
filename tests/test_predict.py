"""Scoring new raw rows (criteo_pnn): `predict` on a tag's own test.txt equals stage 08's submission
and every source's test predictions (Keras, libFFM on the 69 leaf fields, both GBDT inputs,
calibrated members, a blend); the DataFrame API equals the command; a bundle moved elsewhere
predicts the same and refuses other versions; unseen values, missing fields, wrong column counts
and bad rows follow stage 00's rules."""

import gzip
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import criteo_pnn
from criteo_pnn import cli
from criteo_pnn import rows as rows_lib
from preprocessing import field_spec, parse, schema
from pipeline import errors, paths
from tests.conftest import REPO_ROOT, error_message, raw_line, run_stages, use_artifacts, write_raw

TAG = "p"
MODELS = "[lr, libffm, lgbm_raw, xgb]"
# Calibrated with Platt scaling, so that every member's calibrator does something.
SETTINGS = ["--set", f"models={MODELS}", "--set", "calibrate.method=platt"]
SOURCES = ["05_train/lr", "06_calibrate/lr", "05_train/libffm", "06_calibrate/libffm",
           "05_train/lgbm_raw", "05_train/xgb", "06_calibrate/xgb", "07_ensemble/ens_logit"]
UNUSUAL_ROWS = [  # test rows the generator never writes: stage 08 scores them too
    raw_line(None, [5, None, -1, 2, 3, 100000, None, 0, 7, 1, 2, 3, 4],
             ["Hello"] * 3 + ["ABCDEF12", "", "a\u00e9b"] + [None] * 20),
    "1\t2\t3\n",  # trailing fields trimmed: padded with empty ones
]


def read_frame(path) -> pd.DataFrame:
    """Raw unlabelled TSV rows as the DataFrame a user would build: integers as numbers (NaN
    missing), categorical values as text (None missing)."""
    frame = pd.read_csv(path, sep="\t", header=None, names=list(schema.FIELD_NAMES),
                        dtype={name: str for name in schema.CAT_NAMES}, keep_default_na=False,
                        na_values={name: [""] for name in schema.INT_NAMES})
    frame[list(schema.CAT_NAMES)] = frame[list(schema.CAT_NAMES)].replace("", None)
    return frame


def read_csv_rows(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"Id": np.int64, "Predicted": np.float64})


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A tag built by the stages themselves (00-08, demo presets): lr (Keras, 39 fields),
    libffm (69 fields: the GBDT leaves), lgbm_raw (raw columns), xgb (the winners' GBDT
    inputs), all calibrated, and the default blend with its submission."""
    from ensembles import blend, calibrate
    from models import stage
    from submissions import write

    base = tmp_path_factory.mktemp("predict")
    data = base / "raw"
    data.mkdir()
    write_raw(data / "train.txt", 3000, True, seed=1)
    write_raw(data / "test.txt", 400, False, seed=2)
    with open(data / "test.txt", "a") as handle:
        handle.writelines(UNUSUAL_ROWS)
    options = ["--tag", TAG, "--set", f"raw.data_dir={data}", *SETTINGS]
    with pytest.MonkeyPatch.context() as patch:
        root = use_artifacts(patch, base / "artifacts")
        run_stages(TAG, *options[2:], modules=("raw", "split", "count", "hash_fields", "export",
                                                "leaves"))
        stage.main([*options, "--preset", "demo"])
        calibrate.main(options)
        blend.main(options)
        write.main(options)
    return root


@pytest.fixture
def tag(tree, monkeypatch):
    use_artifacts(monkeypatch, tree)
    return tree / TAG


def submission(tag_dir) -> pd.DataFrame:
    record = json.loads((tag_dir / "08_submit" / "submission.json").read_text())
    return read_csv_rows(tag_dir / "08_submit" / record["path"].rsplit("/", 1)[1])


def test_predict_on_the_test_rows_equals_stage_08_and_every_source(tag, tmp_path):
    test_txt = tag / "00_raw" / "test.txt"
    output = tmp_path / "blend.csv.gz"
    assert cli.main(["predict", "--tag", TAG, "--input", str(test_txt), "--output", str(output),
                     "--no-progress"]) == 0
    submitted = submission(tag)
    ours = read_csv_rows(output)
    assert len(ours) == 402 and (ours["Id"] == submitted["Id"]).all()
    np.testing.assert_allclose(ours["Predicted"], submitted["Predicted"], rtol=1e-5, atol=1e-7)
    # The gzip stream is stage 08's: same text, no name or time in the header.
    written = json.loads((tag / "08_submit" / "submission.json").read_text())["path"]
    assert gzip.decompress(output.read_bytes()) == \
        gzip.decompress((tag / "08_submit" / written.rsplit("/", 1)[1]).read_bytes())
    for source in SOURCES:
        predictor = criteo_pnn.load(tag, source)
        assert predictor.source == source
        expected = np.load(tag / source / "test.pred.npy")
        plain = tmp_path / f"{source.replace('/', '_')}.csv"
        predictor.predict_file(test_txt, plain, progress=False)
        np.testing.assert_allclose(read_csv_rows(plain)["Predicted"],
                                   np.clip(expected, 1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-7,
                                   err_msg=source)
        scores = predictor.score_codes(*_codes(test_txt))
        np.testing.assert_allclose(scores, expected, rtol=2e-6, atol=1e-7, err_msg=source)


def _codes(path):
    chunk = next(parse.iter_chunks(path, False))
    return chunk.codes, chunk.ints


def test_new_rows_get_the_ids_of_stages_03_and_04(tag):
    predictor = criteo_pnn.load(tag, "05_train/libffm")
    inputs = predictor.transform(*_codes(tag / "00_raw" / "test.txt"), {"03_hash", "04_leaves"})
    np.testing.assert_array_equal(inputs["03_hash"], np.load(tag / "03_hash/test.fields.npy"))
    np.testing.assert_array_equal(inputs["04_leaves"], np.load(tag / "04_leaves/test.fields.npy"))
    np.testing.assert_array_equal(inputs["winners"], np.load(tag / "04_export/test.gbdt.npy"))


def test_md5_hashing_and_binned_counts_score_as_stage_05(tmp_path, monkeypatch):
    """The winners' md5 keys and stage 02's bins (count.max_bins) reach new rows too."""
    from models import stage

    data = tmp_path / "raw"
    data.mkdir()
    write_raw(data / "train.txt", 1500, True, seed=5)
    write_raw(data / "test.txt", 200, False, seed=6)
    root = use_artifacts(monkeypatch, tmp_path / "artifacts")
    options = ["--set", f"raw.data_dir={data}", "--set", "hash.mode=md5", "--set",
               "count.max_bins=64", "--set", "models=[lgbm_raw]"]
    run_stages("m", *options)
    stage.main(["--tag", "m", *options, "--preset", "demo"])
    predictor = criteo_pnn.load(root / "m", "05_train/lgbm_raw")
    assert predictor.transform.max_bins == 64
    codes, ints = _codes(root / "m" / "00_raw" / "test.txt")
    np.testing.assert_array_equal(predictor.transform(codes.copy(), ints, set())["03_hash"],
                                  np.load(root / "m" / "03_hash" / "test.fields.npy"))
    np.testing.assert_array_equal(predictor.score_codes(codes, ints),
                                  np.load(root / "m" / "05_train" / "lgbm_raw" / "test.pred.npy"))
    (root / "m" / "05_train" / "lgbm_raw" / "code_of_id.npy").unlink()  # a GBDT published before
    with pytest.raises(errors.InputNotFound,
                       match="no code_of_id.npy .* --only 05 --model lgbm_raw --force"):
        criteo_pnn.load(root / "m", "05_train/lgbm_raw")


def test_names_resolve_like_stage_08_sources(tag):
    from criteo_pnn.artifacts import resolve_source

    assert resolve_source(tag) == "07_ensemble/ens_logit"  # the submission's
    assert resolve_source(tag, "ens_logit") == "07_ensemble/ens_logit"
    assert resolve_source(tag, "xgb") == "06_calibrate/xgb"  # calibrated when built
    assert resolve_source(tag, "05_train/xgb") == "05_train/xgb"
    with pytest.raises(errors.InputNotFound, match="no blend or model named 'nope'"):
        resolve_source(tag, "nope")
    with pytest.raises(errors.InputError, match="expected STAGE/ID"):
        resolve_source(tag, "08_submit/x")


def test_dataframe_api_equals_the_command(tag, tmp_path):
    test_txt = tag / "00_raw" / "test.txt"
    predictor = criteo_pnn.load(tag)
    frame = read_frame(test_txt)
    frame.index = [f"row{row}" for row in range(len(frame))]
    probabilities = predictor.predict(frame)
    output = tmp_path / "out.csv"
    predictor.predict_file(test_txt, output, progress=False)
    np.testing.assert_allclose(probabilities, np.load(tag / "07_ensemble/ens_logit/test.pred.npy"),
                               rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.clip(probabilities, 1e-6, 1 - 1e-6),
                               read_csv_rows(output)["Predicted"], rtol=1e-5, atol=1e-7)
    # Extra columns are ignored, column order does not matter, integers may be nullable ints.
    shuffled = frame[list(reversed(frame.columns))].assign(Id=7, Label=1)
    shuffled[list(schema.INT_NAMES)] = shuffled[list(schema.INT_NAMES)].astype("Int64")
    np.testing.assert_array_equal(predictor.predict(shuffled), probabilities)
    assert predictor.predict(frame.iloc[:0]).shape == (0,)


def test_small_blocks_stream_the_same_rows(tag, tmp_path, monkeypatch):
    """Many parser blocks (bounded memory) give the same file as one block."""
    predictor = criteo_pnn.load(tag, "05_train/xgb")
    test_txt = tag / "00_raw" / "test.txt"
    predictor.predict_file(test_txt, tmp_path / "one.csv", progress=False)
    original = parse.iter_chunks

    def small_blocks(*args, **kwargs):
        return original(*args, **{**kwargs, "block_bytes": 4096})

    monkeypatch.setattr(parse, "iter_chunks", small_blocks)
    summary = predictor.predict_file(test_txt, tmp_path / "many.csv", progress=False)
    assert (tmp_path / "many.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert summary["rows"] == 402 and summary["rows_per_second"] > 0


def test_a_moved_bundle_predicts_the_same_without_the_tree(tag, tmp_path, monkeypatch):
    test_txt = tmp_path / "test.txt"
    shutil.copyfile(tag / "00_raw" / "test.txt", test_txt)
    assert cli.main(["export", "--tag", TAG, "--out", str(tmp_path / "made")]) == 0
    moved = shutil.move(tmp_path / "made", tmp_path / "elsewhere" / "bundle")
    manifest = json.loads((moved / "manifest.json").read_text())
    assert str(tag) not in json.dumps(manifest) and str(tmp_path) not in json.dumps(manifest)
    assert manifest["source"] == "07_ensemble/ens_logit" and manifest["bundle_version"] == 1
    assert manifest["versions"]["xgboost"] and manifest["field_spec"]["num_fields"] == 39
    assert {member["id"] for member in manifest["members"]} == {"lr", "libffm", "lgbm_raw", "xgb"}
    use_artifacts(monkeypatch, tmp_path / "no-artifacts")
    assert cli.main(["predict", "--bundle", str(moved), "--input", str(test_txt), "--output",
                     str(tmp_path / "bundle.csv"), "--no-progress"]) == 0
    ours = read_csv_rows(tmp_path / "bundle.csv")
    np.testing.assert_allclose(ours["Predicted"], submission(tag)["Predicted"], rtol=1e-5,
                               atol=1e-7)
    frame = read_frame(test_txt)
    np.testing.assert_array_equal(criteo_pnn.load(moved).predict(frame),
                                  criteo_pnn.load(tag).predict(frame))
    with pytest.raises(errors.InputError, match="a bundle of 07_ensemble/ens_logit, not 'lr'"):
        criteo_pnn.load(moved, "lr")
    with pytest.raises(errors.InputError, match="exists; choose a new folder or pass --force"):
        criteo_pnn.export(tag, moved)


@pytest.mark.parametrize("key, value, message", [
    ("bundle_version", 99, r"bundle version 99, this code reads version 1; export it again"),
    ("versions.xgboost", "1.7.6", r"exported with xgboost 1\.7\.6, this environment has xgboost "
                                  r"\d+\.\d+\.\d+; .* install xgboost==1\.7\.6"),
    ("versions.keras", "2.15.0", r"exported with keras 2\.15\.0"),
    ("format", "other", "not a criteo-pnn bundle"),
])
def test_a_bundle_of_other_versions_is_refused(tag, tmp_path, key, value, message):
    out = criteo_pnn.export(tag, tmp_path / "b", "06_calibrate/xgb" if "keras" not in key
                            else "lr")
    manifest = json.loads((out / "manifest.json").read_text())
    node = manifest
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(errors.InputError, match=message):
        criteo_pnn.load(out)
    assert criteo_pnn.load(out, check_versions=False).source  # the check is what refused it


def test_unseen_and_rare_values_get_the_reserved_ids(tag):
    predictor = criteo_pnn.load(tag, "06_calibrate/libffm")
    spec = predictor.transform.spec
    with np.load(tag / "02_count" / "counts.npz") as counts, \
            np.load(tag / "03_hash" / "vocabulary.npz") as vocabulary:
        rare = np.setdiff1d(counts["codes_C3"], vocabulary["codes_C3"])
        frequent = vocabulary["codes_C3"][0]
    assert len(rare), "the fixture's C3 has values below the count threshold"
    cats = [None] * schema.NUM_CAT_FIELDS
    rows = []
    for value in (f"{rare[0]:08x}", "0badf00d", "never seen", f"{frequent:08x}"):
        cats[2] = value
        rows.append(dict(zip(schema.FIELD_NAMES, [None] * 13 + cats)))
    frame = pd.DataFrame(rows)
    with rows_lib.open_frame(frame) as source:
        [block] = list(rows_lib.iter_blocks(source))
    inputs = predictor.transform(block.codes, block.ints, {"03_hash", "04_leaves"})
    c3 = spec.fields[schema.FIELD_NAMES.index("C3")]
    local = inputs["03_hash"][:, schema.FIELD_NAMES.index("C3")] - c3.offset
    assert local.tolist()[:3] == [field_spec.RARE_ID, field_spec.OOV_ID, field_spec.OOV_ID]
    assert local[3] == vocabulary_id(tag, "C3", frequent)
    assert inputs["04_leaves"].shape == (4, 69)
    probabilities = predictor.predict(frame)
    assert np.isfinite(probabilities).all()
    assert probabilities[1] == probabilities[2]  # two unseen values: the same OOV id


def vocabulary_id(tag, name, code) -> int:
    with np.load(tag / "03_hash" / "vocabulary.npz") as vocabulary:
        return int(vocabulary[f"ids_{name}"][np.searchsorted(vocabulary[f"codes_{name}"], code)])


def test_missing_fields_are_missing_values(tag, tmp_path):
    predictor = criteo_pnn.load(tag, "05_train/lgbm_raw")
    empty = pd.DataFrame([dict.fromkeys(schema.FIELD_NAMES)])
    nan_ints = empty.assign(**{name: np.nan for name in schema.INT_NAMES})
    trimmed = tmp_path / "trimmed.txt"
    trimmed.write_text("\t" * 38 + "\n" + "\t\n")  # 39 empty fields; 2 (trimmed, padded)
    summary = predictor.predict_file(trimmed, tmp_path / "out.csv", progress=False)
    assert summary["padded_rows"] == 1
    from_file = read_csv_rows(tmp_path / "out.csv")["Predicted"].to_numpy()
    assert from_file[0] == from_file[1] == pytest.approx(predictor.predict(empty)[0], rel=1e-5)
    assert predictor.predict(nan_ints)[0] == predictor.predict(empty)[0]
    with pytest.raises(errors.InputError, match=r"DataFrame: no column C25, C26; predict needs "
                                                r"I1..I13 and C1..C26"):
        predictor.predict(empty.drop(columns=["C25", "C26"]))


def _lines(tag, count):
    return (tag / "00_raw" / "test.txt").read_text().splitlines(keepends=True)[:count]


def test_a_wrong_column_count_names_file_and_line_or_is_skipped_in_place(tag, tmp_path):
    predictor = criteo_pnn.load(tag, "05_train/xgb")
    good = _lines(tag, 6)
    bad = tmp_path / "bad.txt"
    bad.write_text("".join(good[:3]) + good[3].rstrip("\n") + "\textra\n" + "".join(good[4:]))
    with pytest.raises(parse.BadRowError, match=rf"{bad}:4: more than 39 tab-separated fields"):
        predictor.predict_file(bad, tmp_path / "out.csv", progress=False)
    assert not (tmp_path / "out.csv").exists() and list(tmp_path.iterdir()) == [bad]
    summary = predictor.predict_file(bad, tmp_path / "out.csv", on_bad_row="skip",
                                     max_bad_fraction=0.5, progress=False)
    assert summary["bad_rows"] == 1 and "bad.txt:4" in summary["first_bad"]
    ours = read_csv_rows(tmp_path / "out.csv")
    assert ours["Id"].tolist() == list(range(60000000, 60000006))
    assert ours["Predicted"][3] == pytest.approx(predictor.base_rate, rel=1e-5)
    clean = tmp_path / "clean.txt"
    clean.write_text("".join(good))
    predictor.predict_file(clean, tmp_path / "clean.csv", progress=False)
    expected = read_csv_rows(tmp_path / "clean.csv")["Predicted"]
    assert ours["Predicted"].drop(3).tolist() == expected.drop(3).tolist()
    with pytest.raises(parse.BadRowError, match="are bad and were kept with all fields missing, "
                                                "more than raw.max_skipped_fraction=0.01"):
        predictor.predict_file(bad, tmp_path / "out2.csv", on_bad_row="skip", progress=False)
    wide = tmp_path / "wide.txt"
    wide.write_text("\t".join(["1"] * 41) + "\n")
    with pytest.raises(errors.InputError, match=rf"{wide}:1: 41 tab-separated columns, expected "
                                                r"39 \(I1..I13, C1..C26\) or 40"):
        predictor.predict_file(wide, None, progress=False)


def test_labelled_rows_keep_their_lines_when_bad_ones_are_skipped(tag, tmp_path, monkeypatch):
    """A labelled file (40 columns) is scored too: Ids 10000000 + line; skipped bad rows, even a
    whole parser block of them, keep their place with the training click rate."""
    predictor = criteo_pnn.load(tag, "05_train/lgbm_raw")
    good = ["0\t" + line for line in _lines(tag, 40)]
    bad_line = "2\t" + good[0][2:]  # label 2
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("".join(good[:10] + [bad_line] * 30 + good[10:]))
    original = parse.iter_chunks
    monkeypatch.setattr(parse, "iter_chunks",
                        lambda *args, **kwargs: original(*args, **{**kwargs, "block_bytes": 2048}))
    with pytest.raises(parse.BadRowError, match=rf"{labelled}:11: field Label: label is not 0"):
        predictor.predict_file(labelled, None, progress=False)
    summary = predictor.predict_file(labelled, tmp_path / "out.csv", on_bad_row="skip",
                                     max_bad_fraction=1.0, progress=False)
    ours = read_csv_rows(tmp_path / "out.csv")
    assert summary["rows"] == 70 and summary["bad_rows"] == 30
    assert ours["Id"].tolist() == list(range(10000000, 10000070))
    np.testing.assert_allclose(ours["Predicted"][10:40], predictor.base_rate, rtol=1e-5)
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("".join(line[2:] for line in good))
    predictor.predict_file(unlabelled, tmp_path / "plain.csv", progress=False)
    plain = read_csv_rows(tmp_path / "plain.csv")["Predicted"].tolist()
    assert ours["Predicted"][:10].tolist() + ours["Predicted"][40:].tolist() == plain


def test_kaggle_csv_input_keeps_its_ids_and_names_its_lines(tag, tmp_path):
    predictor = criteo_pnn.load(tag, "05_train/xgb")
    lines = _lines(tag, 5)
    header = ",".join(schema.CSV_TEST_HEADER)
    rows = [f"{60000000 + number}," + line.rstrip("\n").replace("\t", ",")
            for number, line in enumerate(lines)]
    csv_path = tmp_path / "test.csv"
    csv_path.write_text(header + "\n" + "\n".join(rows) + "\n")
    tsv_path = tmp_path / "test.txt"
    tsv_path.write_text("".join(lines))
    predictor.predict_file(csv_path, tmp_path / "from_csv.csv", progress=False)
    predictor.predict_file(tsv_path, tmp_path / "from_tsv.csv", progress=False)
    assert (tmp_path / "from_csv.csv").read_bytes() == (tmp_path / "from_tsv.csv").read_bytes()
    rows[2] = rows[2].replace(",", ",x", 2).replace(",x", ",", 1)  # I2 = "x..."
    csv_path.write_text(header + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(parse.BadRowError, match=rf"{csv_path}:4: field I2: not an integer"):
        predictor.predict_file(csv_path, None, progress=False)
    csv_path.write_text(header + "\n" + rows[0] + ",1\n")
    with pytest.raises(errors.InputError, match=rf"{csv_path}:2: 41 comma-separated columns"):
        predictor.predict_file(csv_path, None, progress=False)


def test_bad_dataframe_values_name_the_row(tag):
    predictor = criteo_pnn.load(tag, "05_train/xgb")
    frame = read_frame(tag / "00_raw" / "test.txt").iloc[:4].astype({"I2": object})
    frame.index = ["a", "b", "c", "d"]
    frame.loc["c", "I2"] = "12x"
    with pytest.raises(parse.BadRowError,
                       match=r"DataFrame row 2 \(index 'c'\): field I2: not an integer"):
        predictor.predict(frame)
    skipped = predictor.predict(frame, on_bad_row="skip", max_bad_fraction=0.5)
    assert skipped[2] == pytest.approx(predictor.base_rate, rel=1e-6)
    frame.loc["c", "I2"] = 2.5
    with pytest.raises(parse.BadRowError, match=r"DataFrame row 2 \(index 'c'\): field I2"):
        predictor.predict(frame)
    frame.loc["c", "I2"] = None
    frame.loc["d", "C1"] = "tab\there"
    with pytest.raises(errors.InputError, match=r"DataFrame row 3 \(index 'd'\), column C1: a "
                                                r"tab or line break inside a value"):
        predictor.predict(frame)


def test_command_errors_are_one_line(tag, tmp_path, capsys):
    """A known failure is one `error:` line and exit status 2: ./run.sh predict as a user runs
    it, then the same handler in this process."""
    wide = tmp_path / "wide.txt"
    wide.write_text("\t".join(["1"] * 42) + "\n")
    options = ["--tag", TAG, "--model", "05_train/xgb", "--no-progress"]
    result = subprocess.run([str(REPO_ROOT / "run.sh"), "predict", "--artifacts", str(tag.parent),
                             *options, "--input", str(wide)],
                            capture_output=True, text=True, timeout=300)
    assert f"{wide}:1: 42 tab-separated columns" in error_message(result)
    test_txt = str(tag / "00_raw" / "test.txt")
    for arguments, message in [
            (["--input", str(tmp_path / "absent.txt")], "absent.txt: no such file; check the path"),
            (["--input", test_txt, "--set", "hash.mode=md5"],
             "predict takes raw.on_bad_row and raw.max_skipped_fraction only"),
            (["--input", test_txt, "--set", "raw.on_bad_row=drop"], "raw.on_bad_row"),
            (["--input", test_txt, "--tag", "absent"], "absent: no such artifact tree"),
            (["--input", test_txt, "--bundle", str(tmp_path)], "--bundle and --tag: give one")]:
        capsys.readouterr()
        assert cli.main(["predict", *options, *arguments]) == errors.EXIT_STATUS, arguments
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_stale_members_are_refused(tree, tmp_path, monkeypatch):
    """A model trained on an older 03_hash would get other ids: refused, with the fix."""
    copy = tmp_path / "artifacts"
    shutil.copytree(tree / TAG, copy / TAG, symlinks=True)
    use_artifacts(monkeypatch, copy)
    manifest_path = copy / TAG / "03_hash" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fingerprint"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(errors.InputError, match=r"05_train/xgb: built on an older 03_hash .* "
                                                r"rebuild it first \(./run.sh --tag p\)"):
        criteo_pnn.load(copy / TAG, "05_train/xgb")


def test_what_cannot_be_scored_is_refused_with_the_reason(tree, tmp_path, monkeypatch):
    copy = tmp_path / "artifacts"
    shutil.copytree(tree / TAG, copy / TAG, symlinks=True)
    use_artifacts(monkeypatch, copy)
    spec_path = copy / TAG / "04_leaves" / "field_spec.json"
    spec = json.loads(spec_path.read_text())
    spec["extra"]["leaves"]["mode"] = "out_of_fold"
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(errors.InputError, match="leaves.mode out_of_fold: a new row has no fold"):
        criteo_pnn.load(copy / TAG, "05_train/libffm")
    (copy / TAG / "05_train" / "libffm" / "model.npy").rename(
        copy / TAG / "05_train" / "libffm" / "model.txt")
    with pytest.raises(errors.InputError, match="binary engine .* is not supported"):
        criteo_pnn.load(copy / TAG, "05_train/libffm")


def test_predict_output_to_stdout(tag, tmp_path, capsysbinary):
    lines = _lines(tag, 3)
    path = tmp_path / "three.txt.gz"
    path.write_bytes(gzip.compress("".join(lines).encode()))
    assert cli.main(["predict", "--tag", TAG, "--model", "05_train/xgb", "--input", str(path),
                     "--no-progress"]) == 0
    captured = capsysbinary.readouterr()
    text = captured.out.decode().splitlines()
    assert text[0] == "Id,Predicted" and [line.split(",")[0] for line in text[1:]] == \
        ["60000000", "60000001", "60000002"]
    assert b"3 rows of" in captured.err and b"rows/s" in captured.err
    assert paths.artifacts_root() == tag.parent
