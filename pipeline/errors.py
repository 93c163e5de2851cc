"""Errors the user can fix, and the handler every stage runs under (`python -m pipeline.main`).

A known failure ends the stage with one or two lines on stderr, `error: <message>`, naming the
user's file (its line and field where they apply) and what to do, and exit status 2. Known are:
`PipelineError` (raised by stage code for bad input), the parser's `BadRowError`, configuration
errors (`pipeline/config.py`, dataclass `__post_init__` checks, YAML syntax), a FileNotFoundError
that project code raised with its own message ("<path>: missing; run stage 03"), and the
environment's OSErrors: disk full or over quota, a read-only or forbidden folder, a missing input
or config file (outside the artifacts tree). Anything else is a bug and keeps its traceback. With
CRITEO_PNN_DEBUG=1 the traceback is printed for known failures too.

Stage modules import this one, so it is part of their code fingerprints (pipeline/code.py): it
imports nothing but the standard library and pipeline.paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import traceback
from pathlib import Path

from pipeline.paths import REPO_ROOT, artifacts_root

DEBUG_VARIABLE = "CRITEO_PNN_DEBUG"
EXIT_STATUS = 2
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A stage's temporary folder (pipeline/manifest.py Stage.build): `.tmp-<folder>-<pid>`.
_TEMPORARY = re.compile(r"^\.tmp-(.+)-\d+$")


class PipelineError(Exception):
    """A failure the user can fix; its message (one or two lines: file, line, field, what to do)
    is all they are shown."""


class InputError(PipelineError, ValueError):
    """Bad input data or arguments (a ValueError, as such errors were before)."""


class InputNotFound(PipelineError, FileNotFoundError):
    """A required input file or folder is absent (a FileNotFoundError, as before)."""


class StageNotReady(PipelineError, RuntimeError):
    """A stage was asked to run before its input stages were built (a RuntimeError, as before)."""


def shown_path(path) -> Path:
    """`path` as the user should see it: a stage's temporary folder `.tmp-<folder>-<pid>` named as
    the folder it becomes (`artifacts/<tag>/<folder>`)."""
    parts = [_TEMPORARY.sub(r"\1", part) for part in Path(path).parts]
    return Path(*parts) if parts else Path(path)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(path) -> str:
    """The free space of the file system holding `path` (or its nearest existing folder)."""
    try:
        return human_bytes(shutil.disk_usage(_existing_ancestor(Path(path))).free)
    except OSError:
        return "unknown"


def _under_artifacts(path: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(artifacts_root()))
    except ValueError:
        return False
    return True


def _elsewhere_hint(path: Path, kind: str) -> str:
    """The alternative to fixing the folder of `path`: another artifacts root, or another folder
    outside it; `kind` "larger" (a disk with room) or "writable"."""
    where = "a folder on a larger disk" if kind == "larger" else "a writable folder"
    return (f"choose {where} as the artifacts root (./run.sh --artifacts DIR)"
            if _under_artifacts(path) else f"choose {where}")


def disk_full_message(path, error: OSError) -> str:
    """What to say when writing `path` failed with ENOSPC or EDQUOT."""
    shown = shown_path(path)
    try:
        written = os.path.getsize(path)
    except OSError:
        written = 0
    what = "disk quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
    after = f" after {human_bytes(written)} of it" if written else ""
    removed = " (the stage's partial output is removed)" if shown != Path(path) else ""
    return (f"{shown}: {what} while writing it{after} ({free_space(path)} free there); free some "
            f"space{removed} or {_elsewhere_hint(path, 'larger')}, then rerun")


@contextlib.contextmanager
def writing(path):
    """Turns a disk-full OSError raised in the block (open the file inside it, so that the flush
    on closing is covered too) into a PipelineError naming `path` (shown without a stage's
    temporary folder), how much of it was written and the free space."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        raise PipelineError(disk_full_message(path, error)) from error


