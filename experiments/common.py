"""What every experiment command shares: arguments, configs, data, training through the runner,
and the writers of tables and figures.

Data: `--tag TAG` reads `<artifacts>/<TAG>/03_hash/` (built from the synthetic dataset by stages
00-03, as `./run.sh` would, when it is missing); `--data DIR` reads any stage-03 folder.
`--artifacts DIR` is the pipeline's artifacts root (default: $CRITEO_PNN_ARTIFACTS if set, else
artifacts/ under the repository).

Training: an experiment never writes into the pipeline's artifact tree. It keeps its own under
`<out>/runs/` (a `Workspace`), where the data folder is linked in as `<tag>/03_hash` and every
training run is one unit of stage 05 trained by `models.train.train_model`: the same runner,
configs (`configs/models/<id>.yaml`), early stopping and outputs (metrics.json, history.csv, the
model) as the pipeline, and a run whose config, data and code are unchanged is skipped on a rerun.

Configs: `configs/experiments/<name>.yaml`, overlaid by `--config FILE` and `--set KEY=VALUE`, the
pipeline's own (pipeline/config.py: strict, a VALUE read as YAML). The runs' model configs
(`configs/models/<id>.yaml` after the preset) are overlaid by the experiment config's `model:` and
`train:` sections, then by `by_model: {<id>: {model: ..., train: ...}}` for one model id:
`--set train.epochs=1 --set by_model.ipnn.model.hidden_units=[64]`. The resolved experiment
config is written to `<out>/config.resolved.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Self

import pandas as pd

from preprocessing.field_spec import FieldSpec
from pipeline import config as config_lib
from pipeline import paths, settings
from pipeline.figures import pyplot, save_figure  # noqa: F401  (the experiments' figures)
from pipeline.paths import REPO_ROOT, stage_dir

CONFIG_DIR = REPO_ROOT / "configs" / "experiments"
DATA_TAG = "data"  # the workspace's tag for the linked data folder
RESOLVED_CONFIG = "config.resolved.json"
RUN_SECTIONS = ("model", "train")  # the sections of a model config an experiment overlays


# ---------------------------------------------------------------- arguments and configs

def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every experiment takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--tag", default="demo", help="data: <artifacts>/<TAG>/03_hash (built "
                        "from synthetic data if missing)")
    settings.add_artifacts_option(parser)
    parser.add_argument("--data", type=Path, help="data: a stage-03 folder (instead of --tag)")
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="YAML overlay(s) of configs/experiments/<name>.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the experiment config, e.g. --set "
                             "'models=[fm, ipnn]' --set train.epochs=1 "
                             "--set by_model.ipnn.model.hidden_units=[64]")
    parser.add_argument("--synthetic-rows", type=int, default=200_000,
                        help="training rows of the synthetic dataset built when --tag has none")
    parser.add_argument("--force", action="store_true", help="retrain runs that are up to date")
    return parser


@dataclasses.dataclass(frozen=True)
class RunOverlays:
    """The keys every experiment config has for its runs' model configs."""
    model: dict = dataclasses.field(default_factory=dict)  # over every run's model: section
    train: dict = dataclasses.field(default_factory=dict)  # over every run's train: section
    by_model: dict = dataclasses.field(default_factory=dict)  # id -> {model: {}, train: {}}


def load_experiment_config(cls, name: str, config_files=(), overrides=()):
    """`configs/experiments/<name>.yaml` + overlays + `--set`s, built strictly into `cls`."""
    data = config_lib.load_yaml(CONFIG_DIR / f"{name}.yaml")
    for path in config_files:
        data = config_lib.merge(data, config_lib.load_yaml(path))
    for text in overrides:
        data = config_lib.merge(data, config_lib.parse_override(text))
    return config_lib.build(cls, data)


def run_overrides(*overlays: dict) -> list[str]:
    """The KEY=VALUE overrides of a run's model config from overlays `{model: {...}, train:
    {...}}`, in order (a later one wins)."""
    overrides = []
    for overlay in overlays:
        unknown = sorted(set(overlay or {}) - set(RUN_SECTIONS))
        if unknown:
            raise ValueError(f"run overrides: unknown section(s) {unknown} in {overlay}; "
                             f"known: {list(RUN_SECTIONS)}")
        for section in RUN_SECTIONS:
            for key, value in ((overlay or {}).get(section) or {}).items():
                overrides.append(f"{section}.{key}={json.dumps(value)}")
    return overrides


def model_overrides(config: RunOverlays, model_id: str) -> list[str]:
    """The overrides of `model_id`'s runs: the config's `model:` and `train:`, then
    `by_model.<model_id>`."""
    return run_overrides({"model": config.model, "train": config.train},
                         config.by_model.get(model_id) or {})


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
    directory = stage_dir(args.tag, "03_hash", root=args.artifacts)
    if not (directory / "manifest.json").exists():
        build_synthetic_field_files(args.tag, args.synthetic_rows, args.artifacts)
    return directory.resolve()


def build_synthetic_field_files(tag: str, train_rows: int, root: Path | None = None) -> None:
    """Stages 00-03 of `tag` under artifacts root `root` (None: the process's) in-process (what
    `./run.sh --only 00,01,02,03` runs)."""
    import importlib

    root = Path(root or paths.artifacts_root())
    print(f"[experiments] {root / tag / '03_hash'} missing: running stages 00-03 "
          f"({train_rows:,} synthetic rows unless data/raw holds Criteo files)", flush=True)
    options = ["--artifacts", str(root), "--tag", tag,
               "--set", f"synthetic.train_rows={train_rows}",
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
    """The experiment's own artifact tree, `<out>/runs/`: inside the `with` block it is the
    process's artifacts root (pipeline.paths), so the runner, which builds its stages on that
    root, reads the linked data and publishes its runs there; the previous root comes back on
    leaving. One workspace at a time per process."""

    def __init__(self, out: Path):
        self.root = Path(out).resolve() / "runs"
        self._previous = None

    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self._previous = paths.set_artifacts_root(self.root)
        return self

    def __exit__(self, *exc_info) -> None:
        paths.set_artifacts_root(self._previous)

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
        directory = stage_dir(tag, "05_train", unit, root=self.root)
        metrics = json.loads((directory / "metrics.json").read_text())
        return TrainedRun(unit, model_id, arch, directory, metrics,
                          read_history(directory / "history.csv"), config)


def read_history(path: Path) -> list[dict]:
    """The runner's history.csv as dicts of floats (None where a value is empty)."""
    frame = pd.read_csv(path, dtype=float, float_precision="round_trip")
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


# ---------------------------------------------------------------- tables and figures

def write_csv(path: Path, rows: list[dict], columns=None) -> None:
    """The table's `columns` (default: the first row's keys) as CSV; values as str writes them,
    None and NaN empty."""
    columns = list(columns or (rows[0].keys() if rows else []))
    pd.DataFrame(rows, columns=columns, dtype=object).to_csv(path, index=False,
                                                             lineterminator="\r\n")


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


def engineering_format():
    """Axis labels 20k, 1.5M instead of 20000, 1500000 (which overlap)."""
    from matplotlib.ticker import EngFormatter

    return EngFormatter(sep="")


def data_description(source: Path) -> str:
    spec = FieldSpec.load(source)
    return (f"`{source}`: {spec.num_fields} fields, {spec.total_vocabulary_size:,} ids, rows "
            + ", ".join(f"{split} {count:,}" for split, count in spec.rows.items())
            + f" (source: {spec.extra.get('source', 'criteo')})")
