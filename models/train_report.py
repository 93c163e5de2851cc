"""Runner outputs besides predictions: history.csv, the learning curve, TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path

import keras

HISTORY_COLUMNS = ("steps", "examples", "epoch", "train_logloss", "valid_logloss", "valid_auc",
                   "train_seconds")


def write_history(history: list[dict], path: Path) -> None:
    """One row per evaluation, columns `HISTORY_COLUMNS`."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


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
    """TensorBoard scalars via tf.summary when the backend is TensorFlow; a no-op otherwise
    (importing TensorFlow into a JAX run only for logging is not worth its memory).

    Uses the low-level `tf.summary.write` with the "scalars" plugin metadata, which is what
    `tf.summary.scalar` writes, because that wrapper needs the `tensorboard` package installed.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.writer = None
        self.metadata = None
        self.enabled = keras.backend.backend() == "tensorflow"

    def scalars(self, step: int, **values) -> None:
        if not self.enabled:
            return
        import tensorflow as tf

        if self.writer is None:
            from tensorflow.core.framework import summary_pb2

            self.writer = tf.summary.create_file_writer(str(self.directory))
            self.metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32),
                                 metadata=self.metadata.SerializeToString())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
