"""Figures of the stages and experiments: matplotlib on the Agg backend (no display needed),
imported on first use, and one way to write a figure file.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.atomic import replacing


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
    try:
        figure.tight_layout()
        with replacing(path) as temporary:
            figure.savefig(temporary, format=path.suffix.lstrip(".") or "png")
    finally:
        pyplot().close(figure)
    return path
