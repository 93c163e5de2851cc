"""A self-contained model bundle: one folder that scores raw rows with no artifact tree.

Layout (`export` writes it, `load_plan` reads it):
  manifest.json         format and bundle version, the library versions it was exported with,
                        the tag and source, the field spec of 03_hash (and 04_leaves), the raw
                        row settings, the training click rate, the GBDT indicator columns, every
                        member (kind, input, calibrator, best round, column names) and the blend
  vocabulary.npz        per field: value codes that own an id, their ids, the rare training codes
  leaves/gbdt.json      the winners' 30 trees and their leaf keys (`leaves.json`), when a member
  leaves/leaves.json    reads the 69 fields of 04_leaves
  members/<id>/model.*  model.keras, libFFM model.npy, xgboost model.json or lightgbm model.txt;
  members/<id>/code_of_id.npy   a raw-column GBDT's category code of each global id

Loading checks the manifest: another bundle version, or another major.minor version of a library
a member needs (Keras, xgboost, lightgbm) than the one it was exported with, is refused with the
versions and what to do. The manifest is written last: a folder without one is no bundle.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np

from criteo_pnn.artifacts import FIELDS_69, Plan
from pipeline import errors

FORMAT = "criteo-pnn-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
# Library -> the distributions that install it (requirements.txt has tensorflow-cpu).
LIBRARIES = {"numpy": ("numpy",), "keras": ("keras",),
             "tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",),
             "xgboost": ("xgboost",), "lightgbm": ("lightgbm",), "numba": ("numba",),
             "pandas": ("pandas",)}


def _installed(distributions: tuple) -> str | None:
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    versions.update({name: _installed(distributions) for name, distributions in LIBRARIES.items()})
    return versions


def needed_libraries(manifest: dict) -> list[str]:
    """The libraries whose saved formats the members' model files are in."""
    kinds = {member["kind"] for member in manifest["members"]}
    needed = ["keras"] if "keras" in kinds else []
    if "xgboost" in kinds or any(member["input"] == FIELDS_69 for member in manifest["members"]):
        needed.append("xgboost")
    if "lightgbm" in kinds:
        needed.append("lightgbm")
    return needed


def _major_minor(version: str | None) -> tuple:
    return tuple((version or "").split(".")[:2])


def check_versions(manifest: dict, where: str) -> None:
    """Refuses a bundle of another format or bundle version, or exported with another
    major.minor version of a library its members need."""
    if manifest.get("format") != FORMAT:
        raise errors.InputError(f"{where}: not a criteo-pnn bundle (manifest format "
                                f"{manifest.get('format')!r}); make one with ./run.sh export")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise errors.InputError(
            f"{where}: bundle version {manifest.get('bundle_version')!r}, this code reads version "
            f"{BUNDLE_VERSION}; export it again with this code (./run.sh export --tag "
            f"{manifest.get('tag')} --out DIR)")
    exported, here = manifest.get("versions", {}), library_versions()
    for name in needed_libraries(manifest):
        if _major_minor(exported.get(name)) != _major_minor(here[name]):
            raise errors.InputError(
                f"{where}: exported with {name} {exported.get(name)}, this environment has "
                f"{name} {here[name]}; its model files need the same {name} major.minor version: "
                f"install {name}=={exported.get(name)} (requirements.txt pins it) or export the "
                f"bundle again in this environment")


def _array_file(name: str, value) -> str:
    return name + (".npz" if isinstance(value, dict) else ".npy")


def export(plan: Plan, out: Path, force: bool = False) -> Path:
    """Writes `plan` as a bundle folder `out` (built beside it, renamed into place); returns
    `out`. An existing `out` is refused unless `force` (then replaced)."""
    out = Path(out)
    if out.exists() and not force:
        raise errors.InputError(f"{out}: exists; choose a new folder or pass --force to replace "
                                "it")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        with errors.writing(temporary):
            arrays = {}
            for name in plan.array_loaders:
                value = plan.array(name)
                arrays[name] = _array_file(name, value)
                path = temporary / arrays[name]
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(value, dict):
                    np.savez(path, **value)
                else:
                    np.save(path, value)
            for name, source in plan.files.items():
                (temporary / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, temporary / name)
            manifest = {"format": FORMAT, "bundle_version": BUNDLE_VERSION,
                        "exported": datetime.datetime.now(datetime.UTC).isoformat(
                            timespec="seconds"),
                        "versions": library_versions(), **plan.manifest,
                        "arrays": arrays, "files": sorted(plan.files)}
            (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file() and \
        json.loads((Path(path) / MANIFEST).read_text()).get("format") == FORMAT


def load_plan(directory: Path, check: bool = True) -> Plan:
    """The Plan of a bundle folder; `check`: refuse mismatched versions (check_versions)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise errors.InputNotFound(f"{directory}: no {MANIFEST}; not a bundle (make one with "
                                   "./run.sh export)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise errors.InputError(f"{path}: unreadable ({error}); export the bundle again") \
            from error
    if check:
        check_versions(manifest, str(directory))
    missing = [name for name in [*manifest["arrays"].values(), *manifest["files"]]
               if not (directory / name).is_file()]
    if missing:
        raise errors.InputError(f"{directory}: incomplete bundle, {missing[0]} is missing; "
                                "export it again")

    def loader(file_name: str):
        def load():
            if file_name.endswith(".npz"):
                with np.load(directory / file_name) as archive:
                    return {key: archive[key] for key in archive.files}
            return np.load(directory / file_name)
        return load

    loaders = {name: loader(file_name) for name, file_name in manifest["arrays"].items()}
    files = {name: directory / name for name in manifest["files"]}
    return Plan(manifest, loaders, files, str(directory))
