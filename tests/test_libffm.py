"""The libFFM-algorithm trainer: one update against a brute-force gradient, learning a planted
field interaction, auto-stop, the libFFM text path, the binary engine's command lines, and the
binary engine against libffm itself (built from ../shared/peers/libffm when it is there)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numba
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import OneHotEncoder

from models import libffm
from models.libffm.binary import binary_commands
from models.libffm.config import DataConfig, LibffmConfig, ModelConfig, TrainConfig
from models.libffm.learner import LEARNER
from models.libffm.rows import FieldRows, SparseRows, convert_text
from models.libffm.trainer import fit, get_weights, initial_state, train_epoch
from models.runner_config import config_path
from preprocessing import field_spec, leaves
from pipeline.paths import stage_dir
from tests.test_leaves import staged  # noqa: F401  (the module-scoped staged data)

ONE_THREAD = {"threads": 1, "seed": 3}
LIBFFM_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "peers" / "libffm"


def brute_force_objective(weights, ids, fields, values, label, r, l2):
    """libffm's per-instance objective in float64: logloss of phi plus l2/2 ||w||^2 for every
    weight vector each pair uses (its L2 sits inside each pair's gradient)."""
    y = 1.0 if label else -1.0
    phi, penalty = 0.0, 0.0
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            left, right = weights[ids[a], fields[b]], weights[ids[b], fields[a]]
            phi += left @ right * values[a] * values[b] * r
            penalty += 0.5 * l2 * (left @ left + right @ right)
    return np.log1p(np.exp(-y * phi)) + penalty, phi


def numeric_gradient(weights, *instance, step=1e-6):
    gradient = np.zeros_like(weights)
    for index in np.ndindex(weights.shape):
        up, down = weights.copy(), weights.copy()
        up[index] += step
        down[index] -= step
        gradient[index] = (brute_force_objective(up, *instance)[0]
                           - brute_force_objective(down, *instance)[0]) / (2 * step)
    return gradient


# One row of 3 features: the field-file kernels (fields 0, 1, 2, values 1, r = 1/3) and the
# general libFFM-text kernels (any fields and values, r = 1/||x||^2); k = 6 uses two lane
# blocks, the second one padded.
INSTANCES = {
    "fields": (np.array([0, 3, 6]), np.array([0, 1, 2]), np.ones(3)),
    "text": (np.array([5, 3, 6]), np.array([2, 0, 1]), np.array([0.5, 2.0, 1.5]))}


@pytest.mark.parametrize("kind", INSTANCES)
@pytest.mark.parametrize("k", [4, 6])
def test_one_update_matches_adagrad_on_the_brute_force_gradient(kind, k):
    n, label, eta, l2 = 7, 1, 0.2, 0.05
    ids, fields, values = INSTANCES[kind]
    r = 1 / float(values @ values)
    model = ModelConfig(k=k, init_scale=2.0)
    train = TrainConfig(learning_rate=eta, l2=l2, **ONE_THREAD)
    state = initial_state(n, 3, model, seed=0)
    before = get_weights(state, k).astype(np.float64)
    if kind == "fields":
        rows = FieldRows(ids[None].astype(np.int32), np.array([label], np.uint8))
    else:
        rows = SparseRows(np.array([0, 3]), ids.astype(np.int32), fields.astype(np.int32),
                          values.astype(np.float32), np.array([label], np.uint8))
    loss, phi = brute_force_objective(before, ids, fields, values, label, r, 0.0)
    np.testing.assert_allclose(rows.predict(state, model), [1 / (1 + np.exp(-phi))], rtol=1e-5)

    returned = rows.train(state, np.array([0]), model, train)

    gradient = numeric_gradient(before, ids, fields, values, label, r, l2)
    accumulators = 1.0 + gradient ** 2
    expected = before - eta * gradient / np.sqrt(accumulators)
    assert returned == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(get_weights(state, k), expected, rtol=1e-4, atol=1e-6)
    got_accumulators = state[:, :, :, 1, :].reshape(n, 3, -1)[:, :, :k]
    np.testing.assert_allclose(got_accumulators, accumulators, rtol=1e-4)
    assert np.count_nonzero(gradient) == 2 * 3 * k  # 3 pairs x 2 vectors touched, nothing else


def planted_interactions(rows, seed, fields=4, values=12):
    """Labels from products of per-value signs of field pairs (0,1) and (2,3): an XOR-like
    interaction with no main effect, so LR on one-hot features cannot fit it."""
    rng = np.random.default_rng(seed)
    half = np.repeat([-1.0, 1.0], values // 2)  # balanced: a value alone says nothing
    signs = np.stack([np.random.default_rng(field).permutation(half) for field in range(fields)])
    local = rng.integers(values, size=(rows, fields))
    logit = 2.0 * (signs[0, local[:, 0]] * signs[1, local[:, 1]]
                   + signs[2, local[:, 2]] * signs[3, local[:, 3]]) - 1.0
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.uint8)
    return (local + values * np.arange(fields)).astype(np.int32), labels


def test_ffm_learns_a_planted_interaction_that_lr_and_a_constant_cannot():
    train_ids, train_labels = planted_interactions(20_000, seed=1)
    valid_ids, valid_labels = planted_interactions(5_000, seed=2)
    model = ModelConfig()
    state = initial_state(48, 4, model, seed=0)
    result = fit(state, FieldRows(train_ids, train_labels), FieldRows(valid_ids, valid_labels),
                 model, TrainConfig(epochs=8, auto_stop=False, threads=2), None)
    ffm = result.history[-1]["valid_logloss"]
    encoder = OneHotEncoder().fit(train_ids)
    lr = LogisticRegression(max_iter=1000).fit(encoder.transform(train_ids), train_labels)
    lr_loss = log_loss(valid_labels, lr.predict_proba(encoder.transform(valid_ids))[:, 1])
    constant = log_loss(valid_labels, np.full(len(valid_labels), train_labels.mean()))
    assert lr_loss > constant - 0.01  # the planted signal is invisible to a linear model
    assert ffm < lr_loss - 0.1, (ffm, lr_loss, constant)


def test_auto_stop_keeps_the_epoch_before_the_validation_loss_rose(tmp_path):
    train_ids, train_labels = planted_interactions(5_000, seed=1)
    valid_ids, valid_labels = planted_interactions(2_000, seed=2)
    flipped = FieldRows(valid_ids, 1 - valid_labels)  # learning makes this loss rise
    model = ModelConfig()
    state = initial_state(48, 4, model, seed=0)
    kept = {}
    result = fit(state, FieldRows(train_ids, train_labels), flipped, model,
                 TrainConfig(epochs=10, **ONE_THREAD), tmp_path / "model.npy", kept)
    losses = [entry["valid_logloss"] for entry in result.history]
    rise = next(epoch for epoch in range(1, len(losses)) if losses[epoch] > losses[epoch - 1])
    assert result.stopped_early and len(losses) == rise + 1 < 10
    assert result.best_epoch == rise
    np.testing.assert_array_equal(kept["valid"], flipped.predict(state, model))
    assert log_loss(flipped.labels, kept["valid"].astype(np.float64)) == \
        pytest.approx(losses[rise - 1], rel=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "model.npy"), get_weights(state, 4))


