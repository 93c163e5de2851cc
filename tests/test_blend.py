"""Stage 07: logit-space blends, the held-out guard, and the stage's outputs."""

import json
import shutil

import numba
import numpy as np
import pytest

from ensembles import blend, calibrate, metrics, report
from pipeline import settings
from pipeline.paths import stage_dir
from tests.conftest import use_artifacts
from tests.test_calibrate import fake_hash_stage, fake_model, logistic_data


def platt(logits, labels):
    """The members' logits after stage 06's Platt scaling (fitted on the same rows)."""
    params = calibrate.fit("platt", metrics.sigmoid(logits), labels)
    return params["scale"] * logits + params["shift"]


def members_of(scenario: str, rows: int = 20_000, seed: int = 31):
    """Member logits [N, K] and labels [N] of a named case; "noise" members are pure noise around
    the mean logit."""
    logits, labels = logistic_data(rows, seed)
    rng = np.random.default_rng(seed + 1)
    noise = rng.normal(-1.2, 1.0, rows)
    if scenario == "weak":  # a good member and noise: the average is dragged down
        members = [noise, logits + 0.05 * rng.standard_normal(rows)]
    elif scenario == "correlated":  # three calibrated members sharing part of their error, noise
        shared = rng.standard_normal(rows)
        members = [platt(logits + 0.5 * shared + spread * rng.standard_normal(rows), labels)
                   for spread in (0.5, 0.6, 0.7)] + [noise]
    elif scenario == "exact_mean":  # five members whose errors cancel in the mean, noise
        errors = rng.standard_normal((rows, 5))
        errors -= errors.mean(axis=1, keepdims=True)
        members = list((logits[:, None] + errors).T) + [noise]
    elif scenario == "identical":
        members = [platt(logits + 0.5 * rng.standard_normal(rows), labels)] * 3
    elif scenario == "overconfident":  # twice the true logit and wide noise
        members = [rng.normal(-1.2, 3.0, rows), 2 * logits]
    elif scenario == "independent":  # two members with independent errors, one less noisy
        members = [logits + spread * rng.standard_normal(rows) for spread in (0.5, 0.6)]
    else:
        raise ValueError(scenario)
    return np.column_stack(members), labels


def logloss_of(labels, logits):
    return metrics.logloss(labels, metrics.sigmoid(logits))


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


def test_the_selection_scores_with_the_same_logloss_as_sklearn():
    """The kernel's mean cross-entropy of the averaged logits is sklearn's log_loss; the first
    pick is the best member, and every kept step lowered the logloss."""
    members, labels = members_of("correlated", rows=5000)
    counts, history = blend.select_counts(members, labels, rounds=12)
    weights = counts / counts.sum()
    assert min(history) == pytest.approx(logloss_of(labels, members @ weights), rel=1e-12)
    member_losses = [logloss_of(labels, column) for column in members.T]
    assert history[0] == pytest.approx(min(member_losses), rel=1e-12)
    assert counts.sum() <= 12 and history[counts.sum() - 1] == min(history)


def test_the_selection_sums_do_not_depend_on_the_thread_count():
    members, labels = members_of("correlated", rows=5000)
    total = members[:, 0] + members[:, 1]
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = blend._softplus_sums(total, members, 1 / 3)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, blend._softplus_sums(total, members, 1 / 3))


def test_a_weak_member_and_a_duplicate_get_no_weight():
    """Noise gets weight about 0; a copy of a member adds nothing: selection never picks the copy
    (ties go to the first), stacking splits one weight between the two, and the blend predicts
    the same as without the copy."""
    members, labels = members_of("correlated")
    doubled = np.column_stack([members, members[:, 0]])
    picked, _ = blend.selection_weights(doubled, labels, rounds=20)
    assert picked[3] == 0 and picked[4] == 0 and picked.sum() == pytest.approx(1.0)
    alone, _ = blend.fit_weights(members, labels)
    split, _ = blend.fit_weights(doubled, labels)
    assert alone[3] < 0.01 and split[3] < 0.01
    assert split[0] + split[4] == pytest.approx(alone[0], abs=0.01)
    np.testing.assert_allclose(split[1:3], alone[1:3], atol=0.01)
    halves = metrics.split_halves(len(labels), 0)
    without = blend.fit_blend(members, labels, "select", halves)
    with_copy = blend.fit_blend(doubled, labels, "select", halves)
    assert with_copy.method == without.method and with_copy.weights[3] < 0.01
    assert with_copy.weights[0] + with_copy.weights[4] == pytest.approx(without.weights[0],
                                                                        abs=0.01)
    assert logloss_of(labels, with_copy.valid_logits) == pytest.approx(
        logloss_of(labels, without.valid_logits), abs=1e-5)


