"""Training throughput (examples/s) of every model with the runner's sparse-update step.

    python bench/train.py [--json] [--models ipnn ffm ...] [--steps 20] [--presets paper demo]
                          [--set train.jit_compile=true]

Random ids, no pipeline: a synthetic 39-field spec shaped like hashed Criteo (13 small integer
fields, 26 categorical fields, ~1M ids in all for `paper`, ~60k for `demo`), ids drawn log-uniformly
within each field so batches repeat popular ids as real data does. Batches are prepared by the
runner's prefetch thread, as in training. For IPNN it also times, in the same process, a plain
Keras 3 `model.fit` of the same network with the stock Adam and prints the ratio, and a plain fit
of its MLP alone on random inputs of the MLP's width (no embeddings: a bound for any IPNN step).
With --json: one JSON object per model and preset.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
import numpy as np

from models import data, optimizers, registry
from models.layers.mlp import MLP
from models.runner_config import CONFIG_DIR, load_runner_config
from models.stage import learner
from models.train_step import create_train_step, tune_memory_allocator
from preprocessing.field_spec import Field, FieldSpec

# Categorical vocabulary sizes of hashed Criteo with min_count 10 (scaled per preset).
CRITEO_CATEGORICAL_SIZES = (1445, 553, 175781, 128509, 306, 19, 11931, 634, 4, 42645, 5177,
                            156883, 3175, 27, 11254, 165206, 11, 4605, 2017, 4, 172322, 18, 16,
                            56456, 86, 43356)
INTEGER_FIELD_SIZE = 60  # log^2 bins of one integer column, plus the reserved ids
PRESET_SCALES = {"paper": 1.0, "demo": 0.05}


def synthetic_spec(scale: float) -> FieldSpec:
    sizes = [INTEGER_FIELD_SIZE] * 13 + [max(4, int(size * scale)) for size in
                                         CRITEO_CATEGORICAL_SIZES]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    fields = tuple(Field(f"F{index}", "int" if index < 13 else "cat", size, int(offset))
                   for index, (size, offset) in enumerate(zip(sizes, offsets)))
    return FieldSpec(fields=fields, rows={}, hashing={}, min_count={}, label_rate={},
                     test_id_start=0)


def random_ids(spec: FieldSpec, rows: int, seed: int) -> np.ndarray:
    """int32 [rows, F]; local id = floor(size ** u), u ~ U[0, 1): P(id) ~ 1/id within a field."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(spec.vocabulary_sizes, np.float64)
    local = np.floor(sizes ** rng.random((rows, len(sizes)))).astype(np.int64)
    return (local + np.asarray(spec.offsets)).astype(np.int32)


def time_runner(model, spec, train, batches: list[np.ndarray], labels, warmup: int) -> float:
    """Examples/s of the sparse-update step over `batches` after `warmup` steps."""
    settings = optimizers.OptimizerSettings(train.optimizer, train.learning_rate,
                                            train.adam_beta_1, train.adam_beta_2,
                                            train.adam_epsilon, train.adagrad_initial_accumulator)
    step = create_train_step(model, settings, train.loss_reduction, train.jit_compile,
                             train.eval_batch_size)
    pad_limit = len(batches[0]) * spec.num_fields if step.pads_unique else None
    prepared = data.prefetch((data.compact_batch(ids, labels, index, pad_limit)
                              for index, ids in enumerate(batches)), train.prefetch_batches)
    for index, batch in enumerate(prepared):
        if index == warmup:
            started = time.perf_counter()
        step.step(batch)
    return (len(batches) - warmup) * len(batches[0]) / (time.perf_counter() - started)


def time_plain_keras(model, batches: list[np.ndarray], labels, learning_rate: float,
                     warmup: int) -> float:
    """Examples/s of `model.fit` with stock Adam (dense updates of every table row)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    stamps = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter()))
    model.fit(np.concatenate(batches), np.tile(labels, len(batches)), batch_size=len(batches[0]),
              epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    return (len(stamps) - warmup) * len(batches[0]) / (stamps[-1] - stamps[warmup - 1])


def bench_model(model_id: str, preset: str, steps: int, warmup: int, overrides=()) -> dict:
    config = load_runner_config(CONFIG_DIR / f"{model_id}.yaml", preset, overrides)
    spec = synthetic_spec(PRESET_SCALES[preset])
    batch_size = config.train.batch_size
    batches = [random_ids(spec, batch_size, seed) for seed in range(warmup + steps)]
    labels = (np.random.default_rng(0).random(batch_size) < 0.25).astype(np.float32)

    def build():
        keras.utils.set_random_seed(config.train.seed)
        model = registry.build(config.arch, spec, **config.hyperparameters)
        model(batches[0][:1])
        return model

    model = build()
    result = {"model": model_id, "preset": preset, "batch_size": batch_size,
              "parameter_count": int(model.count_params()), "backend": keras.backend.backend(),
              "jit_compile": config.train.jit_compile,
              "examples_per_second": time_runner(model, spec, config.train, batches, labels,
                                                 warmup)}
    if config.arch == "ipnn":
        plain = time_plain_keras(build(), batches, labels, config.train.learning_rate, warmup)
        result["plain_keras_examples_per_second"] = plain
        result["speedup_over_plain_keras"] = result["examples_per_second"] / plain
        result["mlp_only_examples_per_second"] = time_mlp_only(config, spec, len(batches),
                                                               labels, warmup)
    return result


def time_mlp_only(config, spec: FieldSpec, steps: int, labels, warmup: int) -> float:
    """Examples/s of plain `model.fit` of IPNN's MLP alone on random inputs of its width: the
    dense layers without embeddings, products or table updates, a bound for any IPNN step."""
    keras.utils.set_random_seed(config.train.seed)
    embedding_dim = config.hyperparameters["embedding_dim"]
    width = spec.num_fields * embedding_dim + spec.num_fields * (spec.num_fields - 1) // 2
    mlp = MLP(config.hyperparameters["hidden_units"],
              layer_norm=config.hyperparameters["layer_norm"])
    model = keras.Sequential([keras.Input((width,)), mlp])
    rng = np.random.default_rng(0)
    inputs = [rng.random((len(labels), width), dtype=np.float32) for _ in range(steps)]
    return time_plain_keras(model, inputs, labels, config.train.learning_rate, warmup)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        help="model ids (default: every Keras model of configs/models/)")
    parser.add_argument("--presets", nargs="+", default=["paper", "demo"],
                        choices=sorted(PRESET_SCALES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model-config key, e.g. --set train.jit_compile=true")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    tune_memory_allocator()  # as models.train does
    model_ids = args.models or sorted(path.stem for path in CONFIG_DIR.glob("*.yaml")
                                      if learner(path.stem) == "models.train")
    for preset in args.presets:
        for model_id in model_ids:
            result = bench_model(model_id, preset, args.steps, args.warmup, args.set)
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            line = (f"{preset:5s} {model_id:10s} {result['examples_per_second']:9.0f} ex/s  "
                    f"({result['parameter_count']:,} parameters, batch {result['batch_size']})")
            if "plain_keras_examples_per_second" in result:
                line += (f"  plain Keras fit {result['plain_keras_examples_per_second']:.0f} ex/s"
                         f" -> {result['speedup_over_plain_keras']:.2f}x; its MLP alone "
                         f"{result['mlp_only_examples_per_second']:.0f} ex/s")
            print(line, flush=True)


if __name__ == "__main__":
    main()
