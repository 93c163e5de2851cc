"""Runner outputs besides predictions: metrics, history.csv, the learning curve, TensorBoard.

Free of Keras and TensorFlow, so the GBDT and libFFM learners can share the metric definitions.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

HISTORY_COLUMNS = ("steps", "examples", "epoch", "train_logloss", "valid_logloss", "valid_auc",
                   "train_seconds")


def logloss_and_auc(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """float64 logloss (sklearn clips at float64 eps) and AUC (nan if one class only)."""
    labels = np.asarray(labels)
    probabilities = np.asarray(predictions, np.float64)
    loss = float(log_loss(labels, probabilities, labels=[0, 1]))
    auc = float(roc_auc_score(labels, probabilities)) if 0 < labels.sum() < len(labels) \
        else float("nan")
    return loss, auc


def constant_logloss(labels: np.ndarray, rate: float) -> float:
    """Logloss of always predicting the training label rate (the RIG reference)."""
    return float(log_loss(labels, np.full(len(labels), rate, np.float64), labels=[0, 1]))


def write_history(history: list[dict], path: Path, columns=HISTORY_COLUMNS) -> None:
    """history.csv of every learner: one row per evaluation (the runner), round (GBDT) or epoch
    (libFFM); `columns`: their order (None: the first row's keys)."""
    if history:
        pd.DataFrame(history, columns=list(columns) if columns else None).to_csv(
            path, index=False, lineterminator="\r\n")  # as the csv module wrote it


def plot_learning_curve(history: list[dict], path: Path, title: str) -> None:
    """Train and validation logloss against examples seen (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4), dpi=100)
    examples = [row["examples"] for row in history]
    train = [(row["examples"], row["train_logloss"]) for row in history
             if row["train_logloss"] is not None]
    if train:
        axes.plot(*zip(*train), marker="o", label="train (mean since previous point)")
    axes.plot(examples, [row["valid_logloss"] for row in history], marker="o", label="validation")
    axes.set_xlabel("examples seen")
    axes.set_ylabel("logloss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


class SummaryWriter:
    """TensorBoard scalars, viewed with `tensorboard --logdir artifacts/TAG/05_train`.

    Writes the event file itself with the `tensorboard` package's protos and record writer
    (`simple_value` scalars, what the scalars dashboard reads), not through tf.summary: JAX runs
    log too, also on machines without TensorFlow, and no TensorFlow is loaded into them.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.records = None

    def scalars(self, step: int, **values) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        if self.records is None:
            from tensorboard.summary.writer.record_writer import RecordWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
            self.records = RecordWriter(open(self.directory / name, "wb"))  # noqa: SIM115
            self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=name, simple_value=float(value))
            for name, value in values.items()])
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _write(self, event) -> None:
        self.records.write(event.SerializeToString())
        self.records.flush()  # a few events per evaluation: a live `tensorboard` sees them

    def close(self) -> None:
        if self.records is not None:
            self.records.close()
            self.records = None
