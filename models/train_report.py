"""Training outputs besides predictions: history.csv, the learning curve, TensorBoard events.

Free of Keras and TensorFlow: the publisher of every learner (`models/learner.py`) uses them.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd

from pipeline import figures

# The x axis of a learning curve: the first of these keys a history row has.
CURVE_AXES = (("examples", "examples seen"), ("epoch", "epoch"), ("round", "boosting round"))


def write_history(history: list[dict], path: Path) -> None:
    """history.csv of every learner: one row per evaluation (Keras), epoch (libFFM) or boosting
    round (GBDT), the columns in the order of the first row's keys."""
    if history:
        pd.DataFrame(history).to_csv(path, index=False,
                                     lineterminator="\r\n")  # as the csv module wrote it


def plot_learning_curve(history: list[dict], path: Path, title: str) -> None:
    """Train and validation logloss against examples seen, epochs or rounds (PNG)."""
    key, label = next(axis for axis in CURVE_AXES if axis[0] in history[0])
    figure, axes = figures.pyplot().subplots(figsize=(6, 4), dpi=100)
    train = [(row[key], row["train_logloss"]) for row in history
             if row.get("train_logloss") is not None]
    if train:
        axes.plot(*zip(*train), marker="o", label="train (mean since previous point)")
    axes.plot([row[key] for row in history], [row["valid_logloss"] for row in history],
              marker="o", label="validation")
    axes.set_xlabel(label)
    axes.set_ylabel("logloss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figures.save_figure(figure, path)


class SummaryWriter:
    """TensorBoard scalars, viewed with `tensorboard --logdir artifacts/TAG/05_train`.

    Writes the event file itself with the `tensorboard` package's protos and record writer
    (`simple_value` scalars, what the scalars dashboard reads), not through tf.summary: JAX runs
    log too, also on machines without TensorFlow, and no TensorFlow is loaded into them.
    """

    def __init__(self, directory: Path, enabled: bool = True):
        self.directory = Path(directory)
        self.enabled = enabled
        self.records = None

    def scalars(self, step: int, **values) -> None:
        if not self.enabled:
            return
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
