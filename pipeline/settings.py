"""The pipeline configuration (`configs/pipeline.yaml`) and the command line every stage shares."""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path

from pipeline import config as config_lib
from pipeline import paths, tags
from pipeline.paths import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "configs" / "pipeline.yaml"
# The default of --artifacts when set; read by `artifacts_default` only.
ARTIFACTS_VARIABLE = "CRITEO_PNN_ARTIFACTS"


@dataclasses.dataclass(frozen=True)
class RawConfig:
    data_dir: str | None = None  # folder with train.txt/test.txt (.gz, dac.tar.gz, Kaggle CSV)
    on_bad_row: typing.Literal["error", "skip"] = "error"  # skip = counted and reported
    # skip: more bad rows than this share of a file or split is an error (0..1); bad test rows,
    # kept with all fields missing, count too.
    max_skipped_fraction: float = 0.01
    verify_md5: bool = True  # md5 prefix check when the full-size Kaggle files are given

    def __post_init__(self):
        if not 0 <= self.max_skipped_fraction <= 1:
            raise ValueError(f"config.raw.max_skipped_fraction: {self.max_skipped_fraction}; "
                             "a share of the rows, 0 .. 1")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    train_rows: int = 200_000
    test_rows: int = 40_000
    seed: int = 2014


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    valid_fraction: float = 1 / 7  # the last ~day of the 7 days of train.txt


@dataclasses.dataclass(frozen=True)
class CountConfig:
    # null: count exact values. N: hash each categorical value into one of N bins per field
    # before counting (stages 02 and 03), so tables stay bounded by N x 26 (the Criteo 1TB logs).
    max_bins: int | None = None

    def __post_init__(self):
        # Bins must stay below the missing code 2^32 (preprocessing/parse.py CAT_MISSING).
        if self.max_bins is not None and not 2 <= self.max_bins <= 1 << 32:
            raise ValueError(f"config.count.max_bins: {self.max_bins}; null or 2 .. 2^32")


@dataclasses.dataclass(frozen=True)
class HashConfig:
    mode: typing.Literal["xxh64", "md5"] = "xxh64"
    min_count: int = 10  # categorical values rarer than this in training become the rare token
    md5_bins: int = 1_000_000  # the winners' nr_bins: md5(key) mod (bins - 1) + 1


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    libffm: bool = True
    gbdt: bool = True
    # Categorical values in more than this fraction of training rows get a GBDT indicator column
    # (the winners: > 4M of 45.8M rows).
    gbdt_frequent_fraction: float = 4_000_000 / 45_840_617


@dataclasses.dataclass(frozen=True)
class LeavesConfig:
    """The `leaves:` section of the pipeline config (stage 04_leaves)."""
    mode: typing.Literal["in_sample", "out_of_fold"] = "in_sample"
    folds: int = 5  # out_of_fold only
    trees: int = 30
    max_depth: int = 7
    learning_rate: float = 1.0  # the winners: no shrinkage
    reg_lambda: float = 0.0
    min_child_weight: float = 0.0
    tree_method: typing.Literal["hist", "approx", "exact"] = "hist"
    max_bin: int = 256
    threads: int = 0  # 0 = all cores
    libffm: bool = False  # also write {split}.ffm with the 69 fields (for ffm-train)

    def __post_init__(self):
        if self.trees < 1 or not 1 <= self.max_depth <= 15:
            raise ValueError("config.leaves: trees >= 1 and 1 <= max_depth <= 15 required")
        if self.mode == "out_of_fold" and self.folds < 2:
            raise ValueError(f"config.leaves.folds: {self.folds}; out_of_fold needs >= 2")


CalibrationMethod = typing.Literal["none", "winners_shift", "logit_shift", "platt", "isotonic"]
CALIBRATION_METHODS = typing.get_args(CalibrationMethod)


@dataclasses.dataclass(frozen=True)
class CalibrateConfig:
    # auto: the candidate with the lowest cross-fitted validation logloss among those that beat
    # "none" on both held-out halves of the validation split; or one named method.
    method: typing.Literal["auto", CalibrationMethod] = "auto"
    candidates: tuple[CalibrationMethod, ...] = CALIBRATION_METHODS
    # Fraction of negatives kept when the model was trained on down-sampled data; null: the
    # model's metrics.json key negative_sampling_rate, else 1 (no down-sampling).
    negative_sampling_rate: float | None = None
    bins: int = 20  # equal-count bins of the reliability diagram and the ECE


@dataclasses.dataclass(frozen=True)
class BlendConfig:
    name: str = "ens_logit"  # artifacts/<tag>/07_ensemble/<name>/
    members: tuple[str, ...] = ()  # model ids; empty: every id in `models`
    # select: of greedy forward selection with replacement (Caruana et al. 2004), non-negative
    # stacking, the plain average and the best single member, each cross-fitted on halves of the
    # validation split, the lowest held-out logloss among those no worse than the single member on
    # either half; weighted: stacking, kept only if it beats the better of the average and the
    # single member on both halves by two standard errors; average: the plain mean of the logits.
    # See ensembles/blend.py.
    method: typing.Literal["select", "weighted", "average"] = "select"
    rounds: int = 20  # select: greedy steps (the selected ensemble has at most this many picks)
    bags: int = 1  # select: > 1 averages the selections over random halves of the members

    def __post_init__(self):
        if self.rounds < 1 or self.bags < 1:
            raise ValueError(f"config.ensemble.blends[{self.name}]: rounds and bags must be >= 1 "
                             f"(rounds {self.rounds}, bags {self.bags})")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    source: typing.Literal["06_calibrate", "05_train"] = "06_calibrate"  # member predictions
    blends: tuple[BlendConfig, ...] = (BlendConfig(),)


