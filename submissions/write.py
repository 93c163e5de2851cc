"""Stage 08: write the Kaggle submission of one prediction folder.

Reads `submit.source` (`07_ensemble/NAME`, `06_calibrate/ID` or `05_train/ID`; default the first
blend of `ensemble.blends`): its `test.pred.npy` and `metrics.json`; and `03_hash/` (test Ids).
Writes `submissions/csv/<YYYYMMDD-HHMMSS>_<tag>_<source id>.csv.gz` (`submit.gzip`,
`submit.output_dir`), appends a row to `artifacts/<tag>/SUBMISSIONS.md` (every file of the tag)
and, for files with the full Kaggle test set only, to the tracked `submissions/LOG.md`, and
records the file in `artifacts/<tag>/08_submit/submission.json` (which `ensembles.report` shows
in REPORT.md, refreshed by ./run.sh after the stages).

LOG.md is the history of what could be uploaded: the demo, tests and sample runs (whatever
their tag) write files Kaggle would reject, so they stay in their tag's git-ignored log.

The file is `Id,Predicted`, one row per test row in order, Ids 60000000 + row, probabilities
clipped to [1e-6, 1 - 1e-6] with 6 significant digits (as the winners' libffm output). Its row
count and Ids are checked against the test rows stage 00 counted in test.txt
(`00_raw/raw.json`), never against what a later stage kept: 03_hash holding another number of
test rows is an error, and so is a file that does not have exactly those rows. It is written
under a temporary name, checked by `submissions.validate`, and only then renamed, so an invalid
or half-written file never carries a submission name. On another artifacts root
(`--artifacts DIR`: tests, scratch runs) csv/ and LOG.md live under DIR/submissions/ instead of
the repository's submissions/.

A tag whose stage 03 holds no test rows (the Criteo 1TB input) has nothing to submit: the stage
says so and writes nothing (no file or log row), and is not listed by `--list`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ensembles import read_predictions
from preprocessing.field_spec import SPEC_FILE, FieldSpec, open_field_files
from preprocessing.schema import CRITEO_1TB, FULL_TEST_ROWS, TEST_ID_START
from pipeline import errors, settings
from pipeline.atomic import replacing
from pipeline.manifest import Stage, file_md5, in_use
from pipeline.paths import REPO_ROOT, artifacts_root, stage_dir
from submissions.validate import HEADER, SubmissionError, SubmissionSummary, \
    stage_00_test_rows, validate

CLIP = 1e-6  # the clip of the authors' KFM writer: Kaggle's logloss punishes 0 and 1 without bound
CHUNK_ROWS = 1 << 20
GZIP_LEVEL = 6
SOURCE_STAGES = ("07_ensemble", "06_calibrate", "05_train")
LOG_HEADER = """# Submission log

One row per file written by stage 08 (`./run.sh`, or `python -m submissions.write --tag T`)
{scope}.
Validation metrics are those of the source on the time-ordered validation split; fill in the
leaderboard columns after uploading (`python -m submissions.upload FILE`).

| written (UTC) | file | tag | source | models | calibration | valid logloss | valid AUC | rows \
| public LB | private LB |
|---|---|---|---|---|---|---|---|---|---|---|
"""
# The tracked LOG.md takes files with exactly this many rows: the Kaggle test set.
KAGGLE_LOG_ROWS = FULL_TEST_ROWS
KAGGLE_LOG_SCOPE = ("that holds the full Kaggle test set (6,042,135 rows); demo, test and sample\n"
                    "runs are logged only in their own artifacts/<tag>/SUBMISSIONS.md")
TAG_LOG = "SUBMISSIONS.md"


def submissions_root() -> Path:
    """The repository's submissions/, or <root>/submissions on another artifacts root."""
    if artifacts_root() != REPO_ROOT / "artifacts":
        return artifacts_root() / "submissions"
    return REPO_ROOT / "submissions"


def output_dir(config: settings.SubmitConfig) -> Path:
    if config.output_dir is None:
        return submissions_root() / "csv"
    path = Path(config.output_dir)
    return path if path.is_absolute() else REPO_ROOT / path