def test_selection_keeps_a_weak_member_out_of_a_blend_that_the_average_gets_wrong():
    """Five members whose errors cancel in their mean, and noise: the plain average is dragged
    down by the noise; selection picks the five and never the noise, and is kept."""
    members, labels = members_of("exact_mean", seed=33)
    fitted = blend.fit_blend(members, labels, "select", metrics.split_halves(len(labels), 0))
    assert fitted.method == "select" and fitted.bias == 0.0
    assert fitted.weights[5] == 0 and fitted.weights.sum() == pytest.approx(1.0)
    assert all(weight > 0.1 for weight in fitted.weights[:5])
    picks = fitted.details["picks"]
    np.testing.assert_allclose(fitted.weights, np.array(picks) / sum(picks))
    held_out = fitted.held_out_logloss
    assert held_out["select"] == min(held_out.values())
    assert held_out["select"] < held_out["average"] - 0.003 < held_out["single"] - 0.05


@pytest.mark.parametrize("scenario", ["weak", "correlated", "exact_mean", "identical",
                                      "overconfident", "independent"])
def test_the_chosen_blend_is_never_worse_than_its_best_member(scenario):
    """On the rows it was fitted on (the final weights) and on each held-out half (the
    cross-fitted predictions), against the member that is best on all rows; and it is the
    lowest held-out logloss of the eligible candidates."""
    members, labels = members_of(scenario)
    first_half = metrics.split_halves(len(labels), 0)
    fitted = blend.fit_blend(members, labels, "select", first_half)
    best = blend.best_member(members, labels)
    # Both halves pick that member, so the single candidate's held-out logits are its logits.
    assert fitted.held_out_logloss["single"] == pytest.approx(
        logloss_of(labels, members[:, best]), rel=1e-12)
    assert logloss_of(labels, fitted.apply(members)) <= \
        logloss_of(labels, members[:, best]) + 1e-9
    for half in (first_half, ~first_half):
        assert logloss_of(labels[half], fitted.valid_logits[half]) <= \
            logloss_of(labels[half], members[half, best]) + 1e-12
    assert fitted.held_out_logloss[fitted.method] == pytest.approx(
        logloss_of(labels, fitted.valid_logits), rel=1e-12)
    eligible = fitted.guard["eligible"]
    assert fitted.method in eligible and "single" in eligible
    assert fitted.held_out_logloss[fitted.method] <= \
        min(fitted.held_out_logloss[name] for name in eligible) + blend.TIE
    expected = {"weak": "single", "identical": "single", "overconfident": "weighted"}
    assert fitted.method == expected.get(scenario, fitted.method)


def test_selection_is_deterministic_given_the_seed():
    """Bagged selection draws its member subsets from the seed: the same seed gives the same
    blend bit for bit, another seed other subsets."""
    members, labels = members_of("exact_mean", rows=6000)
    halves = metrics.split_halves(len(labels), 0)
    first, again = (blend.fit_blend(members, labels, "select", halves, bags=5, seed=7)
                    for _ in range(2))
    np.testing.assert_array_equal(first.weights, again.weights)
    np.testing.assert_array_equal(first.valid_logits, again.valid_logits)
    assert first.held_out_logloss == again.held_out_logloss
    bagged = [blend.selection_weights(members, labels, 20, bags=5,
                                      rng=np.random.default_rng(seed))[0] for seed in (1, 1, 2)]
    np.testing.assert_array_equal(bagged[0], bagged[1])
    assert not np.array_equal(bagged[0], bagged[2])
    assert all(weights.sum() == pytest.approx(1.0) for weights in bagged)
    plain = [blend.selection_weights(members, labels, 20)[0] for _ in range(2)]
    np.testing.assert_array_equal(*plain)
    assert plain[0][5] == 0  # without bags every pick may use all five good members


