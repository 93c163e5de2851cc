"""Training throughput on a GPU with KERAS_BACKEND=jax (no TensorFlow): IPNN, KPNN-vec, PIN, FFM.

    KERAS_BACKEND=jax python bench/gpu.py [--models ipnn kpnn_vec pin ffm]
        [--batch-sizes 2000 4096 8192 16384] [--precisions float32 mixed_bfloat16]
        [--steps 50] [--scale 1.0] [--rows 400000] [--distinct-batches 8]
        [--set model.hidden_units=[16]] [--json]

`bench/gpu.sh` sets up such a machine (Keras from carried wheels) and runs this. Models are the
paper's Criteo settings (`configs/models/<id>.yaml`, preset paper: k = 20, FFM k = 4, MLP 700 x 5
with layer norm) on bench/train.py's synthetic 39-field spec (~1M ids at scale 1). Data is made
here: random ids written in the field-file layout (`train.fields.npy`, int32 [rows, 39], and
`train.labels.npy`) and read back through a memmap by the runner's `data.epoch_batches`.

Two rates per (model, batch size, precision), since the runner runs them side by side (a prefetch
thread prepares batches while the device trains) and trains at the lower of the two:
- step: examples/s of the runner's sparse-update JAX step (`models/engine/jax_step.py`) over
  batches prepared beforehand; every batch shape is compiled before timing;
- input: examples/s of one thread preparing those batches (read, shuffle, np.unique).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import numpy as np

from bench.train import random_ids, synthetic_spec
from models import data, optimizers, precision, registry
from models.runner_config import CONFIG_DIR, load_runner_config
from models.engine import create_train_step, tune_memory_allocator

MODEL_IDS = ("ipnn", "kpnn_vec", "pin", "ffm")
BATCH_SIZES = (2000, 4096, 8192, 16384)


def write_field_files(directory: Path, spec, rows: int, seed: int = 0) -> tuple:
    """Random ids (bench/train.random_ids) as memory-mapped field files; returns (fields, labels)."""
    fields = np.lib.format.open_memmap(directory / "train.fields.npy", "w+", np.int32,
                                       (rows, spec.num_fields))
    labels = np.lib.format.open_memmap(directory / "train.labels.npy", "w+", np.uint8, (rows,))
    chunk = 100_000
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        fields[start:stop] = random_ids(spec, stop - start, seed + start)
        labels[start:stop] = np.random.default_rng([seed, start]).random(stop - start) < 0.25
    fields.flush()
    labels.flush()
    return (np.load(directory / "train.fields.npy", mmap_mode="r"),
            np.load(directory / "train.labels.npy", mmap_mode="r"))


def prepare_batches(fields, labels, batch_size: int, num_fields: int,
                    count: int) -> tuple[list, float]:
    """`count` padded batches from the field files and one thread's examples/s."""
    stream = data.epoch_batches(fields, labels, batch_size, block_rows=batch_size * 16, seed=0,
                                epoch=0, pad_limit=batch_size * num_fields)
    started = time.perf_counter()
    batches = [batch for batch in itertools.islice(stream, count)
               if batch.rows == batch_size]
    if not batches:
        raise ValueError(f"--rows {len(fields)}: fewer rows than one batch of {batch_size}")
    return batches, sum(batch.rows for batch in batches) / (time.perf_counter() - started)


def bench_one(model_id: str, spec, batches: list, precision_name: str, steps: int,
              overrides=()) -> dict:
    """Examples/s of the sparse-update step for one configuration (compiled shapes warmed)."""
    path = CONFIG_DIR / f"{model_id}.yaml"
    known = set(registry.hyperparameters(load_runner_config(path, "paper").arch))
    config = load_runner_config(path, "paper", [  # model keys of other models are skipped
        override for override in overrides if not override.startswith("model.")
        or override.split("=", 1)[0].split(".")[1] in known])
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(config.train.seed)
    with precision.dtype_policy(precision_name):
        model = registry.build(config.arch, spec, **config.hyperparameters)
        model(np.zeros((1, spec.num_fields), np.int32))  # creates the weights
    train = config.train
    settings = optimizers.OptimizerSettings(train.optimizer, train.learning_rate,
                                            train.adam_beta_1, train.adam_beta_2,
                                            train.adam_epsilon, train.adagrad_initial_accumulator)
    step = create_train_step(model, settings, train.loss_reduction, train.jit_compile,
                             train.eval_batch_size)
    started = time.perf_counter()
    for batch in batches:  # compiles every padded shape
        loss = step.step(batch)
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for index in range(steps):
        loss = step.step(batches[index % len(batches)])
    seconds = time.perf_counter() - started
    if not np.isfinite(loss):
        raise FloatingPointError(f"{model_id} {precision_name}: loss {loss}")
    return {"model": model_id, "batch_size": len(batches[0].labels), "precision": precision_name,
            "examples_per_second": steps * len(batches[0].labels) / seconds,
            "parameter_count": int(model.count_params()), "warmup_seconds": compile_seconds,
            "last_loss": float(loss)}


def describe_devices() -> str:
    import jax

    return f"jax {jax.__version__}, keras {keras.__version__}, devices {jax.devices()}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_IDS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=precision.PRECISIONS)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per configuration")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="vocabulary scale of the synthetic spec (1: ~1M ids, as Criteo)")
    parser.add_argument("--rows", type=int, default=400_000, help="rows of generated data")
    parser.add_argument("--distinct-batches", type=int, default=8,
                        help="batches prepared per batch size and cycled while timing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model-config override, e.g. model.hidden_units=[16] (CI sizes)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        raise SystemExit(f"bench/gpu.py: KERAS_BACKEND=jax expected, got {keras.backend.backend()}")
    tune_memory_allocator()
    print(f"# {describe_devices()}", flush=True)
    spec = synthetic_spec(args.scale)
    with tempfile.TemporaryDirectory(prefix="criteo-pnn-gpu-bench-") as directory:
        fields, labels = write_field_files(Path(directory), spec, args.rows)
        for batch_size in args.batch_sizes:
            batches, input_rate = prepare_batches(fields, labels, batch_size, spec.num_fields,
                                                  args.distinct_batches)
            for model_id, precision_name in itertools.product(args.models, args.precisions):
                result = bench_one(model_id, spec, batches, precision_name, args.steps, args.set)
                result["input_examples_per_second"] = input_rate
                if args.json:
                    print(json.dumps(result), flush=True)
                    continue
                print(f"{model_id:9s} batch {batch_size:6d} {precision_name:15s} "
                      f"step {result['examples_per_second']:11,.0f} ex/s   "
                      f"input (1 thread) {input_rate:11,.0f} ex/s   "
                      f"({result['parameter_count']:,} parameters, "
                      f"warm-up {result['warmup_seconds']:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
