"""Bayes scores: the true click probability scored as a prediction of the drawn labels (the best
any model can do on the data), streamed chunk by chunk as the writer draws the train rows."""

from __future__ import annotations

import numpy as np

AUC_MAX_ROWS = 4_000_000  # bigger sets are scored on evenly strided rows (sklearn needs ~50 B/row)


class Scores:
    """Click rate, Bayes logloss (all rows) and AUC (at most AUC_MAX_ROWS strided rows) of the
    train rows [start, stop)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop
        self.stride = -(-(stop - start) // AUC_MAX_ROWS)
        self.rows = self.positives = 0
        self.truth_sum = self.loss_sum = 0.0
        self.sampled_truth, self.sampled_labels = [], []

    def add(self, first_row: int, truth: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.metrics import log_loss
        low, high = max(self.start - first_row, 0), min(self.stop - first_row, len(truth))
        if low >= high:
            return
        truth, labels = truth[low:high], labels[low:high]
        self.rows += len(truth)
        self.positives += int(labels.sum())
        self.truth_sum += float(truth.sum(dtype=np.float64))
        self.loss_sum += log_loss(labels, truth.astype(np.float64), normalize=False, labels=[0, 1])
        offset = (-(first_row + low - self.start)) % self.stride
        self.sampled_truth.append(truth[offset::self.stride].copy())  # copies free the chunk
        self.sampled_labels.append(labels[offset::self.stride].copy())

    def summary(self) -> dict:
        from sklearn.metrics import roc_auc_score
        labels = np.concatenate(self.sampled_labels)
        auc = (float(roc_auc_score(labels, np.concatenate(self.sampled_truth)))
               if 0 < labels.sum() < len(labels) else None)
        return {"rows": self.rows, "click_rate": self.positives / self.rows,
                "mean_truth": self.truth_sum / self.rows,
                "bayes_logloss": self.loss_sum / self.rows, "bayes_auc": auc,
                "auc_rows": len(labels)}


def describe(summary: dict) -> str:
    """Two lines of a truth summary: click rate and Bayes logloss/AUC of train and valid."""
    lines = []
    for split in ("train", "valid"):
        scores = summary["bayes"][split]
        auc = "n/a (one class)" if scores["bayes_auc"] is None else f"{scores['bayes_auc']:.4f}"
        lines.append(f"  {split}: {scores['rows']:,} rows, click rate {scores['click_rate']:.4f}, "
                     f"Bayes logloss {scores['bayes_logloss']:.4f}, Bayes AUC {auc}")
    return "\n".join(lines)