def test_identical_members_blend_to_that_member():
    members, labels = members_of("identical")
    counts, _ = blend.select_counts(members, labels, rounds=10)
    np.testing.assert_array_equal(counts, [1, 0, 0])  # no copy lowers the logloss
    for method in ("select", "weighted"):
        fitted = blend.fit_blend(members, labels, method, metrics.split_halves(len(labels), 0))
        assert fitted.method == "single" and fitted.bias == 0.0
        np.testing.assert_array_equal(fitted.weights, [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(fitted.valid_logits, members[:, 0])


def test_a_one_member_blend_is_that_member():
    members, labels = members_of("correlated", rows=4000)
    only = members[:, :1]
    for method in ("select", "weighted"):
        fitted = blend.fit_blend(only, labels, method, metrics.split_halves(len(labels), 0))
        assert fitted.method == "single" and fitted.bias == 0.0
        np.testing.assert_array_equal(fitted.weights, [1.0])
        np.testing.assert_array_equal(fitted.valid_logits, only[:, 0])
        assert fitted.held_out_logloss == {"single": pytest.approx(logloss_of(labels, only[:, 0]))}


def test_the_average_is_kept_over_the_single_member_only_if_it_is_better_on_both_halves():
    """Member b is nearly as good as member a on the first half and much noisier on the second:
    the average beats a overall but not on the second half, so it is not the fallback there."""
    logits, labels = logistic_data(20_000, seed=41)
    first_half = metrics.split_halves(len(labels), 0)
    rng = np.random.default_rng(42)
    a = logits + 0.5 * rng.standard_normal(len(labels))
    b = logits + np.where(first_half, 0.55, 1.0) * rng.standard_normal(len(labels))
    fitted = blend.fit_blend(np.column_stack([a, b]), labels, "weighted", first_half)
    average, single = fitted.half_logloss["average"], fitted.half_logloss["single"]
    assert fitted.held_out_logloss["average"] < fitted.held_out_logloss["single"]
    assert average[0] < single[0] and average[1] > single[1]
    assert fitted.guard["baseline"] == "single" and "average" not in fitted.guard["eligible"]


def test_blend_settings_are_checked_and_select_is_the_default():
    assert settings.BlendConfig().method == "select"
    assert settings.load_pipeline_config().ensemble.blends[0].method == "select"
    with pytest.raises(ValueError, match="rounds and bags must be >= 1"):
        settings.BlendConfig(rounds=0)
    with pytest.raises(ValueError, match="unknown method"):
        blend.fit_blend(np.zeros((4, 2)), np.array([0, 1, 0, 1]), "stack",
                        np.array([True, False] * 2))


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory):
    """Calibrated members of different quality (each sees the true logit with its own noise),
    built once per module; returns (artifacts root, validation labels)."""
    root = tmp_path_factory.mktemp("built") / "artifacts"
    logits, labels = logistic_data(7000, seed=21)
    rng = np.random.default_rng(22)
    valid, test = slice(0, 5000), slice(5000, None)
    with pytest.MonkeyPatch.context() as patch:
        use_artifacts(patch, root)
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
    # Every candidate's held-out logloss is recorded; the lowest eligible one was chosen.
    candidates = result["candidates"]
    assert set(candidates) == {"select", "weighted", "average", "single"}
    assert result["held_out_logloss"] == {name: row["held_out_logloss"]
                                          for name, row in candidates.items()}
    assert result["method"] == "select" == min(candidates, key=lambda name:
                                               candidates[name]["held_out_logloss"])
    assert all(len(row["half_logloss"]) == 2 for row in candidates.values())
    assert candidates["select"]["baseline"] == "single" and candidates["select"]["better"]
    assert result["valid_logloss"] == pytest.approx(candidates["select"]["held_out_logloss"])
    assert result["valid_logloss"] < best_member and result["in_sample_logloss"] < best_member
    assert result["weights"]["good"] > result["weights"]["poor"] >= 0 and result["bias"] == 0
    picks = result["selection"]["picks"]
    assert result["selection"]["rounds"] == 20 and sum(picks.values()) <= 20
    assert result["weights"] == {member: count / sum(picks.values())
                                 for member, count in picks.items()}
    valid = np.load(out / "valid.pred.npy")
    assert metrics.logloss(labels, valid) == pytest.approx(result["valid_logloss"], abs=1e-6)
    # The test predictions follow weights.json applied to the members' calibrated logits.
    saved = json.loads((out / "weights.json").read_text())
    members = np.column_stack([
        metrics.logit(np.load(stage_dir("t", "06_calibrate", member) / "test.pred.npy"))
        for member in saved["weights"]])
    expected = metrics.sigmoid(members @ np.array(list(saved["weights"].values())) + saved["bias"])
    np.testing.assert_allclose(np.load(out / "test.pred.npy"), expected, rtol=1e-5)
    assert saved["method"] == "select" and saved["requested_method"] == "select"
    assert saved["held_out_logloss"] == result["held_out_logloss"]
    assert saved["selection"]["picks"] == picks
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    # The report's blend row: the choice, each member's weight (largest first), the candidates.
    [row] = [line for line in report.render("t").splitlines() if line.startswith("| ens_logit |")]
    weights = ", ".join(f"{member} {weight:.2f}" for member, weight in
                        sorted(result["weights"].items(), key=lambda item: -item[1]))
    held_out = " / ".join(f"{candidates[name]['held_out_logloss']:.5f}"
                          for name in ("weighted", "average", "single", "select"))
    assert f"| select (06_calibrate) | {weights} | {result['valid_logloss']:.5f} |" in row
    assert f"| {held_out} |" in row and "poor 0." in row
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


def test_a_one_member_stage_blend_passes_its_member_through(three_models):
    blend.main(["--tag", "t", "--set", "ensemble.blends=[{name: solo, members: [good]}]"])
    out = stage_dir("t", "07_ensemble", "solo")
    result = json.loads((out / "metrics.json").read_text())
    assert result["method"] == "single" and result["single_member"] == "good"
    assert result["weights"] == {"good": 1.0} and result["bias"] == 0.0
    for split in ("valid", "test"):
        np.testing.assert_allclose(
            np.load(out / f"{split}.pred.npy"),
            np.load(stage_dir("t", "06_calibrate", "good") / f"{split}.pred.npy"), rtol=1e-6)
