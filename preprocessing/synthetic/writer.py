"""The files: train.txt/test.txt and their truth arrays streamed chunk by chunk, then truth.json;
all under temporary names until every file is complete."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from preprocessing.synthetic import bayes, kernels, laws, planted

VALID_FRACTION = 1 / 7  # the pipeline's default validation split (the last "day")
DEFAULT_SEED = 2014
DEFAULT_CHUNK_ROWS = 1 << 17
# truth.json's "generator": the name it has always had, so that the same seed and sizes still
# give byte-identical files.
GENERATOR_NAME = "preprocessing/synthetic.py"


def write_file(inputs: kernels.KernelInputs, bias: float, file: str, rows: int, chunk_rows: int,
               text_path: Path, truth_path: Path, scores: list[bayes.Scores]) -> None:
    """Streams one file (text + truth) chunk by chunk; train chunks also feed `scores`."""
    with open(text_path, "wb") as text, open(truth_path, "wb") as truth_file:
        np.lib.format.write_array_header_1_0(
            truth_file, {"descr": "<f4", "fortran_order": False, "shape": (rows,)})
        for start in range(0, rows, chunk_rows):
            row_ids = np.arange(start, min(start + chunk_rows, rows), dtype=np.int64)
            sample = kernels.sample_rows(inputs, row_ids, rows)
            truth = planted.click_probability(sample.logits, sample.days, bias)
            labels = None
            if file == "train":
                labels = (sample.label_uniforms < truth).astype(np.uint8)
                for score in scores:
                    score.add(start, truth, labels)
            text.writelines(kernels.format_blocks(labels, sample.ints, sample.int_missing,
                                                  sample.tokens, sample.cat_missing))
            truth_file.write(truth.tobytes())


def generate(out_dir, train_rows: int, test_rows: int, seed: int = DEFAULT_SEED,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """Writes train.txt, test.txt, {train,test}.truth.npy and truth.json into `out_dir`.

    Every file is written under a temporary name and renamed once all are complete. Prints the
    click rates and Bayes scores and returns the truth summary (the content of truth.json).
    """
    if train_rows < 7 or test_rows < 1 or chunk_rows < 1:
        raise ValueError(f"synthetic data needs train_rows >= 7 (got {train_rows}), test_rows >= 1 "
                         f"(got {test_rows}) and chunk_rows >= 1 (got {chunk_rows})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_inputs = kernels.kernel_inputs(seed, "train")
    test_inputs = kernels.kernel_inputs(seed, "test")
    pilot = kernels.sample_rows(train_inputs, planted.pilot_rows(train_rows), train_rows)
    bias = planted.solve_bias(pilot.logits, pilot.days)
    names = ("train.txt", "train.truth.npy", "test.txt", "test.truth.npy", "truth.json")
    temporary = {name: out_dir / f".{name}.tmp-{os.getpid()}" for name in names}
    try:
        valid_start = train_rows - round(train_rows * VALID_FRACTION)
        scores = [bayes.Scores(0, train_rows), bayes.Scores(valid_start, train_rows)]
        write_file(train_inputs, bias, "train", train_rows, chunk_rows, temporary["train.txt"],
                   temporary["train.truth.npy"], scores)
        write_file(test_inputs, bias, "test", test_rows, chunk_rows, temporary["test.txt"],
                   temporary["test.truth.npy"], [])
        test_truth = np.load(temporary["test.truth.npy"], mmap_mode="r")
        test_mean = float(np.mean(test_truth, dtype=np.float64))
        summary = {
            "generator": GENERATOR_NAME, "seed": seed,
            "rows": {"train": train_rows, "test": test_rows},
            "target_click_rate": laws.TARGET_CLICK_RATE,
            "bayes": {"train": scores[0].summary(), "valid": scores[1].summary(),
                      "test": {"rows": test_rows, "mean_truth": test_mean}},
            "planted": planted.summary(seed, bias),
        }
        temporary["truth.json"].write_text(json.dumps(summary, indent=1) + "\n")
        for name in names:
            os.replace(temporary[name], out_dir / name)
    finally:
        for path in temporary.values():
            path.unlink(missing_ok=True)
    print(bayes.describe(summary))
    return summary
