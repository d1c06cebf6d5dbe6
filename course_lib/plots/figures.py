"""Figures that leave nothing open in pyplot, and PNG bytes for widgets (see :mod:`course_lib.plots`)."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
from matplotlib.figure import Figure



def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (8, 3.5), **kwargs):
    """``(fig, axes)`` like ``plt.subplots``, but already closed in pyplot: only the returned Figure keeps it."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained", **kwargs)
    plt.close(fig)
    return fig, axes


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of ``fig`` (what an ``ipywidgets.Image`` shows)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def layer_labels(stats, labels) -> list[str]:
    n = len(stats.means)
    if labels is None:
        return [f"layer {i}" for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"expected {n} labels (one per recorded module), got {len(labels)}")
    return list(labels)