def test_fixed_epochs_without_auto_stop_run_them_all(tmp_path):
    train_ids, train_labels = planted_interactions(2_000, seed=1)
    valid_ids, valid_labels = planted_interactions(500, seed=2)
    state = initial_state(48, 4, ModelConfig(), seed=0)
    result = fit(state, FieldRows(train_ids, train_labels), FieldRows(valid_ids, 1 - valid_labels),
                 ModelConfig(), TrainConfig(epochs=4, auto_stop=False, **ONE_THREAD),
                 tmp_path / "model.npy")
    assert len(result.history) == 4 and not result.stopped_early and result.best_epoch == 4


def write_text(path, ids, labels):
    with open(path, "w") as handle:
        handle.writelines(f"{label} " + " ".join(f"{f}:{j}:1" for f, j in enumerate(row)) + "\n"
                          for row, label in zip(ids, labels))


def test_text_input_trains_like_the_field_files(tmp_path):
    ids, labels = planted_interactions(3_000, seed=1)
    write_text(tmp_path / "train.ffm", ids, labels)
    text = convert_text(tmp_path / "train.ffm", tmp_path / "cache")
    assert isinstance(text, FieldRows)  # one `a:id:1` per field a: the field kernels
    np.testing.assert_array_equal(text.labels, labels)
    np.testing.assert_array_equal(text.ids, ids)
    sparse = SparseRows(np.arange(len(ids) + 1) * 4, ids.ravel(),
                        np.tile(np.arange(4, dtype=np.int32), len(ids)),
                        np.ones(ids.size, np.float32), labels)
    model, train = ModelConfig(), TrainConfig(shuffle_block_rows=1000, **ONE_THREAD)
    numba.set_num_threads(1)  # train_epoch runs on the threads fit would set
    states = []
    for rows in (FieldRows(ids, labels), text, sparse):
        state = initial_state(48, 4, model, seed=0)
        train_epoch(state, rows, model, train, epoch=1)
        states.append(state)
    np.testing.assert_array_equal(states[0], states[1])
    # Same algorithm and order; the two kernels round in a different order (float32).
    np.testing.assert_allclose(states[0], states[2], rtol=1e-4, atol=1e-6)


