"""Every path is anchored at the repository root (no chdir, no working-directory assumptions).

The artifacts root is the process's own setting: `artifacts/` under the repository unless the
process entry sets another (`./run.sh --artifacts DIR`, a stage's `--artifacts DIR`: see
`pipeline.settings.apply_artifacts`) or a test points it at a temporary folder. This module
reads no environment variable.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARTIFACTS = REPO_ROOT / "artifacts"

_root = DEFAULT_ARTIFACTS


def set_artifacts_root(path) -> Path:
    """Makes `path` the artifacts root of this process; returns the previous root."""
    global _root
    previous, _root = _root, Path(path).absolute()
    return previous


def artifacts_root() -> Path:
    """The artifacts root of this process (`artifacts/` under the repository by default)."""
    return _root


def stage_dir(tag: str, stage: str, unit: str | None = None, root=None) -> Path:
    """`<root>/<tag>/<NN_stage>[/<unit>]`, e.g. artifacts/demo/05_train/ipnn; `root` defaults to
    the process's artifacts root."""
    path = Path(root or _root) / tag / stage
    return path / unit if unit else path
