"""The metric definitions of stages 05-08 and the report: logloss, AUC, the constant-prediction
reference and relative information gain (scikit-learn underneath), and the correction of
predictions trained on down-sampled negatives. Stage 05's learners and stages 06-07
(`ensembles/metrics.py` adds their calibration and blending tools) import them from here."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from pipeline import errors


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy in float64 (sklearn, which clips at float64 eps; the
    competition's metric)."""
    return float(log_loss(np.asarray(labels), np.asarray(probabilities, np.float64),
                          labels=[0, 1]))


def auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC, nan when the labels hold one class only."""
    labels = np.asarray(labels)
    if not 0 < labels.sum() < len(labels):
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(probabilities, np.float64)))


def logloss_and_auc(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    return logloss(labels, probabilities), auc(labels, probabilities)


def constant_logloss(labels: np.ndarray, rate: float) -> float:
    """Logloss of always predicting `rate` (the training click rate: the RIG reference)."""
    return logloss(labels, np.full(len(labels), rate, np.float64))


def relative_information_gain(labels: np.ndarray, probabilities: np.ndarray,
                              base_rate: float) -> float:
    """1 - logloss / logloss of always predicting `base_rate` (the training click rate)."""
    return 1.0 - logloss(labels, probabilities) / constant_logloss(labels, base_rate)


def correct_negative_sampling(probabilities: np.ndarray, rate: float) -> np.ndarray:
    """Undoes training on a fraction `rate` of the negatives: q = p / (p + (1 - p) / rate)."""
    if not 0 < rate <= 1:
        raise errors.InputError(f"negative_sampling_rate={rate}: must be in (0, 1]")
    probabilities = np.asarray(probabilities, np.float64)
    if rate == 1:  # nothing to undo: keep the values bit for bit
        return probabilities
    return probabilities / (probabilities + (1 - probabilities) / rate)