def test_field_rows_predict_like_libffm_skipping_unseen_ids_and_fields(tmp_path):
    """Predictions skip ids >= n and fields >= m (libffm), whichever kernel reads the rows."""
    state = initial_state(10, 3, ModelConfig(), seed=0)
    ids = np.array([[0, 4, 9, 2], [12, 5, 8, 1], [3, 6, 10, 11]], np.int32)  # 4 fields, m = 3
    dense = FieldRows(ids, None).predict(state, ModelConfig())
    kept = (ids < 10) & (np.arange(4) < 3)
    sparse = SparseRows(np.arange(4) * 4, ids.ravel(),
                        np.tile(np.arange(4, dtype=np.int32), 3), np.ones(12, np.float32),
                        None).predict(state, ModelConfig(normalization="none"))
    by_hand = [SparseRows(np.array([0, kept[row].sum()]), ids[row][kept[row]],
                          np.flatnonzero(kept[row]).astype(np.int32),
                          np.ones(kept[row].sum(), np.float32), None)
               .predict(state, ModelConfig(normalization="none"))[0] for row in range(3)]
    np.testing.assert_allclose(sparse, by_hand, rtol=1e-6)
    # the field rows' r is 1/F with F = 4 columns, as libffm's 1/||x||^2 of the text line
    logit = np.log(sparse / (1 - sparse)) / 4
    np.testing.assert_allclose(dense, 1 / (1 + np.exp(-logit)), rtol=1e-5)


def test_text_turning_sparse_after_field_rows_writes_every_row(tmp_path, monkeypatch):
    """A file whose first chunks are `0:id:1 1:id:1` rows and later ones not: the CSR files hold
    the earlier rows too."""
    monkeypatch.setattr("models.libffm.rows.TEXT_CHUNK_BYTES", 16)
    path = tmp_path / "a.ffm"
    path.write_text("1 0:5:1 1:7:1\n0 0:3:1 1:2:1\n1 0:2:1 1:4:1 2:1:0.5\n0 1:3:1\n")
    rows = convert_text(path, tmp_path / "cache")
    assert isinstance(rows, SparseRows)
    assert list(rows.labels) == [1, 0, 1, 0] and list(rows.indptr) == [0, 2, 4, 7, 8]
    assert list(rows.fields) == [0, 1, 0, 1, 0, 1, 2, 1]
    assert list(rows.ids) == [5, 7, 3, 2, 2, 4, 1, 3]
    np.testing.assert_allclose(rows.values, [1, 1, 1, 1, 1, 1, 0.5, 1])


