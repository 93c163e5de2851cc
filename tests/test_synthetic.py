"""The synthetic Criteo generator: exact raw format, determinism, realism and the planted model."""

import json
import re
import subprocess
import sys

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import pytest
import scipy.sparse
from scipy.sparse.linalg import lsqr
from scipy.special import gammainc
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from preprocessing import schema, synthetic
from preprocessing.synthetic import bayes, distributions, kernels, laws, planted
from preprocessing.synthetic.__main__ import main
from pipeline import code
from pipeline.paths import REPO_ROOT

TRAIN_ROWS, TEST_ROWS, SEED = 30_000, 4_000, 2014
FIT_ROWS = 24_000  # models below fit on these train rows and are scored on the rest
FILES = ("train.txt", "test.txt", "train.truth.npy", "test.truth.npy", "truth.json")
INTEGER = r"(0|-?[1-9][0-9]*)?"
HEX = r"([0-9a-f]{8})?"
TRAIN_LINE = re.compile(rf"[01](\t{INTEGER}){{13}}(\t{HEX}){{26}}\n")
TEST_LINE = re.compile(rf"{INTEGER}(\t{INTEGER}){{12}}(\t{HEX}){{26}}\n")
# Crosses of fields that share no planted pair or triple.
CONTROL_PAIRS = (("C9", "C22"), ("C14", "C22"), ("C17", "C20"), ("C9", "C6"), ("C1", "C23"),
                 ("C2", "C25"))
# Per field at full scale (45,840,617 rows): raw distinct values (the quoted Kaggle counts less
# the empty value) and values seen >= 10 times (the winners' vocabulary sizes less the "less" and
# empty tokens; research notes §1.4).
FULL_SCALE_VOCABULARIES = {"C1": (1460, 1456), "C3": (10131226, 176371), "C4": (2202607, 129681),
                           "C9": (3, 3), "C10": (93145, 41737), "C12": (8351592, 175444),
                           "C16": (5461305, 165600), "C20": (3, 3), "C21": (7046546, 172759),
                           "C24": (286180, 57901), "C26": (142571, 44547)}


def read_table(path, labelled: bool) -> pa.Table:
    """All columns as strings ("" = missing); raises if a line has the wrong column count."""
    names = ([schema.LABEL_NAME] if labelled else []) + list(schema.FIELD_NAMES)
    return pa_csv.read_csv(
        path, read_options=pa_csv.ReadOptions(column_names=names),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pa_csv.ConvertOptions(column_types={name: pa.string() for name in names}))


def missing_rates(table: pa.Table) -> dict:
    return {name: float(np.mean(table[name].to_numpy(zero_copy_only=False) == ""))
            for name in schema.FIELD_NAMES}


def present_ints(table: pa.Table, name: str) -> np.ndarray:
    values = table[name].to_numpy(zero_copy_only=False)
    return values[values != ""].astype(np.int64)


def top_share(table: pa.Table, name: str) -> float:
    values = table[name].to_numpy(zero_copy_only=False)
    _, counts = np.unique(values[values != ""], return_counts=True)
    return counts.max() / counts.sum()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = synthetic.generate(out, TRAIN_ROWS, TEST_ROWS, seed=SEED, chunk_rows=7_000)
    return out, summary


@pytest.fixture(scope="module")
def train_table(generated) -> pa.Table:
    return read_table(generated[0] / "train.txt", labelled=True)


@pytest.fixture(scope="module")
def train_codes(train_table):
    """Per field: integer codes (0 = seen < 10 times in the fit rows) and the code count."""
    return {name: frequent_codes(pa_compute.dictionary_encode(train_table[name])
                                 .combine_chunks().indices.to_numpy())
            for name in schema.FIELD_NAMES}