def write_submission(path: Path, ids: np.ndarray, probabilities: np.ndarray, *,
                     rows: int) -> SubmissionSummary:
    """Writes and validates `path` (gzip when it ends in .gz); returns the validator's summary.

    Args:
        ids: int64 [N], the test Ids, which must be 60000000 + row.
        probabilities: [N] finite click probabilities, clipped here to [1e-6, 1 - 1e-6].
        rows: the test rows stage 00 counted (`validate.stage_00_test_rows`): N must equal it,
            and the file is validated against it.
    """
    path = Path(path)
    ids = np.asarray(ids, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.shape != ids.shape or ids.ndim != 1 or len(ids) == 0:
        raise errors.InputError(f"{path.name}: {probabilities.shape} predictions for {ids.shape} test Ids")
    if len(ids) != rows:
        raise SubmissionError(f"{path.name}: {len(ids):,} test Ids, but stage 00 counted {rows:,} "
                              f"test rows; a submission needs exactly one row per test line")
    if not np.array_equal(ids, TEST_ID_START + np.arange(len(ids))):
        row = int(np.argmax(ids != TEST_ID_START + np.arange(len(ids))))
        raise errors.InputError(f"{path.name}: test Id {ids[row]} at row {row}, expected "
                         f"{TEST_ID_START + row}; the test Ids must be 60000000 + row")
    if not np.isfinite(probabilities).all():
        row = int(np.argmax(~np.isfinite(probabilities)))
        raise errors.InputError(f"{path.name}: non-finite prediction {probabilities[row]} at test row "
                         f"{row}")
    probabilities = np.clip(probabilities, CLIP, 1 - CLIP)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary:
        _write(temporary, ids, probabilities, compress=path.suffix == ".gz", label=path.name)
        summary = validate(temporary, rows=rows)
    return SubmissionSummary(**{**summary.__dict__, "path": str(path)})


def csv_text(frame: pd.DataFrame, header: bool) -> bytes:
    """The `Id,Predicted` CSV lines of `frame` (columns Id, Predicted: probabilities already
    clipped), with the header line first when `header`; also what `./run.sh predict` writes.

    `frame.to_csv(index=False, float_format="%.6g", lineterminator="\\n")` gives the same bytes,
    2.3 times slower (6.8 against 2.9 CPU seconds for the 6,042,135 Kaggle test rows,
    bench/submission.py), so the rows are formatted here."""
    rows = zip(frame["Id"].tolist(), frame["Predicted"].tolist())
    text = "".join([f"{row_id},{probability:.6g}\n" for row_id, probability in rows])
    return ((HEADER.decode() + "\n" if header else "") + text).encode()


def _write(path: Path, ids: np.ndarray, probabilities: np.ndarray, compress: bool,
           label: str) -> None:
    """The CSV in chunks of rows; gzip through zlib (wbits 31), whose header has no file name or
    time stamp (Python's gzip module would write its own OS byte), so the same predictions
    always give the same bytes."""
    frame = pd.DataFrame({"Id": ids, "Predicted": probabilities})
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if compress else None
    with open(path, "wb") as handle:
        for start in tqdm(range(0, len(frame), CHUNK_ROWS), desc=f"writing {label}",
                          unit="chunk", disable=len(frame) <= CHUNK_ROWS):
            text = csv_text(frame[start:start + CHUNK_ROWS], header=start == 0)
            handle.write(compressor.compress(text) if compressor else text)
        if compressor:
            handle.write(compressor.flush())


def resolve_source(config: settings.PipelineConfig) -> str:
    """`submit.source`, or the first blend; ValueError on a malformed value."""
    source = config.submit.source
    if source is None:
        if not config.ensemble.blends:
            raise errors.InputError("submit.source: null needs at least one entry in ensemble.blends")
        return f"07_ensemble/{config.ensemble.blends[0].name}"
    parts = source.split("/")
    if len(parts) != 2 or parts[0] not in SOURCE_STAGES or not parts[1]:
        raise errors.InputError(f"submit.source={source!r}: expected STAGE/ID with STAGE one of "
                         f"{SOURCE_STAGES}, e.g. 07_ensemble/ens_logit or 06_calibrate/ipnn")
    return source


def source_description(tag: str, source: str) -> dict:
    """The source's validation metrics, member models and their calibration, for LOG.md."""
    stage, unit = source.split("/")
    source_metrics = json.loads((stage_dir(tag, stage, unit) / "metrics.json").read_text())
    members = source_metrics.get("members", [unit])
    if stage == "07_ensemble":
        upstream = source_metrics["source"]
    else:
        upstream = stage
    calibration = {}
    for member in members:
        calibrated = stage_dir(tag, "06_calibrate", member) / "calibrator.json"
        calibration[member] = (json.loads(calibrated.read_text())["method"]
                               if upstream == "06_calibrate" else "none")
    return {"valid_logloss": source_metrics.get("valid_logloss"),
            "valid_auc": source_metrics.get("valid_auc"), "members": members,
            "calibration": calibration}


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    source = resolve_source(config)
    stage_settings = {"source": source, "gzip": config.submit.gzip,
                      "output_dir": config.submit.output_dir}
    return Stage(tag, "08_submit", stage_settings,
                 inputs=[stage_dir(tag, *source.split("/")), stage_dir(tag, "03_hash")])


def make_stages(tag: str, config: settings.PipelineConfig) -> list[Stage]:
    return [] if no_test_set(tag) else [make_stage(tag, config)]


def no_test_set(tag: str) -> str | None:
    """Why there is nothing to submit when stage 03 holds no test rows (the Criteo 1TB logs have
    no Kaggle test set), else None."""
    if not (stage_dir(tag, "03_hash") / SPEC_FILE).exists():
        return None
    spec = FieldSpec.load(stage_dir(tag, "03_hash"))
    if spec.rows["test"]:
        return None
    source = spec.extra.get("source")
    return (f"the {'Criteo 1TB' if source == CRITEO_1TB else source} input has no test set; "
            f"nothing to submit")


def submit(tag: str, config: settings.PipelineConfig, force: bool = False) -> dict | None:
    """Writes, validates and logs one submission; returns its record (None when up to date).

    The file is written and validated inside the stage's temporary folder and published with
    08_submit/; only then is it linked into submissions/csv/ and logged (`deliver`), which every
    run repeats where it is missing: a run killed at any point leaves no unlogged file in csv/,
    and its rerun completes what the kill cut short."""
    stage = make_stage(tag, config)
    if not stage.should_run(force):
        deliver(tag)
        return None
    source = resolve_source(config)
    spec, splits = open_field_files(stage_dir(tag, "03_hash"), splits=("test",))
    test_rows = stage_00_test_rows(tag)
    if spec.rows["test"] != test_rows:
        raise SubmissionError(
            f"{stage_dir(tag, '03_hash')}: 03_hash holds {spec.rows['test']:,} test rows, but "
            f"stage 00 counted {test_rows:,} in test.txt (00_raw/raw.json); every test row needs "
            f"a prediction: rebuild from stage 03 (./run.sh --from 03)")
    predictions = read_predictions(stage_dir(tag, *source.split("/")), "test", spec.rows["test"])
    description = source_description(tag, source)
    written = datetime.datetime.now(datetime.UTC)
    name = f"{written:%Y%m%d-%H%M%S}_{tag}_{source.split('/')[1]}.csv"
    path = output_dir(config.submit) / (name + ".gz" if config.submit.gzip else name)
    with stage.build() as out:
        summary = write_submission(out / path.name, np.asarray(splits["test"].ids), predictions,
                                   rows=test_rows)
        record = {"file": _shown_path(path), "path": str(path), "source": source,
                  "rows": summary.rows, "md5": file_md5(out / path.name),
                  "mean_prediction": summary.mean_prediction,
                  "written": written.isoformat(timespec="seconds"), **description}
        (out / "submission.json").write_text(json.dumps(record, indent=1) + "\n")
        stage.record(submission={key: record[key] for key in ("file", "rows", "md5")})
    logs = deliver(tag)
    print(f"  wrote {record['file']}: {summary.rows:,} rows, validated; mean prediction "
          f"{summary.mean_prediction:.5f}; logged in "
          f"{' and '.join(_shown_path(log) for log in logs)}")
    return record


def deliver(tag: str) -> list[Path]:
    """Puts 08_submit's file at its recorded path (a hard link, else a copy, renamed into place)
    and its row in the logs, where either is missing; removes temporary files of killed runs
    of this tag. Returns the logs."""
    record_path = stage_dir(tag, "08_submit") / "submission.json"
    if not record_path.exists():
        return []
    record = json.loads(record_path.read_text())
    published, target = stage_dir(tag, "08_submit") / Path(record["path"]).name, \
        Path(record["path"])
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".*_{tag}_*.tmp-*"):
        if not in_use(leftover):
            leftover.unlink(missing_ok=True)
    if not target.exists() or file_md5(target) != record["md5"]:
        with replacing(target) as temporary:
            temporary.unlink(missing_ok=True)
            try:
                os.link(published, temporary)
            except OSError:
                shutil.copyfile(published, temporary)
        print(f"[08_submit] placed {record['file']}")
    logs = log_paths(tag, record["rows"])
    for log in logs:
        if not log.exists() or f"`{target.name}`" not in log.read_text():
            append_log(log, tag, record)
    return logs


