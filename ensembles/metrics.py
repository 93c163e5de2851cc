"""The metrics and tools of stages 06-07 and the report: expected calibration error and the
reliability diagram, the logit transforms that calibration and blending work in, held-out
comparisons and logistic fits. Logloss, AUC and relative information gain are defined once in
`pipeline/metrics.py` (stage 05 uses them too) and are importable from here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import expit

from pipeline import figures
from pipeline.metrics import auc, logloss, relative_information_gain  # noqa: F401

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before taking logits: float32 sigmoids
# saturate to exactly 0 or 1, and float32 resolves about 6e-8 next to 1.
EPSILON = 1e-7


def logit(probabilities: np.ndarray) -> np.ndarray:
    """float64 log(p / (1 - p)), p clipped to [EPSILON, 1 - EPSILON]."""
    clipped = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return expit(np.asarray(logits, np.float64))


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int):
    """Equal-count bins over the sorted predictions (CTRs crowd near 0, so equal-width bins
    would leave most bins empty). Returns (mean prediction [K], click rate [K], rows [K])."""
    if bins < 1:
        raise ValueError(f"bins={bins}: need at least one bin")
    order = np.argsort(np.asarray(probabilities, np.float64), kind="stable")
    groups = [group for group in np.array_split(order, bins) if len(group)]
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels, np.float64)
    mean_prediction = np.array([probabilities[group].mean() for group in groups])
    click_rate = np.array([labels[group].mean() for group in groups])
    rows = np.array([len(group) for group in groups])
    return mean_prediction, click_rate, rows


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = 20) -> float:
    """Row-weighted mean |click rate - mean prediction| over `reliability_bins`."""
    mean_prediction, click_rate, rows = reliability_bins(labels, probabilities, bins)
    return float(np.sum(rows * np.abs(click_rate - mean_prediction)) / rows.sum())


def plot_reliability(labels, curves: dict, path: Path, title: str, bins: int = 20) -> None:
    """Reliability diagram (PNG): click rate against mean prediction in equal-count bins, one
    line per entry of `curves` ({name: probabilities [N]}), log-log so low CTRs are readable."""
    figure, axes = figures.pyplot().subplots(figsize=(5, 5), dpi=100)
    low, high = 1.0, 0.0
    for name, probabilities in curves.items():
        mean_prediction, click_rate, _ = reliability_bins(labels, probabilities, bins)
        ece = expected_calibration_error(labels, probabilities, bins)
        axes.plot(mean_prediction, click_rate, marker="o", markersize=3,
                  label=f"{name} (ECE {ece:.4f})")
        low, high = min(low, mean_prediction.min()), max(high, mean_prediction.max())
    low, high = max(low / 1.5, 1e-6), min(high * 1.5, 1.0)
    axes.plot([low, high], [low, high], color="grey", linestyle="--", label="perfect calibration")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"mean prediction ({bins} equal-count bins)")
    axes.set_ylabel("click rate")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figures.save_figure(figure, path)


def summary(labels: np.ndarray, probabilities: np.ndarray, base_rate: float,
            bins: int = 20) -> dict:
    """The metrics every stage writes to metrics.json for one set of validation predictions."""
    return {"valid_logloss": logloss(labels, probabilities),
            "valid_auc": auc(labels, probabilities),
            "relative_information_gain": relative_information_gain(labels, probabilities,
                                                                   base_rate),
            "expected_calibration_error": expected_calibration_error(labels, probabilities, bins),
            "mean_prediction": float(np.mean(probabilities)),
            "click_rate": float(np.mean(labels))}


# A fitted method or blend must beat its baseline on both held-out halves and by this many standard
# errors of the mean per-row logloss gain (about a 2% one-sided chance of a pure-noise win).
MIN_GAIN_Z = 2.0


def split_halves(rows: int, seed: int) -> np.ndarray:
    """bool [rows], True for a random half of the rows (the other half False)."""
    mask = np.zeros(rows, bool)
    mask[np.random.default_rng(seed).permutation(rows)[:rows // 2]] = True
    return mask


def row_logloss(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """float64 [N] per-row cross-entropy (clipped at 1e-15 like sklearn's log_loss)."""
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-15, 1 - 1e-15)
    return -np.where(np.asarray(labels) == 1, np.log(probabilities), np.log1p(-probabilities))


def held_out_comparison(labels: np.ndarray, candidate: np.ndarray, baseline: np.ndarray,
                        first_half: np.ndarray) -> dict:
    """Compares two sets of out-of-half predictions [N] (each half predicted by a fit on the
    other half). Returns {"half_logloss", "baseline_half_logloss", "gain_z", "better"}:
    `better` when the candidate wins on both halves and its mean per-row gain is at least
    MIN_GAIN_Z standard errors."""
    gain = row_logloss(labels, baseline) - row_logloss(labels, candidate)
    halves = (first_half, ~first_half)
    candidate_halves = [logloss(labels[half], candidate[half]) for half in halves]
    baseline_halves = [logloss(labels[half], baseline[half]) for half in halves]
    spread = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
    z_score = float(gain.mean() / spread) if spread > 0 else 0.0
    better = all(c < b for c, b in zip(candidate_halves, baseline_halves)) and \
        z_score >= MIN_GAIN_Z
    return {"half_logloss": candidate_halves, "baseline_half_logloss": baseline_halves,
            "gain_z": z_score, "better": bool(better)}


def fit_logistic(features: np.ndarray, labels: np.ndarray, offset: np.ndarray | None = None,
                 nonnegative: np.ndarray | None = None) -> np.ndarray:
    """Coefficients c [K] minimising the logloss of sigmoid(features @ c + offset).

    Args:
        features: float64 [N, K] (a column of ones gives an intercept).
        labels: [N] 0/1.
        offset: optional fixed logits [N] added to the linear part.
        nonnegative: optional bool [K], coefficients constrained to be >= 0.
    Convex, solved by L-BFGS-B with the exact gradient; unregularised on purpose (few
    coefficients, many rows).
    """
    from scipy.optimize import minimize

    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.float64)
    offset = np.zeros(len(labels)) if offset is None else np.asarray(offset, np.float64)
    rows = len(labels)

    def loss_and_gradient(coefficients):
        logits = features @ coefficients + offset
        loss = np.sum(np.logaddexp(0.0, logits) - labels * logits) / rows
        return loss, features.T @ (expit(logits) - labels) / rows

    start = np.zeros(features.shape[1])
    bounds = None
    if nonnegative is not None:
        bounds = [(0.0, None) if flag else (None, None) for flag in nonnegative]
        start[np.asarray(nonnegative)] = 1.0 / max(int(np.sum(nonnegative)), 1)
    result = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 500, "gtol": 1e-9})
    if not np.all(np.isfinite(result.x)):
        raise ValueError(f"logistic fit diverged: {result.message}")
    return result.x