def frequent_codes(values: np.ndarray, min_count: int = 10):
    codes = np.unique(values, return_inverse=True)[1]
    kept = np.bincount(codes[:FIT_ROWS], minlength=codes.max() + 1) >= min_count
    return np.where(kept, np.cumsum(kept), 0)[codes], int(kept.sum()) + 1


def one_hot(columns) -> scipy.sparse.csr_matrix:
    """Sparse one-hot [rows, sum of code counts] of (codes, count) columns."""
    offsets = np.cumsum([0] + [count for _, count in columns])
    index = np.stack([codes + offset for (codes, _), offset in zip(columns, offsets)], axis=1)
    rows, width = index.shape
    return scipy.sparse.csr_matrix((np.ones(index.size), index.ravel(),
                                    np.arange(0, index.size + 1, width)), shape=(rows, offsets[-1]))


def logit(probabilities: np.ndarray) -> np.ndarray:
    probabilities = probabilities.astype(np.float64)
    return np.log(probabilities / (1 - probabilities))


# ---------------------------------------------------------------- format

def test_lines_have_the_raw_criteo_format(generated):
    out, _ = generated
    for name, pattern, rows in (("train.txt", TRAIN_LINE, TRAIN_ROWS),
                                ("test.txt", TEST_LINE, TEST_ROWS)):
        with open(out / name, newline="") as handle:
            lines = handle.readlines()
        assert len(lines) == rows
        bad = [number for number, line in enumerate(lines, 1) if not pattern.fullmatch(line)]
        assert bad == [], f"{name}: lines {bad[:5]} are not raw Criteo rows"


