"""Stages 06 (calibrate) and 07 (ensemble), and the results report.

Every prediction folder (`05_train/<id>/`, `06_calibrate/<id>/`, `07_ensemble/<name>/`) holds
`valid.pred.npy` and `test.pred.npy`: float32 click probabilities in the row order of the
validation and test splits of `03_hash/`, and a `metrics.json` with at least `valid_logloss`,
`valid_auc` and `relative_information_gain`. `read_predictions` is the one reader of that contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import errors

PREDICTION_FILE = "{split}.pred.npy"


def read_predictions(directory: Path, split: str, rows: int) -> np.ndarray:
    """float64 [rows] probabilities of `split` in `directory`; ValueError names the file."""
    path = Path(directory) / PREDICTION_FILE.format(split=split)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; rebuild the stage that writes it")
    predictions = np.load(path).astype(np.float64)
    if predictions.shape != (rows,):
        raise errors.InputError(f"{path}: shape {predictions.shape}, the {split} split has {rows} rows")
    bad = ~np.isfinite(predictions) | (predictions < 0) | (predictions > 1)
    if bad.any():
        row = int(np.argmax(bad))
        raise errors.InputError(f"{path}: {int(bad.sum())} values are not probabilities in [0, 1] "
                         f"(first at row {row}: {predictions[row]})")
    return predictions


def write_predictions(directory: Path, split: str, probabilities: np.ndarray) -> None:
    np.save(Path(directory) / PREDICTION_FILE.format(split=split),
            np.asarray(probabilities, np.float32))
