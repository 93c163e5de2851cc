"""Do two revisions produce the same demo outputs? The check behind "behaviour stays the same".

    python bench/same_outputs.py --base 098ebf4                  # base against HEAD
    python bench/same_outputs.py --base v1 --head v2 --rows 20000 --set 'models=[lr, ffm, ipnn]'

Checks out each revision into a temporary git worktree (sharing this checkout's .venv), runs
`./run.sh --tag same --rows N` there (stages 00-08, each side with its own artifacts/ and
submissions/), then compares every data file the two runs wrote: field files, vocabularies,
leaves, predictions, calibrated and blended scores, and the submission's CSV text after
decompression, the `.keras` files without their save time, and the outcome keys of metrics.json.
Manifests, resolved configs, logs, timings and figures are left out (they hold times, code
fingerprints and config keys a change may add, which differ by design). Prints one line per
differing file and exits 1 if any.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_SUFFIXES = {".npy", ".npz", ".bin", ".ffm", ".txt", ".csv", ".gz", ".u32", ".i32", ".f32",
                 ".keras", ".json"}
# records of a run rather than its data (times, fingerprints; resolved configs gain new keys)
SKIPPED_NAMES = {"manifest.json", "tag.json", "metrics.json", "history.csv", "config.json",
                 "config.resolved.json", "trials.csv", "raw.json", "submission.json"}
STAMP = re.compile(r"\d{8}-\d{6}_")  # the time prefix of a submission's file name
# metrics.json keys that are outcomes, not times or machine facts
OUTCOME_KEYS = ("valid_logloss", "valid_auc", "valid_rows", "epochs", "best_epoch")


def worktree(revision: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "-q",
                    str(folder), revision], check=True)
    (folder / ".venv").symlink_to(REPO_ROOT / ".venv")
    return folder


def run_demo(checkout: Path, rows: int, settings: list[str]) -> None:
    environment = {key: value for key, value in os.environ.items()
                   if key != "CRITEO_PNN_ARTIFACTS"}
    environment["TQDM_DISABLE"] = "1"
    command = ["./run.sh", "--tag", "same", "--rows", str(rows), "--only", "00,01,02,03,04,05,06,07,08"]
    for setting in settings:
        command += ["--set", setting]
    print("+", " ".join(command), f"(in {checkout})", flush=True)
    subprocess.run(command, cwd=checkout, env=environment, check=True)


def digest(path: Path) -> str:
    if path.name.endswith(".csv.gz"):
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    if path.suffix == ".keras":  # a zip with the save time in metadata.json: compare the rest
        return keras_digest(path)
    if path.name == "metrics.json":
        metrics = json.loads(path.read_text())
        return json.dumps({key: metrics.get(key) for key in OUTCOME_KEYS}, sort_keys=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keras_digest(path: Path) -> str:
    """The architecture and every weight array of a `.keras` file (HDF5 bytes may hold times)."""
    import h5py

    content = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        content.update(archive.read("config.json"))
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            def add(name, item):
                if isinstance(item, h5py.Dataset):
                    content.update(name.encode())
                    content.update(item[()].tobytes())
            weights.visititems(add)
    return content.hexdigest()


def outputs(checkout: Path) -> dict[str, str]:
    """Relative path -> digest of every compared file of one run."""
    found = {}
    roots = [checkout / "artifacts" / "same", checkout / "submissions" / "csv"]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or ".tmp-" in str(path) or "tensorboard" in path.parts:
                continue
            wanted = path.suffix in DATA_SUFFIXES and path.name not in SKIPPED_NAMES
            if wanted or path.name == "metrics.json":
                found[STAMP.sub("", str(path.relative_to(checkout)))] = digest(path)
    return found


def compare(base: dict[str, str], head: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(base.keys() | head.keys()):
        if name not in head:
            lines.append(f"only in base: {name}")
        elif name not in base:
            lines.append(f"only in head: {name}")
        elif base[name] != head[name]:
            lines.append(f"differs: {name}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--head", default="HEAD", help="the revision under test (default HEAD)")
    parser.add_argument("--rows", type=int, default=20000, help="synthetic training rows")
    parser.add_argument("--set", action="append", default=[], dest="settings",
                        metavar="KEY=VAL", help="pipeline overrides for both runs (repeatable)")
    args = parser.parse_args(argv)
    settings = args.settings or ["models=[lr, ffm, ipnn, lgbm_raw]"]
    with tempfile.TemporaryDirectory() as scratch:
        checkouts = {}
        try:
            for side, revision in (("base", args.base), ("head", args.head)):
                checkouts[side] = worktree(revision, Path(scratch) / side)
                run_demo(checkouts[side], args.rows, settings)
            found = {side: outputs(checkout) for side, checkout in checkouts.items()}
        finally:
            for checkout in checkouts.values():
                subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force",
                                str(checkout)], check=False)
    differences = compare(found["base"], found["head"])
    print(f"{len(found['head'])} files compared ({args.base} against {args.head}, "
          f"{args.rows} rows, {' '.join(settings)}): "
          f"{'identical' if not differences else f'{len(differences)} differ'}")
    for line in differences:
        print(" ", line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