def _innermost_frame(error: BaseException):
    tb = error.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


def _raised_in_project(error: BaseException) -> Path | None:
    """The project file (not the virtualenv's) whose code raised `error`, else None."""
    frame = _innermost_frame(error)
    if frame is None or not os.path.isabs(frame.f_code.co_filename):  # Cython: "pyarrow/x.pxi"
        return None
    filename = Path(frame.f_code.co_filename).resolve()
    try:
        parts = filename.relative_to(REPO_ROOT).parts
    except ValueError:
        return None
    return None if parts[0].startswith(".") or "site-packages" in parts else filename


def _is_config_error(error: BaseException) -> bool:
    """A ValueError raised by the strict config loader or a config dataclass's own checks."""
    filename = _raised_in_project(error)
    if filename is None:
        return False
    return filename == REPO_ROOT / "pipeline" / "config.py" or \
        _innermost_frame(error).f_code.co_name == "__post_init__"


def _yaml_message(error) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return f"YAML: {' '.join(str(error).split())}"
    context = getattr(error, "context", None)
    return (f"{mark.name}:{mark.line + 1}:{mark.column + 1}: {problem}"
            f"{f' ({context})' if context else ''}; fix the YAML syntax there")


def _os_message(error: OSError) -> str | None:
    if error.errno is None and error.strerror is None and _raised_in_project(error):
        # FileNotFoundError("<path>: missing; run stage 03") and the like: a project message.
        return str(error)
    if error.errno in DISK_FULL:
        if error.filename:
            return disk_full_message(error.filename, error)
        root = artifacts_root()
        what = "disk quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
        return (f"{what} while writing ({free_space(root)} free on the disk of {root}); free some "
                f"space or choose a folder on a larger disk as the artifacts root (./run.sh "
                f"--artifacts DIR), then rerun")
    if not error.filename:
        return None
    path = Path(error.filename)
    shown = shown_path(path)
    if error.errno == errno.EROFS:
        folder = _existing_ancestor(path)
        return (f"{shown_path(folder)}: read-only file system (cannot create or write {shown}); "
                f"make it writable or {_elsewhere_hint(path, 'writable')}")
    if error.errno in (errno.EACCES, errno.EPERM):
        if path.exists():
            return (f"{shown}: permission denied; give this user access to it (or "
                    f"{_elsewhere_hint(path, 'writable')})")
        folder = _existing_ancestor(path)
        return (f"{shown_path(folder)}: permission denied (cannot create {shown}); make it "
                f"writable for this user or {_elsewhere_hint(path, 'writable')}")
    if error.errno == errno.ENOENT and not _under_artifacts(path):
        # The user's input or config file; a stage's own file gone missing is a bug (traceback).
        return f"{shown}: no such file or folder; check the path"
    return None


def describe(error: BaseException) -> str | None:
    """The message to show for a known failure, or None for an unexpected one."""
    if isinstance(error, PipelineError):
        return str(error)
    parse = sys.modules.get("preprocessing.parse")  # loaded whenever its errors can occur
    if parse is not None and isinstance(error, parse.BadRowError):
        return str(error)
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(error, yaml.YAMLError):
        return _yaml_message(error)
    if isinstance(error, ValueError) and _is_config_error(error):
        return str(error)
    if isinstance(error, OSError):
        return _os_message(error)
    return None


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def run(function, *args) -> int:
    """Calls `function(*args)`; returns the exit status: its own if it returns an int, 0 if it
    returns anything else, EXIT_STATUS after printing `error: <message>` for a known failure.
    Unexpected errors propagate (with their traceback), as do SystemExit and KeyboardInterrupt."""
    try:
        result = function(*args)
    except Exception as error:  # noqa: BLE001 (unknown errors are re-raised)
        message = describe(error)
        if message is None:
            raise
        sys.stdout.flush()
        if debugging():
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_STATUS
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