def test_text_reader_handles_values_chunks_and_reports_bad_lines(tmp_path, monkeypatch):
    monkeypatch.setattr("models.libffm.rows.TEXT_CHUNK_BYTES", 16)  # lines straddle chunks
    path = tmp_path / "a.ffm"
    path.write_text("1 0:5:0.5 2:7:1.5e1\n0 1:3:1\n-1 0:2:2 1:4:1")  # no final newline
    rows = convert_text(path, tmp_path / "cache")
    assert list(rows.labels) == [1, 0, 0] and list(rows.indptr) == [0, 2, 3, 5]
    assert list(rows.fields) == [0, 2, 1, 0, 1] and list(rows.ids) == [5, 7, 3, 2, 4]
    np.testing.assert_allclose(rows.values, [0.5, 15.0, 1.0, 2.0, 1.0])
    path.write_text("1 0:5:1\n1 0:5\n")
    with pytest.raises(ValueError, match=r"a.ffm:2: not a libFFM line"):
        convert_text(path, tmp_path / "cache")


def test_binary_engine_runs_ffm_train_with_the_libffm_options(tmp_path):
    config = LibffmConfig(data=DataConfig(stage="04_export", format="text"),
                          train=TrainConfig(epochs=18, auto_stop=False, threads=8))
    train, *predicts = binary_commands(config, tmp_path, tmp_path / "out")
    assert train == ["ffm-train", "-k", "4", "-t", "18", "-r", "0.2", "-l", "2e-05", "-s", "8",
                     "-p", str(tmp_path / "valid.ffm"), str(tmp_path / "train.ffm"),
                     str(tmp_path / "out" / "model.txt")]
    assert predicts[1][:2] == ["ffm-predict", str(tmp_path / "test.ffm")]
    winners = LibffmConfig(data=config.data, model=ModelConfig(init_scale=0.5))
    with pytest.raises(ValueError, match="model.init_scale"):
        binary_commands(winners, tmp_path, tmp_path)
    in_order = LibffmConfig(data=config.data, train=TrainConfig(shuffle=False))
    with pytest.raises(ValueError, match="train.shuffle"):  # ffm-train always shuffles
        binary_commands(in_order, tmp_path, tmp_path)


def test_presets_load_strictly():
    config = LEARNER.load_config(config_path("libffm_winners"))
    assert (config.model.normalization_scale, config.model.init_scale) == (2.0, 0.5)
    assert (config.train.epochs, config.train.learning_rate, config.train.auto_stop) == \
        (11, 0.1, False)
    with pytest.raises(ValueError, match="unknown key"):
        LEARNER.load_config(config_path("libffm"), overrides=["train.eta=0.1"])


def test_stage_code_covers_every_module_of_the_package(artifacts):
    stage = LEARNER.stage_for("t", "libffm", LibffmConfig())
    package = Path(libffm.__file__).parent
    modules = {f"models/libffm/{path.name}" for path in package.glob("*.py")} - \
        {"models/libffm/__main__.py"}
    assert len(modules) > 5 and modules <= set(stage.code)  # a change to any of them reruns it


def test_entry_point_trains_on_leaf_fields_and_on_libffm_text(staged):  # noqa: F811
    leaves.main(["--tag", "t", "--set", "leaves.trees=4"])
    spec = field_spec.FieldSpec.load(stage_dir("t", "04_leaves"))
    out = stage_dir("t", "05_train", "libffm")
    for options in ([], ["--set", "data.stage=04_export", "--set", "data.format=text"]):
        libffm.main(["--tag", "t", "--model", "libffm", "--preset", "demo", *options])
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["valid_logloss"] < metrics["constant_logloss"] - 0.02
        assert np.load(out / "test.pred.npy").shape == (spec.rows["test"],)
        history = np.loadtxt(out / "history.csv", delimiter=",", skiprows=1, ndmin=2)
        assert metrics["valid_logloss"] == pytest.approx(history[metrics["best_epoch"] - 1, 2])
    assert np.load(out / "model.npy").shape[1:] == (39, 4)  # text: fields of the 39-field file


