"""Figures of the stages and experiments: matplotlib on the Agg backend (no display needed),
imported on first use, and one way to write a figure file.
"""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(figure, path: Path) -> Path:
    """Tight layout, then writes `figure` to `path` (format from its suffix, else PNG)
    under a temporary name renamed into place, so a killed run leaves no half-written image;
    closes the figure (pyplot keeps every open one)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        figure.tight_layout()
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        pyplot().close(figure)
    return path
