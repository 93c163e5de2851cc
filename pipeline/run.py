"""`./run.sh`: runs the selected stages in registry order, skipping those already done.

Each stage runs as its own process through its script `stages/<folder>.sh`. Before a stage runs,
the status table that `--list` prints (`pipeline.status.rows`) is computed again: a stage whose
input is stale or missing and not selected in this run is refused with the reason and the command
that rebuilds the input, so `--only` never builds on (or skips past) stale work that `--list`
reports. TensorFlow/absl start-up logs are dropped from the stages' stderr unless --verbose.
Every stage gets the run's artifacts root as its `--artifacts` argument. A run that selected any
stage from 05 on then refreshes the tag's REPORT.md (`python -m ensembles.report`, no stage).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from preprocessing.schema import FULL_TEST_ROWS, FULL_TRAIN_ROWS
from pipeline import errors, registry, settings, status, tags
from pipeline.paths import DEFAULT_ARTIFACTS, REPO_ROOT, artifacts_root

# TensorFlow's C++ start-up lines (before absl logging is set up, so TF_CPP_MIN_LOG_LEVEL does
# not reach them): absl's notice, oneDNN and cpu_feature_guard info lines and their follow-up.
# A run of any stage from this one on refreshes REPORT.md (the models, blends and submission).
REPORT_AFTER = "05"
NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                   rb"[IW]0000 00:00:\d+\.\d+ +\d+ [\w.]+:\d+\]|"
                   rb"To enable the following instructions: .* rebuild TensorFlow)")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./run.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="raw input folder")
    parser.add_argument("--tag", help="artifact tree <artifacts>/<tag>/")
    settings.add_artifacts_option(parser)
    parser.add_argument("--only", default="", help="run only these stage numbers, e.g. 02,03")
    parser.add_argument("--from", dest="start", default="", help="run stage NN and later ones")
    parser.add_argument("--force", action="store_true", help="rebuild the selected stages")
    parser.add_argument("--list", action="store_true", help="print every stage's status")
    parser.add_argument("--model", help="stage 05: train only this model id")
    parser.add_argument("--tune", metavar="ID[,ID]", help="stage 05: search these ids' "
                        "hyperparameters first and train them with the best (Optuna, "
                        "models/tune.py); added to tune.models and remembered with the tag")
    parser.add_argument("--rows", type=int, help="synthetic data: N train rows")
    parser.add_argument("--config", action="append", default=[], help="YAML overlay")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's start-up logs")
    return parser


def has_day_files(directory: Path) -> bool:
    return any(directory.glob("day_[0-9]*"))


def has_raw_data(directory: Path) -> bool:
    return any(directory.glob("train.*")) or (directory / "dac.tar.gz").is_file() \
        or has_day_files(directory)


def default_tag(data: str | None) -> str:
    """criteo1tb for day files, kaggle for other raw files, demo for the synthetic data."""
    directory = Path(data) if data else REPO_ROOT / "data" / "raw"
    if has_day_files(directory):
        return "criteo1tb"
    return "kaggle" if has_raw_data(directory) else "demo"


def command_overrides(args) -> list[str]:
    overrides = []
    if args.data:
        overrides.append(f"{tags.DATA_KEY}={Path(args.data).resolve()}")
    if args.rows:
        overrides += [f"synthetic.train_rows={args.rows}",
                      f"synthetic.test_rows={args.rows * FULL_TEST_ROWS // FULL_TRAIN_ROWS + 1}"]
    return overrides + list(args.set)


def run_sh(tag: str) -> str:
    """`./run.sh --tag TAG`, with the --artifacts of this run when it is not the default."""
    root = artifacts_root()
    return "./run.sh" + ("" if root == DEFAULT_ARTIFACTS else f" --artifacts {root}") + \
        f" --tag {tag}"


def refusal(stage, states: dict, tag: str, selected_numbers: set[str]) -> str | None:
    """Why `stage` cannot run now (an input neither done nor about to be built), or None."""
    for path in stage.inputs:
        label = status.label_of(path, tag)
        if label.split("/")[0] == stage.name:
            continue  # another unit of the same stage (an FM before the FNN it initialises)
        state, why = states.get(label, ("missing", "not a stage of this tree"))
        if state != "done":
            folder = label.split("/")[0]
            number = registry.BY_FOLDER[folder].number if folder in registry.BY_FOLDER else ""
            hint = f"{run_sh(tag)} --from {number}" if number else "rebuild it"
            if number in selected_numbers:
                hint = "it failed or was skipped above"
            return (f"[{stage.label}] cannot run: its input {label} is {state} ({why}); "
                    f"rebuild it first: {hint}")
    return None


def stage_command(entry: registry.StageEntry, args, config_files, overrides) -> list[str]:
    command = ["bash", str(entry.script), "--artifacts", str(artifacts_root()), "--tag", args.tag]
    for path in config_files:
        command += ["--config", str(path)]
    for override in overrides:
        command += ["--set", override]
    if args.force:
        command.append("--force")
    if args.model and entry.folder == "05_train":
        command += ["--model", args.model]
    return command


def report_command(tag: str) -> list[str]:
    """`python -m ensembles.report` on the tag: REPORT.md over what the stages left."""
    return [os.environ.get("PYTHON", sys.executable), "-m", "ensembles.report", "--artifacts",
            str(artifacts_root()), "--tag", tag]


def filtered_copy(source, target) -> None:
    """Copies bytes from `source` to `target`, dropping NOISE lines; carriage-return updates
    (progress bars) pass at once."""
    pending = b""
    while chunk := source.read1(1 << 16):
        pending += chunk
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
        if cut:
            _write_kept(pending[:cut], target)
            pending = pending[cut:]
    _write_kept(pending, target)


def _write_kept(text: bytes, target) -> None:
    kept = b"".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))
    if kept:
        target.write(kept)
        target.flush()


def run_stage(command: list[str], verbose: bool) -> int:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    environment.setdefault("PYTHON", sys.executable)
    if verbose:
        return subprocess.run(command, env=environment).returncode
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE)
    copier = threading.Thread(target=filtered_copy, args=(process.stderr, sys.stderr.buffer))
    copier.start()
    code = process.wait()
    copier.join()
    return code


@contextlib.contextmanager
def quiet_native_logs(verbose: bool):
    """Drops NOISE lines that native libraries write to file descriptor 2 in this process."""
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            filtered_copy(capture, sys.stderr.buffer)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    settings.apply_artifacts(args)
    if args.data and not Path(args.data).is_dir():
        print(f"error: --data {args.data}: no such folder", file=sys.stderr)
        return errors.EXIT_STATUS
    args.tag = args.tag or default_tag(args.data)
    mine = command_overrides(args)
    try:
        selected = registry.select(args.only, args.start)
        if not args.force:
            tags.check_same_data(args.tag, mine)
        config_files, overrides = tags.resolve(args.tag, args.config, mine)
        config = settings.load_pipeline_config(config_files, overrides)
        if args.tune:  # a --set of tune.models: every stage and later command sees it
            from models.stage import tuned_ids  # loads Optuna: only when tuning
            mine.append(f"tune.models=[{', '.join(tuned_ids(config, args.tune))}]")
            config_files, overrides = tags.resolve(args.tag, args.config, mine)
            config = settings.load_pipeline_config(config_files, overrides)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {errors.describe(error) or error}", file=sys.stderr)
        return errors.EXIT_STATUS
    remembered_files, remembered_overrides = tags.remembered(args.tag)
    if remembered_files or remembered_overrides:
        shown = [f"--config {path}" for path in remembered_files] + \
            [f"--set {item}" for item in remembered_overrides]
        print(f"tag {args.tag}: with its remembered {' '.join(shown)} "
              f"({tags.tag_file(args.tag)})", file=sys.stderr)
    if args.list:
        with quiet_native_logs(args.verbose):
            table = status.rows(args.tag, config)
        status.print_rows(args.tag, table)
        return 0
    tags.save(args.tag, config_files, overrides)
    numbers = {entry.number for entry in selected}
    for entry in selected:
        with quiet_native_logs(args.verbose):
            table = status.stage_table(args.tag, config, upto=entry)
        states = {stage.label: (state, why) for _, stage, state, why in table}
        units = [stage for owner, stage, _, _ in table if owner is entry and
                 not (args.model and entry.folder == "05_train" and stage.unit != args.model)]
        earlier = {number for number in numbers if number < entry.number}
        for stage in units:
            problem = refusal(stage, states, args.tag, earlier)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return errors.EXIT_STATUS
        print(f"== stage {entry.folder}", file=sys.stderr, flush=True)
        code = run_stage(stage_command(entry, args, args.config, mine), args.verbose)
        if code:
            return code
    if any(entry.number >= REPORT_AFTER for entry in selected):
        code = run_stage(report_command(args.tag), args.verbose)
        if code:
            return code
    print(f"outputs: {artifacts_root() / args.tag}/ ({run_sh(args.tag)} --list for the "
          "status of every stage)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(errors.run(main))
