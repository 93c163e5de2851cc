"""Writing one file in place of another, whole or not at all.

Stage folders are published by `pipeline.manifest.Stage.build`; a single file written outside
one (a figure, a checkpoint, a submission, the tag file) goes through `replacing`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """`.<name>.tmp-<pid>` beside `path`: hidden, and one per process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path beside `path` to write; on a clean exit it is synced and renamed
    to `path`. An error or a kill leaves `path` as it was (a kill may leave the temporary)."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
