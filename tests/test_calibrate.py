"""Stage 06: calibration methods on known miscalibrated inputs, the down-sampling correction, the
cross-fitted choice, and the stage's outputs. Also the fake upstream stages (03, 05) the tests of
stages 07 and 08 build on."""

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from ensembles import calibrate, metrics
from preprocessing.field_spec import Field, FieldSpec
from preprocessing.schema import TEST_ID_START
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import stage_dir


def logistic_data(rows: int, seed: int):
    """Labels drawn from a known logistic model: (true logits [N], labels [N] uint8)."""
    rng = np.random.default_rng(seed)
    logits = -1.2 + 1.1 * rng.standard_normal(rows)
    labels = (rng.random(rows) < metrics.sigmoid(logits)).astype(np.uint8)
    return logits, labels


def fake_hash_stage(tag: str, valid_labels: np.ndarray, test_rows: int, train_rate: float = 0.25):
    """A minimal published 03_hash/ (one field) with the given validation labels."""
    valid_rows = len(valid_labels)
    spec = FieldSpec(fields=(Field("C1", "cat", 4, 0),),
                     rows={"train": 10, "valid": valid_rows, "test": test_rows},
                     hashing={"mode": "xxh64"}, min_count={"cat": 10},
                     label_rate={"train": train_rate, "valid": float(np.mean(valid_labels))},
                     test_id_start=TEST_ID_START)
    with Stage(tag, "03_hash", {"fake": True}, inputs=[]).build() as out:
        spec.write(out)
        for split, rows in (("valid", valid_rows), ("test", test_rows)):
            np.save(out / f"{split}.fields.npy", np.full((rows, 1), 2, np.int32))
            np.save(out / f"{split}.ids.npy", TEST_ID_START + np.arange(rows, dtype=np.int64))
        np.save(out / "valid.labels.npy", np.asarray(valid_labels, np.uint8))


def fake_model(tag: str, model_id: str, valid: np.ndarray, test: np.ndarray, **extra_metrics):
    """A published 05_train/<model_id>/ holding the given probabilities."""
    stage = Stage(tag, "05_train", {"model_id": model_id}, inputs=[stage_dir(tag, "03_hash")],
                  unit=model_id)
    with stage.build() as out:
        np.save(out / "valid.pred.npy", np.asarray(valid, np.float32))
        np.save(out / "test.pred.npy", np.asarray(test, np.float32))
        (out / "metrics.json").write_text(json.dumps({"valid_logloss": 0.5, **extra_metrics}))


@pytest.fixture(scope="module")
def overconfident():
    """Truth p = sigmoid(z); the 'model' predicts sigmoid(2 z + 0.8): overconfident and high."""
    logits, labels = logistic_data(40_000, seed=3)
    return metrics.sigmoid(2.0 * logits + 0.8), labels, logits


@pytest.mark.parametrize("method, scale, shift", [("logit_shift", 1.0, 0.8), ("platt", 2.0, 0.8),
                                                  ("isotonic", 2.0, 0.8), ("platt", 0.5, -0.5)])
def test_fitted_methods_reduce_held_out_logloss_and_ece(overconfident, method, scale, shift):
    """Predictions sigmoid(scale z + shift) of a true logit z: each method, fitted on one half,
    lowers logloss and ECE on the other."""
    _, labels, logits = overconfident
    probabilities = metrics.sigmoid(scale * logits + shift)
    fit_rows, held_out = slice(0, 20_000), slice(20_000, None)
    calibrator = calibrate.Calibrator.fit(method, probabilities[fit_rows], labels[fit_rows])
    after = calibrator.apply(probabilities[held_out])
    before = probabilities[held_out]
    assert metrics.logloss(labels[held_out], after) < \
        metrics.logloss(labels[held_out], before) - 0.01
    assert metrics.expected_calibration_error(labels[held_out], after) < \
        0.5 * metrics.expected_calibration_error(labels[held_out], before)


def test_platt_recovers_the_distortion_and_logit_shift_recovers_a_shift(overconfident):
    probabilities, labels, logits = overconfident
    params = calibrate.fit("platt", probabilities, labels)
    # sigmoid(a (2 z + 0.8) + b) = sigmoid(z) needs a = 0.5, b = -0.4.
    assert params["scale"] == pytest.approx(0.5, abs=0.04)
    assert params["shift"] == pytest.approx(-0.4, abs=0.06)
    shifted = metrics.sigmoid(logits + 1.0)
    assert calibrate.fit("logit_shift", shifted, labels)["shift"] == pytest.approx(-1.0, abs=0.05)


