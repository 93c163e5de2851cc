"""What every experiment command shares: arguments, configs, data, training through the runner,
and the writers of tables and figures.

Data: `--tag TAG` reads `artifacts/<TAG>/03_hash/` (built from the synthetic dataset by stages
00-03, as `./run.sh` would, when it is missing); `--data DIR` reads any stage-03 folder.

Training: an experiment never writes into the pipeline's artifact tree. It keeps its own under
`<out>/runs/` (a `Workspace`), where the data folder is linked in as `<tag>/03_hash` and every
training run is one unit of stage 05 trained by `models.train.train_model`: the same runner,
configs (`configs/models/<id>.yaml`), early stopping and outputs (metrics.json, history.csv, the
model) as the pipeline, and a run whose config, data and code are unchanged is skipped on a rerun.

Configs: `configs/experiments/<name>.yaml`, overlaid by `--config FILE` and `--set KEY=VALUE`.
A `--set` key under `model.` or `train.` (optionally prefixed `ID:` to reach one model id only)
overrides the model configs of the runs (the experiment's `model_set` list); any other key is an
experiment setting. The resolved experiment config is written to `<out>/config.resolved.json`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Self

import numpy as np

from preprocessing.field_spec import Field, FieldSpec
from pipeline import config as config_lib
from pipeline.manifest import digest
from pipeline.paths import REPO_ROOT, stage_dir

CONFIG_DIR = REPO_ROOT / "configs" / "experiments"
ARTIFACTS_ENV = "CRITEO_PNN_ARTIFACTS"
DATA_TAG = "data"  # the workspace's tag for the linked data folder
RESOLVED_CONFIG = "config.resolved.json"
MODEL_SECTIONS = ("model.", "train.")


# ---------------------------------------------------------------- arguments and configs

def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every experiment takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--tag", default="demo",
                        help="data: artifacts/<TAG>/03_hash (built from synthetic data if missing)")
    parser.add_argument("--data", type=Path, help="data: a stage-03 folder (instead of --tag)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="YAML overlay(s) of configs/experiments/<name>.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="[ID:]KEY=VALUE",
                        help="experiment setting, or a model/train key of the runs, e.g. "
                             "--set train.epochs=1 --set ipnn:model.hidden_units=[64]")
    parser.add_argument("--synthetic-rows", type=int, default=200_000,
                        help="training rows of the synthetic dataset built when --tag has none")
    parser.add_argument("--force", action="store_true", help="retrain runs that are up to date")
    return parser


def is_model_override(text: str) -> bool:
    key = text.split("=", 1)[0]
    return key.split(":", 1)[-1].strip().startswith(MODEL_SECTIONS)


def load_experiment_config(cls, name: str, config_files=(), overrides=()):
    """`configs/experiments/<name>.yaml` + overlays + `--set`s, built strictly into `cls`.

    Model/train overrides are appended to the config's `model_set` list (a field of `cls`).
    """
    data = config_lib.load_yaml(CONFIG_DIR / f"{name}.yaml")
    for path in config_files:
        data = config_lib.merge(data, config_lib.load_yaml(path))
    model_set = list(data.get("model_set") or [])
    for text in overrides:
        if is_model_override(text):
            model_set.append(text)
        else:
            data = config_lib.merge(data, config_lib.parse_override(text))
    data["model_set"] = model_set
    return config_lib.build(cls, data)


def overrides_for(model_id: str, model_set) -> list[str]:
    """The `[ID:]KEY=VALUE` overrides that apply to `model_id`, without the prefix."""
    selected = []
    for text in model_set:
        key, value = text.split("=", 1) if "=" in text else (text, None)
        if value is None:
            raise ValueError(f"model override {text!r}: expected [ID:]KEY=VALUE")
        if ":" in key:
            target, key = key.split(":", 1)
            if target.strip() != model_id:
                continue
        selected.append(f"{key.strip()}={value}")
    return selected


def model_list(text) -> tuple[str, ...]:
    """Model ids from a YAML list or a comma-separated string."""
    items = text.split(",") if isinstance(text, str) else text
    models = tuple(str(item).strip() for item in items if str(item).strip())
    if not models:
        raise ValueError("models: the list of model ids is empty")
    return models


def save_resolved(out: Path, **sections) -> Path:
    """Writes the experiment's resolved configuration (and the runs' configs) as JSON."""
    path = Path(out) / RESOLVED_CONFIG
    path.write_text(json.dumps(_plain(sections), indent=1, sort_keys=True, default=str) + "\n")
    return path


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_lib.to_dict(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


# ---------------------------------------------------------------- data

def table_main(module_doc: str, config_class, name: str, run, argv=None) -> list[dict]:
    """The entry point of an experiment over field files: parse, load `name`'s config, call
    `run(config, source folder, out, force)`, print `OUT/<name>.md`; returns the table."""
    args = experiment_parser(module_doc.splitlines()[0]).parse_args(argv)
    config = load_experiment_config(config_class, name, args.config, args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    table = run(config, source_folder(args), args.out, args.force)
    print((args.out / f"{name}.md").read_text())
    return table


def source_folder(args: argparse.Namespace) -> Path:
    """The stage-03 folder the experiment reads (built from synthetic data for a bare --tag)."""
    if args.data is not None:
        FieldSpec.load(args.data)  # a clear error if it is not a stage-03 folder
        return Path(args.data).resolve()
    directory = stage_dir(args.tag, "03_hash")
    if not (directory / "manifest.json").exists():
        build_synthetic_field_files(args.tag, args.synthetic_rows)
    return directory.resolve()


def build_synthetic_field_files(tag: str, train_rows: int) -> None:
    """Stages 00-03 of `tag` in-process (what `./run.sh --only 00,01,02,03` runs)."""
    import importlib

    print(f"[experiments] artifacts/{tag}/03_hash missing: running stages 00-03 "
          f"({train_rows:,} synthetic rows unless data/raw holds Criteo files)", flush=True)
    options = ["--tag", tag, "--set", f"synthetic.train_rows={train_rows}",
               "--set", f"synthetic.test_rows={max(train_rows // 5, 1)}"]
    for module in ("raw", "split", "count", "hash_fields"):
        importlib.import_module(f"preprocessing.{module}").main(options)


def truth_pairs(source: Path, truth_file: Path | None = None) -> list[tuple[str, str]] | None:
    """Planted field pairs from a generator's truth.json, or None when there is none.

    Looked for at `truth_file`, then `<source>/truth.json` (experiments' generators), then
    `<source>/../00_raw/truth.json` (the synthetic Criteo dataset of a pipeline tag).
    """
    candidates = [truth_file] if truth_file else [source / "truth.json",
                                                  source.parent / "00_raw" / "truth.json"]
    for path in candidates:
        if path is not None and Path(path).exists():
            planted = json.loads(Path(path).read_text()).get("planted", {})
            return [tuple(pair["fields"]) for pair in planted.get("pairs", [])]
    if truth_file:
        raise FileNotFoundError(f"{truth_file}: no such truth file")
    return None


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
    """A small stage-03 set whose labels have strong planted field-aware pair interactions.

    logit = b + sum_f w[f, x_f] + sum_{(i, j) planted} s <u[i, x_i], u[j, x_j]> / sqrt(d), with
    w ~ N(0, first_order_scale^2), u ~ N(0, 1) in d = latent_dim dimensions, s = pair_strength;
    values uniform per field. Writes truth.json (the planted pairs, by field name) beside the
    arrays and returns the planted pairs.

    Not a copy of preprocessing.synthetic's planted model, which is fixed to the 39 Criteo fields
    (TABLE_SIZE-row tables keyed by hashed tokens, its own pairs, strengths, triples and drift)
    and evaluated row by row inside its numba kernel: this toy takes the fields, sizes, pairs and
    strength as arguments, which is what the experiments vary.
    """
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
    generator = {"generator": "experiments.common.write_planted_field_files", "rows": list(rows),
                 "num_fields": num_fields, "field_size": field_size,
                 "pairs": [list(pair) for pair in pairs], "pair_strength": pair_strength,
                 "first_order_scale": first_order_scale, "latent_dim": latent_dim, "seed": seed}
    write_field_files(directory, splits, names, sizes, {"source": "synthetic", **generator},
                      generator)
    (Path(directory) / "truth.json").write_text(json.dumps(
        {**generator, "planted": {"pairs": [{"fields": list(pair)} for pair in planted]}},
        indent=1) + "\n")
    return planted


# ---------------------------------------------------------------- training

@dataclasses.dataclass
class TrainedRun:
    """One published training run of the workspace."""
    unit: str  # folder under 05_train/
    model_id: str  # configs/models/<model_id>.yaml
    arch: str
    directory: Path
    metrics: dict
    history: list[dict]
    config: dict  # the runner's resolved stage config

    def load_model(self):
        import keras

        import models  # noqa: F401  (registers the model classes for deserialisation)
        return keras.saving.load_model(self.directory / "model.keras")


class Workspace:
    """The experiment's own artifact tree, `<out>/runs/`, active inside the `with` block.

    Inside it, `pipeline.paths.stage_dir` resolves under `<out>/runs/`, so the runner reads the
    linked data and publishes its runs there. Not thread-safe (it sets an environment variable).
    """

    def __init__(self, out: Path):
        self.root = Path(out).resolve() / "runs"
        self._previous = None

    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self._previous = os.environ.get(ARTIFACTS_ENV)
        os.environ[ARTIFACTS_ENV] = str(self.root)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is None:
            os.environ.pop(ARTIFACTS_ENV, None)
        else:
            os.environ[ARTIFACTS_ENV] = self._previous

    def link_data(self, source: Path, tag: str = DATA_TAG) -> str:
        """Links the stage-03 folder `source` in as `<tag>/03_hash`; returns the tag."""
        link = self.root / tag / "03_hash"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != Path(source).resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(Path(source).resolve(), target_is_directory=True)
        return tag

    def runner_config(self, tag: str, model_id: str, overrides=(), preset: str = "auto"):
        """configs/models/<model_id>.yaml with the preset for the linked data and `overrides`."""
        from models.runner_config import config_path, load_runner_config
        from models.cli import preset_for

        return load_runner_config(config_path(model_id), preset_for(tag, preset), overrides)

    def train(self, tag: str, unit: str, model_id: str, overrides=(), preset: str = "auto",
              force: bool = False, config=None) -> TrainedRun:
        """Trains `config` (default: `runner_config(...)`) as run `unit` unless up to date."""
        from models.train import stage_config, train_model

        config = config or self.runner_config(tag, model_id, overrides, preset)
        train_model(tag, unit, config, force=force)
        return self.read(tag, unit, model_id, config.arch, stage_config(unit, config))

    def read(self, tag: str, unit: str, model_id: str, arch: str, config: dict) -> TrainedRun:
        directory = stage_dir(tag, "05_train", unit)
        metrics = json.loads((directory / "metrics.json").read_text())
        return TrainedRun(unit, model_id, arch, directory, metrics,
                          read_history(directory / "history.csv"), config)


def read_history(path: Path) -> list[dict]:
    """The runner's history.csv as dicts of floats (None where a value is empty)."""
    with open(path, newline="") as handle:
        return [{key: float(value) if value not in ("", None) else None
                 for key, value in row.items()} for row in csv.DictReader(handle)]


# ---------------------------------------------------------------- tables and figures

def write_csv(path: Path, rows: list[dict], columns=None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def format_number(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str], digits: int = 4) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_number(row.get(column), digits)
                                        for column in columns) + " |")
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    return plt


def save_figure(figure, path: Path) -> None:
    """Tight layout, write the PNG, free the figure (pyplot keeps every open one)."""
    figure.tight_layout()
    figure.savefig(path)
    pyplot().close(figure)


def engineering_format():
    """Axis labels 20k, 1.5M instead of 20000, 1500000 (which overlap)."""
    from matplotlib.ticker import EngFormatter

    return EngFormatter(sep="")


def data_description(source: Path) -> str:
    spec = FieldSpec.load(source)
    return (f"`{source}`: {spec.num_fields} fields, {spec.total_vocabulary_size:,} ids, rows "
            + ", ".join(f"{split} {count:,}" for split, count in spec.rows.items())
            + f" (source: {spec.extra.get('source', 'criteo')})")