def log_paths(tag: str, rows: int) -> list[Path]:
    """The tag's own log, plus the tracked submissions/LOG.md for a full Kaggle test set."""
    logs = [artifacts_root() / tag / TAG_LOG]
    if rows == KAGGLE_LOG_ROWS:
        logs.append(submissions_root() / "LOG.md")
    return logs


def append_log(log: Path, tag: str, record: dict) -> None:
    """Appends one row for `record` to LOG.md, creating the file with its header if needed."""
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        scope = KAGGLE_LOG_SCOPE if log.name == "LOG.md" else f"for tag `{tag}`"
        log.write_text(LOG_HEADER.format(scope=scope))
    calibration = "; ".join(f"{member}: {method}" for member, method in
                            record["calibration"].items())
    cells = [record["written"].replace("+00:00", "Z"), f"`{Path(record['file']).name}`", tag,
             record["source"], ", ".join(record["members"]), calibration,
             _format(record["valid_logloss"], 5), _format(record["valid_auc"], 4),
             f"{record['rows']:,}", "", ""]
    with open(log, "a") as handle:
        handle.write("| " + " | ".join(cells) + " |\n")


def _format(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv=None) -> None:
    args = settings.stage_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = settings.from_args(args)
    reason = no_test_set(args.tag)
    if reason:
        print(f"[08_submit] skipped: {reason}")
        return
    submit(args.tag, config, force=args.force)


if __name__ == "__main__":
    main()
