"""Stage 07: logit-space blends, the held-out guard, and the stage's outputs."""

import json
import shutil

import numpy as np
import pytest

from ensembles import blend, calibrate, metrics
from stages.paths import stage_dir
from tests.test_calibrate import fake_hash_stage, fake_model, logistic_data


def test_weights_find_the_informative_member_and_ignore_noise():
    logits, labels = logistic_data(20_000, seed=11)
    noise = np.random.default_rng(12).normal(-1.2, 1.0, len(labels))
    members = np.column_stack([noise, logits])
    weights, bias = blend.fit_weights(members, labels)
    assert weights[0] < 0.06 and weights[1] == pytest.approx(1.0, abs=0.06)
    assert bias == pytest.approx(0.0, abs=0.08)


def test_a_fitted_blend_is_kept_when_it_beats_the_best_single_member():
    """The informative member is overconfident (twice the true logit) and the other is wide noise:
    weight 1/2 fixes the first, which neither the plain average nor that member alone can do."""
    logits, labels = logistic_data(20_000, seed=11)
    noise = np.random.default_rng(12).normal(-1.2, 3.0, len(labels))
    members = np.column_stack([noise, 2 * logits])
    fitted = blend.fit_blend(members, labels, "weighted", metrics.split_halves(len(labels), 0))
    assert fitted.method == "weighted" and fitted.guard["better"]
    assert fitted.guard["baseline"] == "single" and fitted.guard["gain_z"] > 5
    assert fitted.weights[1] == pytest.approx(0.5, abs=0.05) and fitted.weights[0] < 0.05
    held_out = fitted.held_out_logloss
    assert held_out["weighted"] < held_out["single"] - 0.01 < held_out["average"] - 0.01
    assert metrics.logloss(labels, metrics.sigmoid(fitted.valid_logits)) == \
        pytest.approx(held_out["weighted"])


def test_weights_stay_non_negative_where_the_best_unconstrained_weight_is_negative():
    """Members z + e and e: subtracting the second would remove the noise (weights 1, -1);
    with non-negative weights the second gets exactly 0."""
    logits, labels = logistic_data(10_000, seed=13)
    error = np.random.default_rng(16).standard_normal(len(logits))
    weights, _ = blend.fit_weights(np.column_stack([logits + error, error]), labels)
    assert weights[1] == 0.0 and 0.3 < weights[0] < 1.0


def test_a_blend_that_only_fits_noise_falls_back_to_the_plain_average():
    """Two members that each hold the true logit plus independent noise: the average is already
    the right blend, so a fitted one can only gain noise on the held-out halves, and it halves the
    noise variance that either member alone carries."""
    logits, labels = logistic_data(4_000, seed=14)
    rng = np.random.default_rng(15)
    members = np.column_stack([logits + 0.5 * rng.standard_normal(len(logits)) for _ in range(2)])
    fitted = blend.fit_blend(members, labels, "weighted", metrics.split_halves(len(labels), 0))
    assert fitted.method == "average" and not fitted.guard["better"]
    assert fitted.guard["baseline"] == "average"
    assert fitted.held_out_logloss["average"] < fitted.held_out_logloss["single"]
    np.testing.assert_array_equal(fitted.weights, [0.5, 0.5])
    assert fitted.bias == 0.0
    np.testing.assert_allclose(fitted.valid_logits, members.mean(axis=1))


def test_a_weak_member_makes_the_fallback_the_best_single_member():
    """A good member and pure noise: the average is dragged down by the noise and the fitted blend
    only matches the good member, so the fallback is the good member alone, chosen by held-out
    logloss and reported."""
    logits, labels = logistic_data(4_000, seed=17)
    rng = np.random.default_rng(18)
    noise = rng.normal(-1.2, 1.0, len(labels))
    members = np.column_stack([noise, logits + 0.05 * rng.standard_normal(len(labels))])
    fitted = blend.fit_blend(members, labels, "weighted", metrics.split_halves(len(labels), 0))
    assert fitted.method == "single" and fitted.guard["baseline"] == "single"
    assert not fitted.guard["better"]
    held_out = fitted.held_out_logloss
    assert held_out["single"] < held_out["average"] - 0.03
    np.testing.assert_array_equal(fitted.weights, [0.0, 1.0])
    assert fitted.bias == 0.0
    # Both halves pick the good member, so the cross-fitted logits are its logits.
    np.testing.assert_array_equal(fitted.valid_logits, members[:, 1])
    assert held_out["single"] == pytest.approx(
        metrics.logloss(labels, metrics.sigmoid(members[:, 1])))