def test_format_rows_writes_exact_text():
    ints = np.array([[-2, 0, 1, 9, 10, 99_999_999, 12345, 7, 0, 3, 1, 2, 5],
                     [5, -1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    int_missing = np.zeros_like(ints, dtype=bool)
    int_missing[0, [2, 12]] = True
    int_missing[1, 0] = True
    tokens = np.array([[0x0000000F, 0xDEADBEEF] * 13, [0xFFFFFFFF, 0x00A0B0C0] * 13], np.uint32)
    cat_missing = np.zeros_like(tokens, dtype=bool)
    cat_missing[0, 25] = cat_missing[1, [0, 1]] = True

    def expected(row, label):
        values = ["" if int_missing[row, j] else str(ints[row, j]) for j in range(13)]
        values += ["" if cat_missing[row, j] else f"{tokens[row, j]:08x}" for j in range(26)]
        return "\t".join(([str(label)] if label is not None else []) + values) + "\n"

    labelled = synthetic.format_rows(np.array([1, 0], np.uint8), ints, int_missing, tokens,
                                     cat_missing)
    assert labelled.decode() == expected(0, 1) + expected(1, 0)
    unlabelled = synthetic.format_rows(None, ints, int_missing, tokens, cat_missing)
    assert unlabelled.decode() == expected(0, None) + expected(1, None)
    with pytest.raises(ValueError, match="8 digits"):
        synthetic.format_rows(None, ints * 10, int_missing, tokens, cat_missing)


# ---------------------------------------------------------------- determinism and files

def test_same_seed_and_sizes_give_identical_files_for_any_chunking_and_threads(tmp_path):
    synthetic.generate(tmp_path / "a", 3_000, 500, seed=7, chunk_rows=1_000)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        synthetic.generate(tmp_path / "b", 3_000, 500, seed=7, chunk_rows=4_096)
    finally:
        numba.set_num_threads(threads)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_different_seeds_give_different_data(tmp_path):
    first = synthetic.generate(tmp_path / "a", 2_000, 300, seed=1)
    second = synthetic.generate(tmp_path / "b", 2_000, 300, seed=2)
    lines = [(tmp_path / folder / "train.txt").read_text().splitlines() for folder in "ab"]
    assert sum(a != b for a, b in zip(*lines)) > 0.99 * 2_000
    assert first["planted"]["pairs"] != second["planted"]["pairs"]


def test_a_failed_run_leaves_no_files(tmp_path, monkeypatch):
    calls = []

    def failing_format(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return original(*args)

    original = kernels.format_blocks
    monkeypatch.setattr(kernels, "format_blocks", failing_format)
    with pytest.raises(RuntimeError, match="killed"):
        synthetic.generate(tmp_path, 3_000, 500, chunk_rows=1_000)
    assert list(tmp_path.iterdir()) == []


def test_sizes_are_checked_and_the_smallest_work(tmp_path):
    with pytest.raises(ValueError, match="train_rows >= 7"):
        synthetic.generate(tmp_path, 6, 10)
    with pytest.raises(ValueError, match="test_rows >= 1"):
        synthetic.generate(tmp_path, 100, 0)
    summary = synthetic.generate(tmp_path, 7, 1)
    assert summary["bayes"]["valid"]["rows"] == 1
    assert len((tmp_path / "train.txt").read_text().splitlines()) == 7


def test_command_line_writes_files_and_prints_scores(tmp_path, capsys):
    main(["--out", str(tmp_path), "--train-rows", "700", "--test-rows", "100", "--seed", "3"])
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(FILES)
    printed = capsys.readouterr().out
    assert "Bayes logloss" in printed and "click rate" in printed
    assert json.loads((tmp_path / "truth.json").read_text())["rows"] == {"train": 700, "test": 100}


def test_the_package_runs_with_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "preprocessing.synthetic", "--help"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "--train-rows" in result.stdout and "planted model" in result.stdout


def test_stage_00_code_covers_every_module_the_generator_runs():
    """Stage 00 (preprocessing.raw) imports the package; its code fingerprint must see every
    module that shapes the data (the command line alone is not run by the stage, nor are the
    experiments' field files)."""
    package = REPO_ROOT / "preprocessing" / "synthetic"
    modules = {f"preprocessing.synthetic.{path.stem}" for path in package.glob("*.py")
               if path.stem not in ("__init__", "__main__", "field_files")}
    assert modules and modules <= set(code.import_closure("preprocessing.raw"))


def test_the_kernels_refuse_a_planted_model_of_another_latent_dimension(monkeypatch):
    monkeypatch.setattr(planted, "LATENT_DIM", kernels.LATENT_DIM + 1)
    with pytest.raises(ValueError, match="LATENT_DIM"):
        kernels.kernel_inputs(SEED, "train")


def test_auc_uses_strided_rows_above_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(bayes, "AUC_MAX_ROWS", 500)
    summary = synthetic.generate(tmp_path, 3_000, 100, chunk_rows=700)
    assert summary["bayes"]["train"]["auc_rows"] == 500
    assert summary["bayes"]["valid"]["auc_rows"] == 429  # all of round(3000 / 7)
    labels = read_table(tmp_path / "train.txt", True)[schema.LABEL_NAME].to_numpy().astype(int)
    truth = np.load(tmp_path / "train.truth.npy")
    assert summary["bayes"]["train"]["bayes_auc"] == pytest.approx(
        roc_auc_score(labels[::6], truth[::6]))
    assert summary["bayes"]["valid"]["bayes_auc"] == pytest.approx(
        roc_auc_score(labels[-429:], truth[-429:]))


# ---------------------------------------------------------------- labels and truth

def test_click_rate_truth_and_labels_agree(generated, train_table):
    out, summary = generated
    labels = train_table[schema.LABEL_NAME].to_numpy().astype(int)
    truth = np.load(out / "train.truth.npy")
    assert truth.dtype == np.float32 and truth.shape == (TRAIN_ROWS,)
    assert 0 < truth.min() and truth.max() < 1
    train, valid = summary["bayes"]["train"], summary["bayes"]["valid"]
    assert train["click_rate"] == pytest.approx(labels.mean())
    assert train["click_rate"] == pytest.approx(laws.TARGET_CLICK_RATE, abs=0.012)
    assert truth.mean() == pytest.approx(labels.mean(), abs=0.01)
    assert train["bayes_logloss"] == pytest.approx(log_loss(labels, truth.astype(np.float64)))
    assert train["bayes_auc"] == pytest.approx(roc_auc_score(labels, truth))
    valid_rows = round(TRAIN_ROWS / 7)
    assert valid["rows"] == valid_rows
    assert valid["bayes_logloss"] == pytest.approx(
        log_loss(labels[-valid_rows:], truth[-valid_rows:].astype(np.float64)))
    constant = log_loss(labels, np.full(TRAIN_ROWS, labels.mean()))
    assert train["bayes_logloss"] < constant - 0.1
    assert 0.75 < train["bayes_auc"] < 0.95
    test_truth = np.load(out / "test.truth.npy")
    assert test_truth.shape == (TEST_ROWS,)
    assert summary["bayes"]["test"]["mean_truth"] == pytest.approx(test_truth.mean(), abs=1e-6)


def test_base_rate_drifts_over_the_days(generated):
    truth = np.load(generated[0] / "train.truth.npy")
    daily = [day.mean() for day in np.array_split(truth, planted.TRAIN_DAYS)]
    assert max(daily) - min(daily) > 0.01


def test_planted_pairs_are_in_the_truth(generated, train_codes):
    """A ridge fit of the true logit on one-hot fields (+ the day) leaves much less held-out
    error once the planted pairs are crossed, and none less with crosses of unrelated fields."""
    target = logit(np.load(generated[0] / "train.truth.npy"))
    days = (np.arange(TRAIN_ROWS) * planted.TRAIN_DAYS // TRAIN_ROWS, planted.TRAIN_DAYS)

    def held_out_error(pairs):
        crosses = [frequent_codes(train_codes[a][0] * train_codes[b][1] + train_codes[b][0])
                   for a, b in pairs]
        design = one_hot(list(train_codes.values()) + [days] + crosses)
        weights = lsqr(design[:FIT_ROWS], target[:FIT_ROWS], damp=3.0, atol=1e-5, btol=1e-5)[0]
        return np.mean((design[FIT_ROWS:] @ weights - target[FIT_ROWS:]) ** 2)

    assert not set(CONTROL_PAIRS) & set(planted.PLANTED_PAIRS)
    with threadpool_limits(1):  # lsqr's vector norms are too small for BLAS threads to pay off
        first_order = held_out_error([])
        assert held_out_error(planted.PLANTED_PAIRS) < 0.8 * first_order
        assert held_out_error(CONTROL_PAIRS) > 0.97 * first_order


def test_first_order_logistic_regression_is_measurably_worse_than_the_truth(generated, train_table,
                                                                             train_codes):
    labels = train_table[schema.LABEL_NAME].to_numpy().astype(int)
    truth = np.load(generated[0] / "train.truth.npy").astype(np.float64)
    design = one_hot(list(train_codes.values()))
    model = LogisticRegression(C=0.1, max_iter=300).fit(design[:FIT_ROWS], labels[:FIT_ROWS])
    held_out = labels[FIT_ROWS:]
    first_order = log_loss(held_out, model.predict_proba(design[FIT_ROWS:])[:, 1])
    bayes = log_loss(held_out, truth[FIT_ROWS:])
    constant = log_loss(held_out, np.full(len(held_out), labels[:FIT_ROWS].mean()))
    assert bayes + 0.03 < first_order < constant - 0.02


# ---------------------------------------------------------------- realism

def test_missing_rates_follow_the_measured_groups(train_table):
    rates = missing_rates(train_table)
    expected = {name: 0.0 for name in schema.FIELD_NAMES}
    for group in laws.MISSING_GROUPS.values():
        expected.update(group)
    for name in laws.BLANK_ROW_FIELDS:
        expected[name] += expected["I8"] * (1 - expected[name])  # blank rows add to them
    for name in schema.FIELD_NAMES:
        assert rates[name] == pytest.approx(expected[name], abs=0.01), name
    values = {name: train_table[name].to_numpy(zero_copy_only=False) for name in ("I1", "I5")}
    assert np.all(values["I1"][values["I5"] == ""] == "")  # nested: missing I5 => missing I1


def test_integer_fields_have_zeros_negatives_and_heavy_tails(train_table):
    i1, i2, i5 = (present_ints(train_table, name) for name in ("I1", "I2", "I5"))
    assert np.mean(i1 == 0) == pytest.approx(0.4753, abs=0.02)
    assert np.mean(i2 < 0) == pytest.approx(0.0975, abs=0.01)
    assert i2.min() >= -2
    assert np.quantile(i5, 0.99) > 50 * np.median(i5)
    for name in schema.INT_NAMES:
        assert present_ints(train_table, name).max() <= distributions.int_max_value(name), name


def test_categorical_values_follow_the_fitted_laws(train_table):
    for name in ("C1", "C5", "C9", "C10", "C14", "C20", "C23"):
        top = distributions.rank_probabilities(name, np.array([0]))[0]
        assert top_share(train_table, name) == pytest.approx(top, abs=0.02), name
    for name in ("C3", "C7", "C10", "C24"):
        values = train_table[name].to_numpy(zero_copy_only=False)
        present = int(np.sum(values != ""))
        distinct = len(np.unique(values[values != ""]))
        assert distinct == pytest.approx(expected_vocabulary(name, present)[0], rel=0.15), name
    for name in ("C9", "C20"):
        assert len(set(train_table[name].to_pylist()) - {""}) <= 3


def expected_vocabulary(field: str, rows: int, min_count: int = 10) -> tuple[float, float]:
    """Expected (distinct values, values seen >= min_count times) among `rows` draws of a field's
    value law: exact over the first 65,536 ranks, then over log-spaced rank bins."""
    support = laws.CAT_VALUE_LAWS[field][4]
    head = np.arange(min(support, 1 << 16))
    rates = rows * distributions.rank_probabilities(field, head)
    distinct, frequent = np.sum(-np.expm1(-rates)), np.sum(gammainc(min_count, rates))
    if support > len(head):
        edges = np.unique(np.geomspace(len(head), support, 4001).astype(np.int64))
        widths = np.diff(edges)
        rates = rows * distributions.rank_probabilities(field, edges[:-1] + (widths - 1) / 2)
        distinct += np.sum(widths * -np.expm1(-rates))
        frequent += np.sum(widths * gammainc(min_count, rates))
    return float(distinct), float(frequent)


@pytest.mark.parametrize("field", sorted(FULL_SCALE_VOCABULARIES))
def test_value_laws_give_the_real_vocabularies_at_full_scale(field):
    distinct, frequent = expected_vocabulary(field, schema.FULL_TRAIN_ROWS)
    real_distinct, real_frequent = FULL_SCALE_VOCABULARIES[field]
    assert distinct == pytest.approx(real_distinct, rel=0.1)
    assert frequent == pytest.approx(real_frequent, rel=0.1)


def test_matches_the_real_sample(shared_criteo, train_table):
    """Rows 0-9,999 of the Kaggle train.txt: missing rates, integer medians and top-value shares."""
    real = read_table(shared_criteo / "autoint_train_examples.txt", labelled=True)
    real_rates, rates = missing_rates(real), missing_rates(train_table)
    for name in schema.FIELD_NAMES:
        assert rates[name] == pytest.approx(real_rates[name], abs=0.02), name
    for name in schema.INT_NAMES:
        real_median = np.median(present_ints(real, name))
        assert np.log1p(np.median(present_ints(train_table, name))) == pytest.approx(
            np.log1p(real_median), abs=0.3), name
    for name in schema.CAT_NAMES:
        assert top_share(train_table, name) == pytest.approx(top_share(real, name), abs=0.03), name
