"""The binary engine (`train.engine: binary`): the real libffm `ffm-train` / `ffm-predict`, found
on the PATH, on the stage's libFFM text files; the history is read from ffm-train's log.

ffm-train converts its inputs to `<file name>.bin` in its working directory: it runs in the
run's temporary cache folder, so they go when the run ends. It shuffles rows with its own
unseeded generator (always: it has no option to keep the file order, nor a seed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from models.libffm.config import LibffmConfig
from models.libffm.rows import convert_text
from models.libffm.trainer import FitResult
from pipeline.paths import stage_dir


def binary_commands(config: LibffmConfig, directory: Path, out: Path) -> list[list[str]]:
    """The ffm-train / ffm-predict command lines for the binary engine."""
    model, train = config.model, config.train
    unsupported = [name for name, value, default in (
        ("model.init_scale", model.init_scale, 1.0),
        ("model.normalization_scale", model.normalization_scale, 1.0),
        ("train.max_train_rows", train.max_train_rows, None),
        ("train.max_valid_rows", train.max_valid_rows, None),
        ("train.shuffle", train.shuffle, True)) if value != default]
    if unsupported:
        raise ValueError(f"train.engine=binary: ffm-train has no equivalent of {unsupported}")
    if config.data.format != "text":
        raise ValueError("train.engine=binary reads libFFM text: set data.format=text")
    command = ["ffm-train", "-k", str(model.k), "-t", str(train.epochs), "-r",
               str(train.learning_rate), "-l", str(train.l2), "-s",
               str(train.threads or os.cpu_count()), "-p", str(directory / "valid.ffm")]
    command += ["--auto-stop"] if train.auto_stop else []
    command += ["--no-norm"] if model.normalization == "none" else []
    command += [str(directory / "train.ffm"), str(out / "model.txt")]
    predicts = [["ffm-predict", str(directory / f"{split}.ffm"), str(out / "model.txt"),
                 str(out / f"{split}.out")] for split in ("valid", "test")]
    return [command] + predicts


def run_binary(tag: str, config: LibffmConfig, out: Path, cache: Path):
    """Runs the real libffm on the text files; returns what `run_numba` does (the history from
    ffm-train's log)."""
    directory = stage_dir(tag, config.data.stage).resolve()  # ffm-train runs in cache
    out = out.resolve()
    for program in ("ffm-train", "ffm-predict"):
        if shutil.which(program) is None:
            raise FileNotFoundError(f"train.engine=binary: {program} is not on the PATH")
    commands = binary_commands(config, directory, out)
    started = time.perf_counter()
    log = subprocess.run(commands[0], check=True, capture_output=True, text=True,
                         cwd=cache).stdout
    seconds = time.perf_counter() - started
    print(log, end="")
    for command in commands[1:]:
        subprocess.run(command, check=True, capture_output=True)
    predictions = {split: np.loadtxt(out / f"{split}.out", dtype=np.float32, ndmin=1)
                   for split in ("valid", "test")}
    for split in ("valid", "test"):
        (out / f"{split}.out").unlink()
    history = [{"epoch": int(epoch), "train_logloss": float(train_loss),
                "valid_logloss": float(valid_loss)}
               for epoch, train_loss, valid_loss in
               re.findall(r"^\s*(\d+)\s+([0-9.naif-]+)\s+([0-9.naif-]+)", log, re.MULTILINE)]
    stopped = "Auto-stop" in log
    with open(directory / "train.ffm", "rb") as handle:
        rows = sum(1 for _ in handle)
    epochs = len(history)
    result = FitResult(history, epochs - 1 if stopped else epochs, stopped, seconds,
                       rows * epochs)
    valid_labels = convert_text(directory / "valid.ffm", cache).labels
    threads = int(commands[0][commands[0].index("-s") + 1])
    return predictions, valid_labels, result, {"train_rows": rows, "threads": threads}
