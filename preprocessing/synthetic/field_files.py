"""Small planted sets written straight as stage-03 field files, for experiments that choose the
fields, their sizes and the interacting pairs (experiments/heatmaps.py --planted, the tests).

The label model has the form of the Criteo generator's (planted.py) without its Criteo shape:
first-order weights plus field-aware pairwise terms on chosen field pairs,

    logit = sum_f w[f, x_f] + sum_{(i, j) planted} s <u[p, 0, x_i], u[p, 1, x_j]> / sqrt(d),

w ~ N(0, first_order_scale^2), u ~ N(0, 1) in d = latent_dim dimensions, s = pair_strength,
values uniform per field, label ~ Bernoulli(sigmoid(logit - 1)). The Criteo generator is fixed
to the 39 Criteo fields, raw text and its own 16 weaker pairs among 741 cells; here a few strong
pairs among few fields make a picture whose right answer is known. The package's __init__ does
not import this module, so stage 00's code fingerprint does not depend on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from preprocessing.field_spec import Field, FieldSpec
from pipeline.manifest import digest

# The "generator" recorded in field_spec.json, manifest.json and truth.json: the name it has
# always had, so that the same arguments still give byte-identical files.
GENERATOR_NAME = "experiments.common.write_planted_field_files"


def write_field_files(directory: Path, splits: dict, field_names, vocabulary_sizes,
                      extra: dict, fingerprint_data=None) -> FieldSpec:
    """Writes a stage-03 folder (field_spec.json, arrays) from in-memory splits.

    Args:
        splits: split -> (fields int32 [N, F] global ids, labels uint8 [N] or None for test).
        fingerprint_data: JSON-able description of the generator: a manifest.json is written
            with its digest as the fingerprint (None: no manifest, e.g. inside Stage.build).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(vocabulary_sizes)[:-1]]).astype(int)
    label_rate = {}
    for split, (fields, labels) in splits.items():
        np.save(directory / f"{split}.fields.npy", np.ascontiguousarray(fields, np.int32))
        np.save(directory / f"{split}.ids.npy", np.arange(len(fields), dtype=np.int64))
        if labels is not None:
            np.save(directory / f"{split}.labels.npy", labels.astype(np.uint8))
            label_rate[split] = float(np.mean(labels))
    spec = FieldSpec(
        fields=tuple(Field(name, "cat", int(size), int(offset))
                     for name, size, offset in zip(field_names, vocabulary_sizes, offsets)),
        rows={split: len(fields) for split, (fields, _) in splits.items()},
        hashing={"mode": "none"}, min_count={"cat": 1}, label_rate=label_rate,
        test_id_start=60_000_000, extra=extra)
    spec.write(directory)
    if fingerprint_data is not None:
        (directory / "manifest.json").write_text(json.dumps(
            {"stage": "03_hash", "fingerprint": digest(fingerprint_data),
             "config": fingerprint_data}, indent=1, default=str) + "\n")
    return spec


def write_planted_field_files(directory: Path, *, rows=(20_000, 5_000, 1_000), num_fields=8,
                              field_size=12, pairs=((0, 1), (2, 3), (4, 5)),
                              pair_strength=1.5, first_order_scale=0.3, latent_dim=4,
                              seed=0) -> list[tuple[str, str]]:
    """A stage-03 set (fields F1..Fn of `field_size` values, train/valid/test `rows`) whose labels
    have strong planted field-aware pair interactions (the module's model). Writes truth.json
    (the planted pairs, by field name) beside the arrays and returns the planted pairs."""
    rng = np.random.default_rng(seed)
    names = [f"F{index + 1}" for index in range(num_fields)]
    sizes = [field_size + 2] * num_fields  # local ids 0 (OOV) and 1 (rare) stay unused
    weights = rng.normal(0.0, first_order_scale, (num_fields, field_size))
    latent = rng.normal(0.0, 1.0, (len(pairs), 2, field_size, latent_dim))
    splits = {}
    for split, count in zip(("train", "valid", "test"), rows):
        values = rng.integers(0, field_size, (count, num_fields))
        logit = weights[np.arange(num_fields), values].sum(axis=1)
        for p, (i, j) in enumerate(pairs):
            logit += pair_strength * np.sum(latent[p, 0, values[:, i]] * latent[p, 1, values[:, j]],
                                            axis=1) / math.sqrt(latent_dim)
        labels = rng.random(count) < 1.0 / (1.0 + np.exp(-(logit - 1.0)))
        fields = values + 2 + np.arange(num_fields) * (field_size + 2)
        splits[split] = (fields, labels if split != "test" else None)
    planted = [(names[i], names[j]) for i, j in pairs]
    generator = {"generator": GENERATOR_NAME, "rows": list(rows),
                 "num_fields": num_fields, "field_size": field_size,
                 "pairs": [list(pair) for pair in pairs], "pair_strength": pair_strength,
                 "first_order_scale": first_order_scale, "latent_dim": latent_dim, "seed": seed}
    write_field_files(directory, splits, names, sizes, {"source": "synthetic", **generator},
                      generator)
    (Path(directory) / "truth.json").write_text(json.dumps(
        {**generator, "planted": {"pairs": [{"fields": list(pair)} for pair in planted]}},
        indent=1) + "\n")
    return planted
