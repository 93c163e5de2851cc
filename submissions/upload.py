"""Kaggle upload and download through the official `kaggle` CLI (opt-in; never run by default).

    python -m submissions.upload FILE [-m MESSAGE]     submit one file (validated first)
    python -m submissions.upload --download [--dest data/raw]
                                                      download the competition data for stage 00
    python -m submissions.upload --tag T [--set submit.upload=true]
                                                      stage 09: submit stage 08's file

The CLI (`pip install kaggle`) is not a project requirement: only these commands need it. It reads
credentials from ~/.kaggle/kaggle.json ($KAGGLE_CONFIG_DIR/kaggle.json) or KAGGLE_USERNAME and
KAGGLE_KEY; both are checked first so a missing piece gives one clear message. Kaggle refuses
files without the 6,042,135 test rows, so only a full-size valid file is uploaded. Stage 09
uploads once per stage 08 file (it is skipped while up to date) and only with submit.upload=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from preprocessing.schema import FULL_TEST_ROWS
from pipeline import settings
from pipeline.manifest import Stage
from pipeline.paths import REPO_ROOT, stage_dir
from submissions.validate import validate
from submissions.write import no_test_set

COMPETITION = "criteo-display-ad-challenge"
RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"


class KaggleError(RuntimeError):
    """The CLI or credentials are missing, or a CLI command failed."""


def find_cli() -> str:
    path = shutil.which("kaggle")
    if path is None:
        raise KaggleError("the kaggle command is not installed (or not on PATH): "
                          "pip install kaggle  (https://github.com/Kaggle/kaggle-api)")
    return path


def credentials_source() -> str:
    """Where the CLI will find credentials; KaggleError with instructions if nowhere."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    if (config_dir / "kaggle.json").is_file():
        return str(config_dir / "kaggle.json")
    raise KaggleError(f"no Kaggle credentials: create an API token on "
                      f"https://www.kaggle.com/settings (API, Create New Token), save it as "
                      f"{config_dir / 'kaggle.json'} (chmod 600), or set KAGGLE_USERNAME and "
                      f"KAGGLE_KEY")


def run_cli(arguments: list[str]) -> None:
    cli = find_cli()
    credentials_source()
    print("$ kaggle " + " ".join(arguments), flush=True)
    result = subprocess.run([cli, *arguments], check=False)
    if result.returncode != 0:
        raise KaggleError(f"kaggle {arguments[0]} {arguments[1]} failed "
                          f"(exit {result.returncode}); a 403 means the competition rules are "
                          f"not accepted yet: {RULES_URL}")


def upload(path: Path, message: str, rows: int = FULL_TEST_ROWS) -> None:
    """Validates `path` against the Kaggle test set and submits it."""
    find_cli()  # the cheap checks first: validating 6M rows takes a while
    credentials_source()
    summary = validate(path, rows=rows)
    print(f"{path}: valid, {summary.rows:,} rows")
    run_cli(["competitions", "submit", "-c", COMPETITION, "-f", str(path), "-m", message])
    print(f"submitted; scores: kaggle competitions submissions -c {COMPETITION}")


def download(destination: Path) -> list[Path]:
    """Downloads the competition files into `destination` and unpacks the zip archives."""
    destination.mkdir(parents=True, exist_ok=True)
    before = set(destination.iterdir())
    run_cli(["competitions", "download", "-c", COMPETITION, "-p", str(destination)])
    archives = [path for path in destination.iterdir()
                if path not in before and path.suffix == ".zip"]
    while archives:  # Kaggle zips the competition; its files may be zipped again inside
        archive = archives.pop()
        with zipfile.ZipFile(archive) as handle:
            names = handle.namelist()
            handle.extractall(destination)
        archive.unlink()  # re-downloadable, and the raw files are large
        archives += [destination / name for name in names if name.endswith(".zip")]
    files = sorted(path for path in destination.iterdir() if path not in before)
    print("downloaded: " + ", ".join(path.name for path in files))
    return files


def make_stage(tag: str, config: settings.PipelineConfig) -> Stage:
    return Stage(tag, "09_upload", {"message": config.submit.message},
                 inputs=[stage_dir(tag, "08_submit")])


def make_stages(tag: str, config: settings.PipelineConfig) -> list[Stage]:
    return [make_stage(tag, config)] if config.submit.upload and not no_test_set(tag) else []


def upload_stage(tag: str, config: settings.PipelineConfig, force: bool = False) -> None:
    """Stage 09: submits stage 08's file once, only when submit.upload is true."""
    if not config.submit.upload:
        print("[09_upload] skipped: uploading to Kaggle is opt-in "
              "(--set submit.upload=true, or python -m submissions.upload FILE)")
        return
    reason = no_test_set(tag)
    if reason:
        print(f"[09_upload] skipped: {reason}")
        return
    stage = make_stage(tag, config)
    if not stage.should_run(force):
        return
    record = json.loads((stage_dir(tag, "08_submit") / "submission.json").read_text())
    if record["rows"] != FULL_TEST_ROWS:
        raise KaggleError(f"{record['file']} has {record['rows']:,} rows, not the Kaggle test "
                          f"set's {FULL_TEST_ROWS:,}; Kaggle would reject it (is tag {tag} a "
                          f"demo or sample run?)")
    message = config.submit.message or (f"criteo-pnn {tag} {record['source']}, valid logloss "
                                        f"{record['valid_logloss']:.5f}")
    with stage.build() as out:
        upload(Path(record["path"]), message)
        (out / "upload.json").write_text(json.dumps(
            {"file": record["file"], "md5": record["md5"], "message": message}, indent=1) + "\n")


def main(argv=None) -> int:
    parser = settings.stage_parser(__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, help="submission file to upload")
    parser.add_argument("-m", "--message", default=None, help="Kaggle submission message")
    parser.add_argument("--rows", type=int, default=FULL_TEST_ROWS,
                        help=f"rows FILE must have (default {FULL_TEST_ROWS:,}, the test set)")
    parser.add_argument("--download", action="store_true",
                        help="download the competition data (into --dest)")
    parser.add_argument("--dest", type=Path, default=REPO_ROOT / "data" / "raw",
                        help="download folder (default data/raw/, where stage 00 looks)")
    args = parser.parse_args(argv)
    try:
        if args.download:
            download(args.dest)
        elif args.file is not None:
            upload(args.file, args.message or f"criteo-pnn {args.file.name}", rows=args.rows)
        else:
            upload_stage(args.tag, settings.from_args(args), force=args.force)
    except (KaggleError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