def test_winners_shift_follows_its_formula():
    probabilities = np.array([0.0001, 0.0035, 0.0036, 0.01, 0.5, 0.999])
    expected = np.array([0.0001, 0.0035, 0.0006, 0.007, 0.497, 0.996])
    np.testing.assert_allclose(calibrate.winners_shift(probabilities), expected, rtol=1e-12)
    np.testing.assert_allclose(calibrate.transform("winners_shift", {}, probabilities), expected,
                               rtol=1e-12)


def test_negative_sampling_correction_follows_its_formula():
    probabilities = np.array([0.01, 0.2, 0.5, 0.9])
    for rate in (1.0, 0.5, 0.1, 0.025):
        expected = probabilities / (probabilities + (1 - probabilities) / rate)
        corrected = calibrate.correct_negative_sampling(probabilities, rate)
        np.testing.assert_allclose(corrected, expected, rtol=1e-12)
        # The same as shifting the logit by log(rate).
        np.testing.assert_allclose(metrics.logit(corrected),
                                   metrics.logit(probabilities) + np.log(rate), rtol=1e-9)
    assert calibrate.correct_negative_sampling(np.array([0.5]), 0.1)[0] == pytest.approx(1 / 11)
    for bad_rate in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="negative_sampling_rate"):
            calibrate.correct_negative_sampling(probabilities, bad_rate)


def test_down_sampling_correction_restores_the_full_data_probabilities():
    """A model that is exact on data with 1 in 10 negatives kept predicts sigmoid(z - log 0.1);
    the correction gives back the probabilities on the full data."""
    logits, labels = logistic_data(50_000, seed=4)
    rate = 0.1
    rng = np.random.default_rng(5)
    kept = (labels == 1) | (rng.random(len(labels)) < rate)
    on_sampled = metrics.sigmoid(logits - np.log(rate))
    # The shifted model really is calibrated on the down-sampled rows ...
    assert on_sampled[kept].mean() == pytest.approx(labels[kept].mean(), abs=0.01)
    corrected = calibrate.Calibrator("none", {}, rate).apply(on_sampled)
    np.testing.assert_allclose(corrected, metrics.sigmoid(logits), rtol=1e-9)
    # ... and the corrected one on all rows.
    assert corrected.mean() == pytest.approx(labels.mean(), abs=0.005)


def test_isotonic_parameters_reproduce_sklearn(overconfident):
    probabilities, labels, _ = overconfident
    params = calibrate.fit("isotonic", probabilities[:5000], labels[:5000])
    model = IsotonicRegression(y_min=metrics.EPSILON, y_max=1 - metrics.EPSILON,
                               out_of_bounds="clip").fit(probabilities[:5000], labels[:5000])
    queries = np.concatenate([probabilities[5000:6000], [0.0, 1.0]])
    np.testing.assert_allclose(calibrate.transform("isotonic", params, queries),
                               model.predict(queries), rtol=1e-12)


def test_calibrator_json_round_trip(overconfident):
    probabilities, labels, _ = overconfident
    calibrator = calibrate.Calibrator.fit("platt", probabilities, labels, 0.5)
    loaded = calibrate.Calibrator.from_json(json.loads(json.dumps(calibrator.to_json())))
    np.testing.assert_array_equal(loaded.apply(probabilities), calibrator.apply(probabilities))


def test_auto_choice_is_cross_fitted(overconfident):
    probabilities, labels, logits = overconfident
    config = settings.CalibrateConfig()
    calibrator, valid, table = calibrate.calibrate(probabilities, labels, config, seed=1)
    assert calibrator.method in ("platt", "isotonic")
    assert table[calibrator.method]["cross_fit_logloss"] == min(
        row["cross_fit_logloss"] for row in table.values())
    assert metrics.logloss(labels, valid) == pytest.approx(
        table[calibrator.method]["cross_fit_logloss"])
    assert table["platt"]["better"] and table["platt"]["gain_z"] > 10
    # Already calibrated predictions: fitting can only chase noise; none of it counts as a win.
    calibrator, valid, table = calibrate.calibrate(metrics.sigmoid(logits), labels, config, seed=1)
    assert calibrator.method == "none"
    assert not any(row["better"] for row in table.values())
    assert table["isotonic"]["cross_fit_logloss"] > table["none"]["cross_fit_logloss"]
    np.testing.assert_allclose(valid, metrics.sigmoid(logits), rtol=1e-9)


