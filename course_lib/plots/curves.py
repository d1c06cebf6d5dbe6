"""Training curves (the Recorder of Q2 and Q5), curves over a parameter, results over seeds."""
from __future__ import annotations


import numpy as np
from matplotlib.figure import Figure

from course_lib.plots.figures import new_figure


def plot_recorder_loss(recorder) -> Figure:
    """Training loss per batch and validation loss at the end of each epoch."""
    fig, axes = new_figure()
    ax = axes[0][0]
    ax.plot(range(1, len(recorder.losses) + 1), recorder.losses, lw=1, label="train (per batch)")
    valid = [(i + 1, e["valid_loss"]) for i, e in enumerate(recorder.epochs) if "valid_loss" in e]
    if valid:
        ax.plot([epoch * recorder.batches_per_epoch for epoch, _ in valid], [v for _, v in valid], "o-",
                label="valid (end of epoch)")
    ax.set(title="Loss", xlabel="training batch", ylabel="loss")
    ax.legend(fontsize="small")
    return fig


def plot_recorder_accuracy(recorder) -> Figure:
    """Training (running, in train mode) and validation accuracy per epoch."""
    fig, axes = new_figure()
    ax = axes[0][0]
    for key in ("train_accuracy", "valid_accuracy"):
        points = [(i + 1, e[key]) for i, e in enumerate(recorder.epochs) if key in e]
        ax.plot([p for p, _ in points], [a for _, a in points], "o-", label=key.replace("_", " "))
    ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    ax.legend(fontsize="small")
    return fig


def plot_recorder_param(recorder, name: str = "lr") -> Figure:
    """An optimizer hyper-parameter (param group 0) per training batch, e.g. a schedule set by ParamScheduler."""
    values = recorder.hypers.get(name)
    if not values:
        raise ValueError(f"expected a recorded hyper-parameter ({', '.join(k for k, v in recorder.hypers.items() if v)}"
                         f"), got {name!r}")
    fig, axes = new_figure()
    ax = axes[0][0]
    ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(title=f"Schedule of {name}", xlabel="training batch", ylabel=name)
    ax.legend(fontsize="small")
    return fig


# ----------------------------------------------------------------------------------------------------------
# Sweeps and histories (Q1-Q3): a few labelled curves over one x axis; figures made comparable

def plot_curves(x, curves: dict, title: str, xlabel: str, ylabel: str, *, styles: dict | None = None,
                logx: bool = False, logy: bool = False, ylim: tuple[float, float] | None = None,
                hline: tuple[float, str] | None = None) -> Figure:
    """One line per entry of ``curves`` (label -> y values over the shared ``x``), e.g. accuracy per learning rate.

    ``styles`` maps a label to keyword arguments of ``Axes.plot`` (``{"fmt": "--", "color": "black"}``; ``fmt``
    is the format string, default ``"o-"`` for up to 12 points and ``"-"`` for more). ``hline=(y, label)``
    draws a dotted reference line (chance level, a target). Used for the learning-rate, init-scale and
    batch-size sweeps (Q2) and for histories over training steps (Q1, Q3).
    """
    x = list(x)
    styles = styles or {}
    fig, axes = new_figure()
    ax = axes[0][0]
    for label, y in curves.items():
        y = list(y)
        if len(y) != len(x):
            raise ValueError(f"expected {len(x)} values for curve {label!r} (one per x), got {len(y)}")
        kwargs = dict(styles.get(label, {}))
        fmt = kwargs.pop("fmt", "o-" if len(x) <= 12 else "-")
        ax.plot(x, y, fmt, label=label, **kwargs)
    if hline is not None:
        ax.axhline(hline[0], color="grey", ls=":", label=hline[1])
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xscale="log" if logx else "linear",
           yscale="log" if logy else "linear")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if logx and len(x) <= 12:
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
    ax.legend(fontsize="small")
    return fig


def plot_over_seeds(results: dict, title: str, ylabel: str, *, xlabel: str = "",
                    ylim: tuple[float, float] | None = None, hline: tuple[float, str] | None = None) -> Figure:
    """A strip plot: one column per entry of ``results`` (label -> one value per seed), each seed a dot.

    A short black bar marks the median and a vertical line the range. For outcomes that a single run cannot
    settle (does a network diverge at this learning rate? who wins by two points?), the course shows the
    distribution over ``COURSE_SEED`` offsets instead of one lucky run (see :func:`course_lib.seed.over_seeds`).
    A value that is NaN or infinite (a run that diverged) is a red cross on the lower edge.
    ``hline=(y, label)`` draws a dotted reference line (e.g. chance level).
    """
    fig, axes = new_figure(figsize=(max(4.0, 1.1 * len(results) + 2), 3.5))
    ax = axes[0][0]
    for i, (label, values) in enumerate(results.items()):
        values = np.asarray([float(v) for v in values], dtype=float)
        if values.size == 0:
            raise ValueError(f"expected at least one value for {label!r}, got none")
        jitter = np.linspace(-0.15, 0.15, values.size) if values.size > 1 else np.zeros(1)
        finite_mask = np.isfinite(values)
        ax.plot(i + jitter[finite_mask], values[finite_mask], "o", alpha=0.7, color=f"C{i % 10}")
        if not finite_mask.all():  # NaN/inf (a diverged run): a cross on the axis' lower edge
            ax.plot(i + jitter[~finite_mask], np.zeros((~finite_mask).sum()), "x", color="red",
                    transform=ax.get_xaxis_transform(), clip_on=False)
        finite = values[finite_mask]
        if finite.size:
            ax.vlines(i, finite.min(), finite.max(), color=f"C{i % 10}", lw=1)
            ax.hlines(np.median(finite), i - 0.25, i + 0.25, color="black", lw=2)
    if hline is not None:
        ax.axhline(hline[0], color="grey", ls=":", label=hline[1])
        ax.legend(fontsize="small")
    n_seeds = sorted({len(list(v)) for v in results.values()})
    ax.set_xticks(range(len(results)), list(results), fontsize="small")
    ax.set(title=title, ylabel=ylabel,
           xlabel=xlabel or f"{'/'.join(map(str, n_seeds))} seeds: dot = one seed, bar = median (red x: NaN)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    return fig


def match_ylims(figures) -> list[Figure]:
    """Give the k-th axes of every figure the union of their y-ranges, so figures shown one after the other compare.

    E.g. two :func:`plot_stats` figures, with and without BatchNorm, on the same mean and std scales.
    All figures must have the same number of axes. Returns the figures.
    """
    figures = list(figures)
    counts = {len(fig.axes) for fig in figures}
    if len(counts) > 1:
        raise ValueError(f"expected figures with the same number of axes, got {sorted(counts)}")
    for column in range(counts.pop() if counts else 0):
        low = min(fig.axes[column].get_ylim()[0] for fig in figures)
        high = max(fig.axes[column].get_ylim()[1] for fig in figures)
        for fig in figures:
            fig.axes[column].set_ylim(low, high)
    return figures
