"""Stage manifests, fingerprints and atomic publishing.

A stage (or one unit of it, e.g. one model of stage 05) is *done* when its folder holds a
`manifest.json` whose fingerprint equals the fingerprint of the current config section, input
manifests and code. Outputs are built in a temporary sibling folder and renamed into place with the
manifest written last, so a run killed at any moment leaves the old complete output or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from pipeline import errors, registry
from pipeline.code import code_digests
from pipeline.paths import stage_dir

MANIFEST = "manifest.json"
RESOLVED_CONFIG = "config.resolved.json"


def digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def file_md5(path: Path, block: int = 1 << 22) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            md5.update(chunk)
    return md5.hexdigest()


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stage:
    """One stage (or unit) of one artifact tree.

    Args:
        tag: artifact tree name (`artifacts/<tag>/`).
        name: stage folder name, e.g. "03_hash".
        config: the resolved config this stage depends on (JSON-able).
        inputs: folders of upstream stages whose manifests this stage reads.
        code: the modules whose import closure is the stage's code (a change to any file in it
            makes the stage stale); default: the stage's entry module in `pipeline.registry`.
        unit: optional sub-unit (a model id for stage 05).
    """

    def __init__(self, tag: str, name: str, config: dict, inputs: list[Path],
                 code: tuple[str, ...] | str = (), unit: str | None = None):
        self.tag, self.name, self.unit = tag, name, unit
        self.directory = stage_dir(tag, name, unit)
        self.config = config
        self.inputs = [Path(path) for path in inputs]
        modules = (code,) if isinstance(code, str) else tuple(code)
        if not modules:
            entry = registry.entry_module(name)
            if entry is None:
                raise ValueError(f"stage {name}: not in pipeline.registry; name its code modules")
            modules = (entry,)
        self.code = code_digests(*modules)
        self.records: dict = {}
        self.started = time.time()

    @property
    def label(self) -> str:
        return f"{self.name}/{self.unit}" if self.unit else self.name

    def _input_fingerprints(self) -> dict[str, str | None]:
        result = {}
        for path in self.inputs:
            manifest = read_manifest(path)
            result[path.name if path.parent.name == self.tag else f"{path.parent.name}/{path.name}"] = \
                manifest["fingerprint"] if manifest else None
        return result

    def fingerprint(self) -> str:
        return digest({"stage": self.label, "config": self.config,
                       "inputs": self._input_fingerprints(), "code": self.code})

    def status(self) -> tuple[str, str]:
        """("done" | "stale" | "missing", why)."""
        missing = [name for name, value in self._input_fingerprints().items() if value is None]
        if missing:
            return "missing", f"input stage(s) not built: {', '.join(missing)}"
        manifest = read_manifest(self.directory)
        if manifest is None:
            return "missing", "never built"
        if manifest.get("fingerprint") == self.fingerprint():
            return "done", "up to date"
        return "stale", self._why_stale(manifest)

    def _why_stale(self, manifest: dict) -> str:
        reasons = []
        old_config = manifest.get("config", {})
        changed = sorted(_diff_keys(old_config, self.config))
        if changed:
            reasons.append("config changed: " + ", ".join(changed))
        old_inputs = manifest.get("inputs", {})
        for name, value in self._input_fingerprints().items():
            if old_inputs.get(name) != value:
                reasons.append(f"input {name} was rebuilt")
        old_code = manifest.get("code", {})
        edited = sorted(path for path in set(old_code) | set(self.code)
                        if old_code.get(path) != self.code.get(path))
        if edited:
            reasons.append("code changed: " + ", ".join(edited))
        return "; ".join(reasons) or "fingerprint changed"

    def should_run(self, force: bool = False) -> bool:
        """Prints what will happen and returns whether the stage must be (re)built."""
        if self.directory.parent.exists():
            _clean_leftovers(self.directory)  # a killed run's folders, even when this one skips
        state, why = self.status()
        if state == "done" and not force:
            print(f"[{self.label}] done, skipped ({self.directory})")
            return False
        if state == "missing" and why.startswith("input"):
            raise errors.StageNotReady(f"[{self.label}] cannot run: {why}; build it first "
                                      "(./run.sh --list shows every stage's state)")
        print(f"[{self.label}] {'forced rebuild' if state == 'done' else state}: {why}", flush=True)
        self.started = time.time()
        return True

    def record(self, **values) -> None:
        """Adds values (row counts, metrics) to the manifest written on publish."""
        self.records.update(values)

    @contextlib.contextmanager
    def build(self):
        """Yields an empty temporary folder; on success publishes it as the stage folder."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(self.directory)
        temporary = self.directory.with_name(f".tmp-{self.directory.name}-{os.getpid()}")
        temporary.mkdir()
        try:
            (temporary / RESOLVED_CONFIG).write_text(json.dumps(self.config, indent=1,
                                                                sort_keys=True) + "\n")
            yield temporary
            self._publish(temporary, time.time() - self.started)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def _publish(self, temporary: Path, seconds: float) -> None:
        outputs = {path.name: path.stat().st_size for path in sorted(temporary.iterdir())
                   if path.is_file()}
        manifest = {"stage": self.label, "fingerprint": self.fingerprint(), "config": self.config,
                    "inputs": self._input_fingerprints(), "code": self.code,
                    "outputs": outputs, "seconds": round(seconds, 3),
                    "peak_rss_mb": round(peak_rss_mb(), 1), "python": sys.version.split()[0],
                    **self.records}
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _fsync_folder(temporary)
        old = self.directory.with_name(f".old-{self.directory.name}-{os.getpid()}")
        if self.directory.exists():
            os.replace(self.directory, old)
        os.replace(temporary, self.directory)
        shutil.rmtree(old, ignore_errors=True)
        print(f"[{self.label}] published {self.directory} in {seconds:.1f}s, "
              f"peak RSS {peak_rss_mb():.0f} MB", flush=True)


def _diff_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = []
        for key in set(old) | set(new):
            keys += _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return keys
    return [] if old == new else [prefix.rstrip(".")]


def _clean_leftovers(directory: Path) -> None:
    """Removes temporary folders of killed runs; restores an old output a kill left aside.
    Folders of a process still running (another build of the same stage) are left alone."""
    for pattern in (f".tmp-{directory.name}-*", f".old-{directory.name}-*"):
        for path in directory.parent.glob(pattern):
            if in_use(path):
                continue
            if path.name.startswith(".old-") and not directory.exists():
                os.replace(path, directory)
            else:
                shutil.rmtree(path, ignore_errors=True)


def in_use(temporary: Path) -> bool:
    """Whether a temporary name ending in `-<pid>` belongs to a running process other than this
    one (a build still in progress), not to a killed run."""
    pid = Path(temporary).name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_folder(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
