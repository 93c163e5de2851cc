"""Every path is anchored at the repository root (no chdir, no working-directory assumptions)."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def artifacts_root() -> Path:
    """`artifacts/` under the repository, or $CRITEO_PNN_ARTIFACTS (tests use a temporary one)."""
    return Path(os.environ.get("CRITEO_PNN_ARTIFACTS", REPO_ROOT / "artifacts"))


def stage_dir(tag: str, stage: str, unit: str | None = None) -> Path:
    """`artifacts/<tag>/<NN_stage>[/<unit>]`, e.g. artifacts/demo/05_train/ipnn."""
    path = artifacts_root() / tag / stage
    return path / unit if unit else path
