"""libFFM trainer speed: seconds per epoch and rows/s per thread on generated field data.

    python bench/libffm.py                                   # 2M rows, 39 fields
    python bench/libffm.py --rows 10000000 --fields 69       # the issue's figure
    python bench/libffm.py --threads 1 2 --json
    python bench/libffm.py --max-field-size 100    # a cache-resident model: compute-bound speed

Rows have one id per field, Zipf-distributed (frequency ~ 1/rank, as categorical CTR data) over
the per-field sizes of the winners' 69-field files (research notes §1.4: 1,010,469 ids in all), so
the model (n·m·k weights plus AdaGrad state, 2.2 GB at 69 fields) and its cache behaviour are
Criteo-sized. The kernels are compiled (and
cached) on a small warm-up set first; timings cover the training epochs only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from models import libffm

# Per-field sizes of the winners' 69 fields (I1..I13, C1..C26, 30 trees).
CRITEO_FIELD_SIZES = [63, 113, 126, 51, 224, 149, 100, 80, 104, 9, 32, 58, 82,
                      1457, 555, 176373, 129683, 305, 19, 11887, 632, 3, 41738, 5170, 175446,
                      3170, 27, 11356, 165602, 10, 4641, 2030, 4, 172761, 18, 15, 57903, 86,
                      44549] + [128] * 30


def generate(rows: int, num_fields: int, max_field_size: int | None = None, seed: int = 0):
    """(FieldRows with int32 global ids [rows, F] (local id r drawn with probability ~ 1/(r + 1))
    and random labels, total ids)."""
    rng = np.random.default_rng(seed)
    sizes = [min(CRITEO_FIELD_SIZES[field % len(CRITEO_FIELD_SIZES)], max_field_size or 1 << 30)
             for field in range(num_fields)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ids = np.empty((rows, num_fields), np.int32)
    for field, (size, offset) in enumerate(zip(sizes, offsets)):
        ranks = np.exp(np.log(size + 1) * rng.random(rows)).astype(np.int32) - 1
        ids[:, field] = offset + np.minimum(ranks, size - 1)
    labels = (rng.random(rows) < 0.25).astype(np.uint8)
    return libffm.FieldRows(ids, labels), int(sum(sizes))


def run(rows: int, num_fields: int, threads: int, epochs: int, block_rows: int,
        max_field_size: int | None = None) -> dict:
    data, vocabulary = generate(rows, num_fields, max_field_size)
    model = libffm.ModelConfig()
    train = libffm.TrainConfig(threads=threads, shuffle_block_rows=block_rows)
    state = libffm.initial_state(vocabulary, num_fields, model, seed=0)
    numba.set_num_threads(threads)
    libffm.train_epoch(state, data.take(0, 1000), model, train, epoch=0)  # compile / load cache
    seconds, cpu_seconds = [], []
    for epoch in range(1, epochs + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        libffm.train_epoch(state, data, model, train, epoch)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    started = time.perf_counter()
    data.predict(state, model)
    predict_seconds = time.perf_counter() - started
    epoch_seconds = float(np.median(seconds))
    return {"rows": rows, "fields": num_fields, "threads": threads,
            "model_gb": state.nbytes / 1e9, "seconds_per_epoch": epoch_seconds,
            "rows_per_second": rows / epoch_seconds,
            "rows_per_second_per_thread": rows / epoch_seconds / threads,
            # CPU time counts only the cycles this process got: on a shared machine it shows
            # the per-thread speed an uncontended run would reach.
            "rows_per_cpu_second": rows / float(np.median(cpu_seconds)),
            "predict_rows_per_second": rows / predict_seconds,
            "criteo_epoch_seconds_estimate": 45_840_617 / (rows / epoch_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--fields", type=int, default=39)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs (median reported)")
    parser.add_argument("--block-rows", type=int, default=1 << 20, help="shuffle_block_rows")
    parser.add_argument("--max-field-size", type=int, help="cap every field's ids (a model that "
                        "fits in cache: the compute-bound speed)")
    parser.add_argument("--json", action="store_true", help="one JSON object per thread count")
    args = parser.parse_args()
    for threads in args.threads:
        result = run(args.rows, args.fields, threads, args.epochs, args.block_rows,
                     args.max_field_size)
        if args.json:
            print(json.dumps(result))
            continue
        print(f"{result['rows']:,} rows x {result['fields']} fields, {threads} thread(s), "
              f"model {result['model_gb']:.2f} GB: {result['seconds_per_epoch']:.1f} s/epoch, "
              f"{result['rows_per_second']:,.0f} rows/s "
              f"({result['rows_per_second_per_thread']:,.0f} per thread, "
              f"{result['rows_per_cpu_second']:,.0f} per CPU second); predict "
              f"{result['predict_rows_per_second']:,.0f} rows/s; a 45.8M-row Criteo epoch "
              f"~{result['criteo_epoch_seconds_estimate']:,.0f} s")


if __name__ == "__main__":
    main()