def test_binary_engine_publishes_what_ffm_predict_wrote(staged, tmp_path, monkeypatch):  # noqa: F811
    """Stand-in ffm-train / ffm-predict scripts: the run, its log and the outputs are wired."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffm-train").write_text(
        '#!/bin/sh\nfor last; do :; done\necho model > "$last"\n'
        'printf "iter   tr_logloss   va_logloss\\n   1  0.50000  0.49000\\n'
        '   2  0.45000  0.49500\\nAuto-stop. Use model at 1th iteration.\\n"\n')
    (bin_dir / "ffm-predict").write_text("#!/bin/sh\nawk '{print 0.25}' \"$1\" > \"$3\"\n")
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    libffm.main(["--tag", "t", "--model", "libffm", "--set", "train.engine=binary", "--set",
                 "data.stage=04_export", "--set", "data.format=text"])
    out = stage_dir("t", "05_train", "libffm")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "model.txt").read_text() == "model\n"
    np.testing.assert_array_equal(np.load(out / "valid.pred.npy"),
                                  np.full(metrics["valid_rows"], 0.25, np.float32))
    assert metrics["stopped_early"] and metrics["best_epoch"] == 1 and metrics["epochs"] == 2


@pytest.fixture(scope="module")
def libffm_programs(tmp_path_factory):
    """A folder with ffm-train and ffm-predict built from the libffm source beside the repository
    (in a temporary folder: the source is never copied into the repository)."""
    if not (LIBFFM_SOURCE / "Makefile").is_file():
        pytest.skip(f"no libffm source at {LIBFFM_SOURCE}")
    missing = [tool for tool in ("make", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"cannot build libffm: no {' or '.join(missing)}")
    build = tmp_path_factory.mktemp("libffm")
    for path in LIBFFM_SOURCE.iterdir():
        if path.is_file():
            shutil.copy(path, build)
    made = subprocess.run(["make", "-j2"], cwd=build, capture_output=True, text=True)
    assert made.returncode == 0, f"building libffm failed:\n{made.stdout}{made.stderr}"
    return build


def read_libffm_model(path):
    """libffm's model file as a state: n, m, k (int32), normalization (bool), then the weights
    and AdaGrad accumulators in blocks of 4, the layout of `initial_state`."""
    n, m, k = np.fromfile(path, np.int32, 3)
    groups = -(-int(k) // 4)
    return np.fromfile(path, np.float32, offset=13).reshape(n, m, groups, 2, 4), int(k)


def test_binary_engine_runs_the_real_libffm(staged, libffm_programs, tmp_path,  # noqa: F811
                                            monkeypatch):
    monkeypatch.setenv("PATH", f"{libffm_programs}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    libffm.main(["--tag", "t", "--model", "libffm", "--preset", "demo", "--force",
                 "--set", "train.engine=binary", "--set", "data.stage=04_export",
                 "--set", "data.format=text", "--set", "train.threads=1"])
    out = stage_dir("t", "05_train", "libffm")
    metrics = json.loads((out / "metrics.json").read_text())
    history = np.loadtxt(out / "history.csv", delimiter=",", skiprows=1, ndmin=2)
    assert metrics["epochs"] == len(history) and history[:, 0].tolist() == \
        list(range(1, len(history) + 1))
    assert metrics["best_epoch"] == len(history) - metrics["stopped_early"]
    # ffm-train's log (5 decimals) and ffm-predict's output (6 digits) agree on the kept model
    assert metrics["valid_logloss"] == pytest.approx(history[metrics["best_epoch"] - 1, 2],
                                                     abs=2e-5)
    assert metrics["valid_logloss"] < metrics["constant_logloss"] - 0.02
    assert metrics["threads"] == 1 and metrics["train_rows"] == 3000
    assert list(tmp_path.iterdir()) == []  # ffm-train's .bin files went to the run's cache
    assert sorted(path.name for path in out.iterdir() if path.suffix == ".out") == []
    # The numba kernels on libffm's model predict what ffm-predict wrote.
    state, k = read_libffm_model(out / "model.txt")
    valid = convert_text(stage_dir("t", "04_export") / "valid.ffm", tmp_path / "cache")
    shutil.rmtree(tmp_path / "cache")
    np.testing.assert_allclose(valid.predict(state, ModelConfig(k=k)),
                               np.load(out / "valid.pred.npy"), rtol=1e-5, atol=1e-6)