@dataclasses.dataclass(frozen=True)
class SubmitConfig:
    # "07_ensemble/NAME", "06_calibrate/ID" or "05_train/ID"; null: the first blend.
    source: str | None = None
    gzip: bool = True
    # null: submissions/csv/ (under <artifacts root>/submissions/ when --artifacts is not the
    # repository's artifacts/).
    output_dir: str | None = None
    upload: bool = False  # stage 09: submit the file to Kaggle with the kaggle CLI
    message: str | None = None  # Kaggle submission message; null: tag, source, valid logloss


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Stage 05's hyperparameter search (models/tune.py, one study per id)."""
    models: tuple[str, ...] = ()  # ids searched before training; ./run.sh --tune adds to them
    trials: int = 20  # finished trials per study (complete, pruned or failed)
    minutes: float | None = 60.0  # wall minutes per study, summed over resumed runs; null: none
    seed: int = 2014  # TPE sampler
    # Trials train on the training split less its last `holdout_fraction` and are scored on that
    # part; the validation split stays for the final model, stages 06-07 and the report.
    holdout_fraction: float = 1 / 7

    def __post_init__(self):
        if self.trials < 1 or (self.minutes is not None and self.minutes <= 0) or \
                not 0 < self.holdout_fraction < 1:
            raise ValueError(f"config.tune: trials >= 1, minutes > 0 or null and 0 < "
                             f"holdout_fraction < 1 required (trials {self.trials}, minutes "
                             f"{self.minutes}, holdout_fraction {self.holdout_fraction})")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    raw: RawConfig = RawConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    split: SplitConfig = SplitConfig()
    count: CountConfig = CountConfig()
    hash: HashConfig = HashConfig()
    export: ExportConfig = ExportConfig()
    leaves: LeavesConfig = LeavesConfig()
    models: tuple[str, ...] = ()
    tune: TuneConfig = TuneConfig()
    seed: int = 2014
    calibrate: CalibrateConfig = CalibrateConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    submit: SubmitConfig = SubmitConfig()


def artifacts_default() -> Path | None:
    """$CRITEO_PNN_ARTIFACTS, the default of every command's `--artifacts` (None when unset):
    the one place the environment is read for it, when a command line is parsed."""
    value = os.environ.get(ARTIFACTS_VARIABLE)
    return Path(value) if value else None


def add_artifacts_option(parser: argparse.ArgumentParser) -> None:
    """`--artifacts DIR`, defaulting to $CRITEO_PNN_ARTIFACTS as the parser is built."""
    parser.add_argument("--artifacts", type=Path, default=artifacts_default(), metavar="DIR",
                        help="artifacts root holding <tag>/ (default: $CRITEO_PNN_ARTIFACTS if "
                             "set, else artifacts/ under the repository)")


def apply_artifacts(args: argparse.Namespace) -> None:
    """Makes `args.artifacts`, when given, this process's artifacts root (pipeline.paths); None
    keeps the current one (artifacts/ under the repository unless set before)."""
    if getattr(args, "artifacts", None):
        paths.set_artifacts_root(args.artifacts)


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tag", default="demo", help="artifact tree: <artifacts>/<tag>/")
    add_artifacts_option(parser)
    parser.add_argument("--config", action="append", default=[],
                        help="YAML overlay(s) on configs/pipeline.yaml, applied in order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set hash.mode=md5")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser


def load_pipeline_config(config_files=(), overrides=()) -> PipelineConfig:
    data = config_lib.load_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    for path in config_files:
        data = config_lib.merge(data, config_lib.load_yaml(path))
    for override in overrides:
        data = config_lib.merge(data, config_lib.parse_override(override))
    return config_lib.build(PipelineConfig, data)


def from_args(args: argparse.Namespace) -> PipelineConfig:
    """The config of a command on `args.tag` under its `--artifacts` root (which becomes the
    process's root): the tag's remembered overlays (pipeline.tags), then the command's own
    --config files and --set overrides."""
    apply_artifacts(args)
    return load_pipeline_config(*tags.resolve(args.tag, args.config, args.set))


def start_stage(module_doc: str, make_stage, argv=None):
    """A stage entry point's preamble: parses the command line (described by the first line of
    `module_doc`), loads the config and builds the Stage; returns (args, config, stage), or None
    when the stage is up to date (said by `should_run`)."""
    args = stage_parser(module_doc.splitlines()[0]).parse_args(argv)
    config = from_args(args)
    stage = make_stage(args.tag, config)
    return (args, config, stage) if stage.should_run(args.force) else None