def test_the_single_member_is_picked_on_the_other_half():
    """Two members, each good on one half only: each half's pick is the member that is better on
    the other half, so the held-out score of "single" is the worse member on each half."""
    logits, labels = logistic_data(2_000, seed=19)
    first_half = metrics.split_halves(len(labels), 0)
    noise = np.random.default_rng(20).normal(-1.2, 1.0, len(labels))
    first = np.where(first_half, logits, noise)
    second = np.where(first_half, noise, logits)
    fitted = blend.fit_blend(np.column_stack([first, second]), labels, "weighted", first_half)
    picked_on_other_half = np.where(first_half, second, first)
    assert fitted.held_out_logloss["single"] == pytest.approx(
        metrics.logloss(labels, metrics.sigmoid(picked_on_other_half)))
    assert fitted.method != "single"


def test_average_method_is_the_mean_logit():
    members = metrics.logit(np.array([[0.1, 0.3], [0.5, 0.9]]))
    averaged = blend.fit_blend(members, np.array([0, 1]), "average", np.array([True, False]))
    np.testing.assert_allclose(metrics.sigmoid(averaged.apply(members)),
                               metrics.sigmoid(members.mean(axis=1)))


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory):
    """Calibrated members of different quality (each sees the true logit with its own noise),
    built once per module; returns (artifacts root, validation labels)."""
    root = tmp_path_factory.mktemp("built") / "artifacts"
    logits, labels = logistic_data(7000, seed=21)
    rng = np.random.default_rng(22)
    valid, test = slice(0, 5000), slice(5000, None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRITEO_PNN_ARTIFACTS", str(root))
        fake_hash_stage("t", labels[valid], test_rows=2000)
        for model_id, noise in (("good", 0.4), ("fair", 0.5), ("poor", 2.5)):
            seen = logits + noise * rng.standard_normal(len(logits))
            fake_model("t", model_id, metrics.sigmoid(seen[valid]), metrics.sigmoid(seen[test]))
        calibrate.main(["--tag", "t", "--set", "models=[good, fair, poor]"])
    return root, labels[valid]


@pytest.fixture
def three_models(built_tree, artifacts):
    """A private copy of the built tree; returns the validation labels."""
    root, labels = built_tree
    shutil.copytree(root / "t", artifacts / "t")
    return labels


def test_stage_blends_calibrated_members_and_reports_each(three_models, capsys):
    labels = three_models
    blend.main(["--tag", "t", "--set", "models=[good, fair, poor]"])
    out = stage_dir("t", "07_ensemble", "ens_logit")
    result = json.loads((out / "metrics.json").read_text())
    assert result["source"] == "06_calibrate" and result["members"] == ["good", "fair", "poor"]
    assert set(result["member_metrics"]) == {"good", "fair", "poor"}
    best_member = min(row["valid_logloss"] for row in result["member_metrics"].values())
    assert result["method"] == "weighted"
    assert result["valid_logloss"] < best_member
    assert result["weights"]["good"] > result["weights"]["poor"] >= 0
    valid = np.load(out / "valid.pred.npy")
    assert metrics.logloss(labels, valid) == pytest.approx(result["valid_logloss"], abs=1e-6)
    # The test predictions follow weights.json applied to the members' calibrated logits.
    saved = json.loads((out / "weights.json").read_text())
    members = np.column_stack([
        metrics.logit(np.load(stage_dir("t", "06_calibrate", member) / "test.pred.npy"))
        for member in saved["weights"]])
    expected = metrics.sigmoid(members @ np.array(list(saved["weights"].values())) + saved["bias"])
    np.testing.assert_allclose(np.load(out / "test.pred.npy"), expected, rtol=1e-5)
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    blend.main(["--tag", "t", "--set", "models=[good, fair, poor]"])
    assert "done, skipped" in capsys.readouterr().out


def test_blends_are_configured_by_name_members_method_and_source(three_models):
    blends = ("ensemble.blends=[{name: ens_pair, members: [good, poor], method: average},"
              " {name: ens_raw, members: [good, fair]}]")
    blend.main(["--tag", "t", "--set", blends, "--set", "ensemble.source=05_train"])
    pair = json.loads((stage_dir("t", "07_ensemble", "ens_pair") / "metrics.json").read_text())
    assert pair["members"] == ["good", "poor"] and pair["method"] == "average"
    assert pair["weights"] == {"good": 0.5, "poor": 0.5} and pair["source"] == "05_train"
    raw = np.column_stack([np.load(stage_dir("t", "05_train", m) / "valid.pred.npy")
                           for m in ("good", "poor")])
    pair_valid = np.load(stage_dir("t", "07_ensemble", "ens_pair") / "valid.pred.npy")
    np.testing.assert_allclose(pair_valid, metrics.sigmoid(metrics.logit(raw).mean(axis=1)),
                               rtol=1e-5)
    assert (stage_dir("t", "07_ensemble", "ens_raw") / "weights.json").exists()
    with pytest.raises(ValueError, match="duplicate names"):
        blend.main(["--tag", "t", "--set", "ensemble.blends=[{name: a}, {name: a}]"])
    with pytest.raises(RuntimeError, match="input stage\\(s\\) not built: 06_calibrate/ipnn"):
        blend.main(["--tag", "t", "--set", "ensemble.blends=[{name: b, members: [good, ipnn]}]"])