def test_a_configured_method_is_used_even_if_not_a_candidate(overconfident):
    probabilities, labels, _ = overconfident
    config = settings.CalibrateConfig(method="winners_shift", candidates=("none",))
    calibrator, valid, table = calibrate.calibrate(probabilities, labels, config, seed=1)
    assert calibrator.method == "winners_shift" and set(table) == {"none", "winners_shift"}
    np.testing.assert_allclose(valid, calibrate.winners_shift(probabilities))


def run_stage(tag, *options):
    calibrate.main(["--tag", tag, "--set", "models=[over, flat]", *options])


@pytest.fixture
def two_models(artifacts):
    logits, labels = logistic_data(6000, seed=7)
    test_logits, _ = logistic_data(1000, seed=8)
    fake_hash_stage("t", labels[:4000], test_rows=1000)
    fake_model("t", "over", metrics.sigmoid(2.0 * logits[:4000] + 0.8),
               metrics.sigmoid(2.0 * test_logits + 0.8))
    fake_model("t", "flat", metrics.sigmoid(0.5 * logits[:4000]),
               metrics.sigmoid(0.5 * test_logits), negative_sampling_rate=0.5)
    return labels[:4000], test_logits


def test_stage_writes_calibrated_predictions_plots_and_metrics(two_models, capsys):
    labels, test_logits = two_models
    run_stage("t")
    out = stage_dir("t", "06_calibrate", "over")
    result = json.loads((out / "metrics.json").read_text())
    assert result["method"] in ("platt", "isotonic") and result["selected_by"] == "cross-fit"
    assert result["valid_logloss"] < result["before"]["valid_logloss"] - 0.01
    assert result["expected_calibration_error"] < result["before"]["expected_calibration_error"]
    valid = np.load(out / "valid.pred.npy")
    assert valid.dtype == np.float32 and valid.shape == (4000,)
    assert metrics.logloss(labels, valid) == pytest.approx(result["valid_logloss"], abs=1e-6)
    calibrator = calibrate.Calibrator.from_json(json.loads((out / "calibrator.json").read_text()))
    np.testing.assert_allclose(np.load(out / "test.pred.npy"),
                               calibrator.apply(metrics.sigmoid(2.0 * test_logits + 0.8)),
                               rtol=1e-6)
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    flat = json.loads((stage_dir("t", "06_calibrate", "flat") / "metrics.json").read_text())
    assert flat["negative_sampling_rate"] == 0.5  # from the model's metrics.json
    capsys.readouterr()
    run_stage("t")
    assert capsys.readouterr().out.count("done, skipped") == 2
    run_stage("t", "--set", "calibrate.method=logit_shift")
    assert "stale: config changed: calibrate.method" in capsys.readouterr().out
    assert json.loads((out / "calibrator.json").read_text())["method"] == "logit_shift"


def test_configured_negative_sampling_rate_is_undone_before_the_method(two_models):
    run_stage("t", "--set", "calibrate.method=none",
              "--set", "calibrate.negative_sampling_rate=0.2")
    out = stage_dir("t", "06_calibrate", "over")
    raw = np.load(stage_dir("t", "05_train", "over") / "test.pred.npy")
    np.testing.assert_allclose(np.load(out / "test.pred.npy"),
                               calibrate.correct_negative_sampling(raw, 0.2), rtol=1e-6)


def test_untrained_models_stop_the_stage_with_their_names(two_models):
    with pytest.raises(SystemExit, match="model\\(s\\) ipnn not trained"):
        calibrate.main(["--tag", "t", "--set", "models=[over, ipnn]"])


def test_bad_prediction_files_are_named(artifacts):
    labels = np.array([0, 1] * 50, np.uint8)
    fake_hash_stage("t", labels, test_rows=10)
    fake_model("t", "m", np.full(100, 0.5), np.full(9, 0.5))
    with pytest.raises(ValueError, match=r"05_train/m/test.pred.npy: shape \(9,\), the test split"):
        calibrate.main(["--tag", "t", "--set", "models=[m]"])
    fake_model("t", "m", np.r_[np.full(99, 0.5), np.nan], np.full(10, 0.5))
    with pytest.raises(ValueError, match=r"valid.pred.npy: 1 values are not probabilities"):
        calibrate.main(["--tag", "t", "--set", "models=[m]"])
