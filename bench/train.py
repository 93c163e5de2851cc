"""Training throughput (examples/s) of every model with the runner's sparse-update step.

    python bench/train.py [--json] [--models ipnn ffm ...] [--steps 20] [--presets paper demo]
                          [--set train.jit_compile=true]

Random ids, no pipeline: a synthetic 39-field spec shaped like hashed Criteo (13 small integer
fields, 26 categorical fields, ~1M ids in all for `paper`, ~60k for `demo`), ids drawn log-uniformly
within each field so batches repeat popular ids as real data does. Batches are prepared by the
runner's prefetch thread, as in training. For IPNN it also times, in the same process, a plain
Keras 3 `model.fit` of the same network with the stock Adam and prints the ratio, and a plain fit
of its MLP alone on random inputs of the MLP's width (no embeddings: a bound for any IPNN step);
the three alternate over --rounds rounds, as the machine's speed drifts between them.
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

from models import data, optimizers, precision, registry
from models.layers.mlp import MLP
from models.runner_config import CONFIG_DIR, load_runner_config
from models.learner import learner_kind
from models.engine import create_train_step, tune_memory_allocator
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


def runner_timer(model, spec, train, batches: list[np.ndarray], labels, warmup: int):
    """A function that returns the examples/s of one pass of the sparse-update step over
    `batches`, not counting the first `warmup` steps (compilation in the first pass)."""
    settings = optimizers.OptimizerSettings(train.optimizer, train.learning_rate,
                                            train.adam_beta_1, train.adam_beta_2,
                                            train.adam_epsilon, train.adagrad_initial_accumulator)
    step = create_train_step(model, settings, train.loss_reduction, train.jit_compile,
                             train.eval_batch_size)
    pad_limit = len(batches[0]) * spec.num_fields if step.pads_unique else None

    def measure() -> float:
        prepared = data.prefetch((data.compact_batch(ids, labels, index, pad_limit)
                                  for index, ids in enumerate(batches)), train.prefetch_batches)
        for index, batch in enumerate(prepared):
            if index == warmup:
                started = time.perf_counter()
            step.step(batch)
        return (len(batches) - warmup) * len(batches[0]) / (time.perf_counter() - started)

    return measure


def plain_keras_timer(model, batches: list[np.ndarray], labels, learning_rate: float,
                      warmup: int):
    """A function that returns the examples/s of one `model.fit` pass over `batches` with the
    stock Adam (dense updates of every table row), not counting the first `warmup` steps."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    inputs, targets = np.concatenate(batches), np.tile(labels, len(batches))

    def measure() -> float:
        stamps = []
        callback = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter()))
        model.fit(inputs, targets, batch_size=len(batches[0]), epochs=1, shuffle=False,
                  verbose=0, callbacks=[callback])
        return (len(stamps) - warmup) * len(batches[0]) / (stamps[-1] - stamps[warmup - 1])

    return measure


def mlp_only_model(config, spec: FieldSpec) -> tuple[keras.Model, int]:
    """IPNN's MLP alone on inputs of its width (flattened embeddings and inner products): the
    dense layers without embeddings, products or table updates, a bound for any IPNN step."""
    keras.utils.set_random_seed(config.train.seed)
    embedding_dim = config.hyperparameters["embedding_dim"]
    width = spec.num_fields * embedding_dim + spec.num_fields * (spec.num_fields - 1) // 2
    mlp = MLP(config.hyperparameters["hidden_units"],
              layer_norm=config.hyperparameters["layer_norm"])
    return keras.Sequential([keras.Input((width,)), mlp]), width


def bench_model(model_id: str, preset: str, steps: int, warmup: int, overrides=(),
                rounds: int = 1) -> dict:
    """Figures of one model. IPNN's three timings (runner, plain Keras, MLP alone) alternate in
    `rounds` rounds; each figure is the median over rounds and the ratio the median of the
    per-round ratios, so that a slower spell of the machine hits both sides of a ratio."""
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

    with precision.dtype_policy(config.train.precision):  # every network, as models.train
        model = build()
        timers = {"examples_per_second": runner_timer(model, spec, config.train, batches,
                                                      labels, warmup)}
        if config.arch == "ipnn":
            lr = config.train.learning_rate
            timers["plain_keras_examples_per_second"] = plain_keras_timer(
                build(), batches, labels, lr, warmup)
            mlp, width = mlp_only_model(config, spec)
            rng = np.random.default_rng(0)
            inputs = [rng.random((batch_size, width), dtype=np.float32) for _ in batches]
            timers["mlp_only_examples_per_second"] = plain_keras_timer(mlp, inputs, labels, lr,
                                                                       warmup)
    speeds = {key: [] for key in timers}
    for _ in range(rounds):
        for key, measure in timers.items():
            speeds[key].append(measure())
    result = {"model": model_id, "preset": preset, "batch_size": batch_size,
              "parameter_count": int(model.count_params()), "backend": keras.backend.backend(),
              "jit_compile": config.train.jit_compile, "precision": config.train.precision,
              "rounds": rounds,
              **{key: float(np.median(values)) for key, values in speeds.items()}}
    if config.arch == "ipnn":
        ratios = np.divide(speeds["examples_per_second"], speeds["plain_keras_examples_per_second"])
        result["speedup_over_plain_keras"] = float(np.median(ratios))
        result["speedups_per_round"] = [round(float(ratio), 3) for ratio in ratios]
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        help="model ids (default: every Keras model of configs/models/)")
    parser.add_argument("--presets", nargs="+", default=["paper", "demo"],
                        choices=sorted(PRESET_SCALES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="IPNN: rounds of alternating runner / plain Keras / MLP timings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model-config key, e.g. --set train.jit_compile=true")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    tune_memory_allocator()  # as models.train does
    model_ids = args.models or sorted(path.stem for path in CONFIG_DIR.glob("*.yaml")
                                      if learner_kind(path.stem) == "keras")
    for preset in args.presets:
        for model_id in model_ids:
            result = bench_model(model_id, preset, args.steps, args.warmup, args.set,
                                 args.rounds)
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
