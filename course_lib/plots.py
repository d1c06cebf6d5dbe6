r"""Figures of the course: activation statistics, running estimates, GroupNorm groups, training curves.

Every function returns a ``matplotlib.figure.Figure`` (titled, axes labelled, legend where there are several
lines) and leaves nothing open in pyplot, so figures do not pile up in notebooks or tests; a notebook shows
the returned figure by itself. Data come from :class:`course_lib.hooks.ActivationStats` (Q3),
:class:`course_lib.experiments.RunningEstimates` (Q1) and :class:`course_lib.training.Recorder` (Q2, Q5).
"""
from __future__ import annotations

import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import norms
from .experiments import RunningEstimates
from .stats import ema_noise_std

__all__ = ["new_figure", "figure_to_png", "plot_stats", "color_dim", "dead_chart", "plot_running_estimates",
           "plot_running_error", "group_statistic_ids", "plot_group_norm", "batch_statistic_ids",
           "plot_batch_vs_layer_norm", "plot_recorder_loss",
           "plot_recorder_accuracy", "plot_recorder_param", "plot_curves", "plot_over_seeds", "match_ylims",
           "NORMALIZATION_LAYERS", "shared_statistic_mask", "plot_normalization_overview"]


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


def _layer_labels(stats, labels) -> list[str]:
    n = len(stats.means)
    if labels is None:
        return [f"layer {i}" for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"expected {n} labels (one per recorded module), got {len(labels)}")
    return list(labels)


# ----------------------------------------------------------------------------------------------------------
# Activation statistics (Q3): what ActivationStats recorded, one curve or image per layer

def plot_stats(stats, labels: list[str] | None = None) -> Figure:
    """Mean (left) and standard deviation (right) of each layer's output, one line per layer, over forward calls."""
    fig, axes = new_figure(1, 2)
    ax_mean, ax_std = axes[0]
    for label, means, stds in zip(_layer_labels(stats, labels), stats.means, stats.stds):
        ax_mean.plot(means.numpy(), label=label)
        ax_std.plot(stds.numpy(), label=label)
    ax_mean.set(title="mean of the activations", xlabel="forward call (batch)", ylabel="mean")
    ax_std.set(title="standard deviation of the activations", xlabel="forward call (batch)", ylabel="std")
    ax_std.legend(fontsize="small")
    fig.suptitle("Activation statistics per layer")
    return fig


def color_dim(stats, labels: list[str] | None = None) -> Figure:
    """"Colorful dimension": per layer, the histogram of its outputs at every call as one image column.

    Pixel (bin b, call k) is ``log1p(count)`` (log so that the few large values stay visible next to the
    many near zero); time runs left to right, values bottom to top (``origin='lower'``). Needs
    ``ActivationStats(..., bins=...)``.
    """
    hists = stats.hists
    low, high = stats.hist_range
    fig, axes = new_figure(1, len(hists), figsize=(3.2 * len(hists), 3.2))
    for ax, label, hist in zip(axes[0], _layer_labels(stats, labels), hists):
        calls = max(hist.shape[0], 1)
        ax.imshow(torch.log1p(hist).T.numpy(), origin="lower", aspect="auto", cmap="viridis",
                  extent=(0, calls, low, high), interpolation="nearest")
        ax.set(title=label, xlabel="forward call (batch)", ylabel="activation value")
    fig.suptitle("Histogram of the activations over training (colour: log(1 + count))")
    return fig


def dead_chart(stats, labels: list[str] | None = None) -> Figure:
    """Fraction of near-zero outputs (``|x| <= near_zero``) per layer over calls: dead ReLUs show up near 1."""
    fig, axes = new_figure()
    ax = axes[0][0]
    for label, fractions in zip(_layer_labels(stats, labels), stats.near_zero_fractions):
        ax.plot(fractions.numpy(), label=label)
    ax.set(title=f"Fraction of near-zero activations (|x| <= {stats.near_zero:g})", xlabel="forward call (batch)",
           ylabel="fraction", ylim=(0, 1))
    ax.legend(fontsize="small")
    return fig


# ----------------------------------------------------------------------------------------------------------
# Running statistics (Q1): EMA vs cumulative average vs exact

def _noise_bands(est: RunningEstimates, channel: int, values_per_batch: int | None):
    r"""Predicted stationary noise (std) of the EMA of the batch mean and of the batch variance.

    A batch mean of ``n`` values has std :math:`\sigma/\sqrt n`; for Gaussian data the unbiased batch variance
    has std :math:`\sigma^2\sqrt{2/(n-1)}`. The EMA shrinks both by :math:`\sqrt{m/(2-m)}` (``ema_noise_std``).
    """
    n = values_per_batch or est.batch_size
    if n < 2:
        raise ValueError(f"expected at least 2 values per channel per batch, got {n}")
    var = est.exact_var[:, channel]
    mean_band = ema_noise_std(est.momentum, (var / n).sqrt())
    var_band = ema_noise_std(est.momentum, var * (2.0 / (n - 1)) ** 0.5)
    return mean_band, var_band


def plot_running_estimates(est: RunningEstimates, channel: int = 0, values_per_batch: int | None = None) -> Figure:
    """``running_mean`` (left) and ``running_var`` (right) of one channel after each batch.

    Lines: EMA with ``est.momentum`` (PyTorch's default update), cumulative average (``momentum=None``), exact
    statistics of all values so far; dots: each batch's own mean; band: exact +- the EMA's predicted noise std.
    Both panels have a legend (the left one also names the dots, most of which lie outside its y-range).
    ``values_per_batch`` defaults to ``est.batch_size`` (set it to N*H*W for conv feature maps).
    """
    mean_band, var_band = _noise_bands(est, channel, values_per_batch)
    steps = torch.arange(1, est.ema_mean.shape[0] + 1).numpy()
    fig, axes = new_figure(1, 2, figsize=(11, 4.2))
    ax_mean, ax_var = axes[0]
    (dots,) = ax_mean.plot(steps, est.batch_mean[:, channel].numpy(), ".", ms=2, alpha=0.3, color="grey",
                           label="batch mean")
    for ax, exact, band, ema, cumulative, name in (
            (ax_mean, est.exact_mean, mean_band, est.ema_mean, est.cumulative_mean, "running_mean"),
            (ax_var, est.exact_var, var_band, est.ema_var, est.cumulative_var, "running_var")):
        exact = exact[:, channel]
        ax.fill_between(steps, (exact - band).numpy(), (exact + band).numpy(), color="tab:blue", alpha=0.15,
                        label="exact +- EMA noise std")
        ax.plot(steps, ema[:, channel].numpy(), color="tab:blue", lw=1, label=f"EMA (momentum={est.momentum:g})")
        ax.plot(steps, cumulative[:, channel].numpy(), color="tab:orange", lw=1.5,
                label="cumulative (momentum=None)")
        ax.plot(steps, exact.numpy(), color="black", lw=1, ls="--", label="exact (all values so far)")
        ax.set(title=name, xlabel="batch", ylabel=name)
    for ax, (low, high) in ((ax_mean, _robust_limits(est.ema_mean[:, channel], est.exact_mean[:, channel], mean_band)),
                            (ax_var, _robust_limits(est.ema_var[:, channel], est.exact_var[:, channel], var_band))):
        ax.set_ylim(low, high + 0.5 * (high - low))  # headroom: the legends sit above the curves, not on them
    ax_var.legend(fontsize="small", loc="upper center", ncol=2)
    # The left legend explains the grey dots too: each batch's own mean, spread by 1/sqrt(n), mostly off the scale.
    handles, labels = ax_mean.get_legend_handles_labels()
    labels = ["batch means (most off-scale)" if h is dots else label for h, label in zip(handles, labels)]
    ax_mean.legend(handles, labels, fontsize="small", markerscale=4, loc="upper center", ncol=2)
    fig.suptitle(f"Running estimates of channel {channel}, batch size {est.batch_size}")
    return fig


def _robust_limits(ema: Tensor, exact: Tensor, band: Tensor) -> tuple[float, float]:
    """y-limits that show the EMA and the band after the first few batches (the start is off the scale)."""
    start = min(len(ema) - 1, max(len(ema) // 10, 1))
    values = torch.cat([ema[start:], exact[start:] - band[start:], exact[start:] + band[start:]])
    low, high = float(values.min()), float(values.max())
    pad = 0.1 * (high - low) or 0.1
    return low - pad, high + pad


def plot_running_error(est: RunningEstimates, channel: int = 0, values_per_batch: int | None = None) -> Figure:
    """``|estimate - exact|`` of the running mean for the EMA and the cumulative average, log scale.

    The EMA's error stops shrinking at the level of its noise (dashed line, ``ema_noise_std``); the
    cumulative average keeps converging like ``1 / sqrt(batches)``.
    """
    mean_band, _ = _noise_bands(est, channel, values_per_batch)
    exact = est.exact_mean[:, channel]
    steps = torch.arange(1, len(exact) + 1).numpy()
    fig, axes = new_figure()
    ax = axes[0][0]
    tiny = torch.finfo(exact.dtype).tiny  # keep zeros plottable on a log axis
    ax.plot(steps, (est.ema_mean[:, channel] - exact).abs().clamp_min(tiny).numpy(), lw=1,
            label=f"|EMA - exact| (momentum={est.momentum:g})")
    ax.plot(steps, (est.cumulative_mean[:, channel] - exact).abs().clamp_min(tiny).numpy(), lw=1,
            label="|cumulative - exact|")
    ax.plot(steps, mean_band.numpy(), color="black", ls="--", label="predicted EMA noise std")
    ax.set(yscale="log", title=f"Error of running_mean, channel {channel}", xlabel="batch", ylabel="absolute error")
    ax.legend(fontsize="small")
    return fig


# ----------------------------------------------------------------------------------------------------------
# GroupNorm (Q8): which elements share one mean and variance

def group_statistic_ids(num_channels: int, num_groups: int, batch_size: int = 2, height: int = 4,
                        width: int = 4) -> Tensor:
    """Integer tensor ``(N, C, H, W)``: elements with the same id are normalized with the same mean and variance.

    GroupNorm splits the C channels into ``num_groups`` consecutive groups of ``C / G`` channels and computes
    one statistic per (sample, group), over (C/G, H, W): id = ``n * G + c // (C / G)``. ``G = 1`` gives
    LayerNorm's statistics (one per sample), ``G = C`` InstanceNorm's (one per sample and channel).
    The layer itself says which axes it reduces: :meth:`course_lib.norms.GroupNorm.statistic_ids`.
    """
    if num_groups < 1 or num_channels % num_groups != 0:
        raise ValueError(f"expected num_groups dividing num_channels={num_channels}, got {num_groups}")
    return norms.GroupNorm(num_groups, num_channels).statistic_ids((batch_size, num_channels, height, width))


def plot_group_norm(num_channels: int, num_groups: int, height: int = 4, width: int = 4,
                    samples: int = 2) -> Figure:
    """One panel per sample: channels (rows) x spatial positions (columns), coloured by shared statistic.

    Same colour = same mean and variance. Different samples never share (colours differ between panels).
    """
    ids = group_statistic_ids(num_channels, num_groups, samples, height, width)
    per_group = num_channels // num_groups
    cmap = distinct_colormap(samples * num_groups)
    fig, axes = new_figure(1, samples, figsize=(3.4 * samples, 3.2))
    for n, ax in enumerate(axes[0]):
        ax.imshow(ids[n].reshape(num_channels, height * width).numpy(), cmap=cmap, vmin=-0.5,
                  vmax=samples * num_groups - 0.5, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(num_channels))
        ax.hlines([c - 0.5 for c in range(per_group, num_channels, per_group)], -0.5, height * width - 0.5,
                  colors="white", lw=2)
        ax.set(title=f"sample {n}", xlabel="spatial position h*W + w", ylabel="channel c")
    kind = " = LayerNorm statistics" if num_groups == 1 else (" = InstanceNorm statistics"
                                                              if num_groups == num_channels else "")
    channels = f"{per_group} channel{'s' if per_group != 1 else ''}"
    positions = f"{height}x{width} position{'s' if height * width != 1 else ''}"
    fig.suptitle(f"GroupNorm(G={num_groups}, C={num_channels}){kind}:\n{channels} x {positions} per statistic")
    return fig


def distinct_colormap(n: int) -> matplotlib.colors.ListedColormap:
    """A colormap of ``n`` pairwise different colours, for ``n`` integer ids shown with ``vmin=-0.5, vmax=n-0.5``.

    Up to 20: ``tab20`` (resampled evenly, as the course always drew it); up to 60: the colours of ``tab20``,
    ``tab20b`` and ``tab20c`` in turn (``tab20`` alone would repeat colours past 20, e.g. 24 ids for
    GroupNorm(12, 12) on two samples); beyond: ``n`` evenly spaced colours of ``turbo``.
    """
    if n <= 20:
        return matplotlib.colormaps["tab20"].resampled(max(n, 2))
    if n <= 60:
        colours = [c for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
        return matplotlib.colors.ListedColormap(colours[:n])
    return matplotlib.colors.ListedColormap(matplotlib.colormaps["turbo"](np.linspace(0, 1, n)))


def batch_statistic_ids(num_channels: int, batch_size: int = 2, height: int = 4, width: int = 4) -> Tensor:
    """Integer tensor ``(N, C, H, W)`` for BatchNorm: id = ``c``, one statistic per channel over (N, H, W).

    The counterpart of :func:`group_statistic_ids`: values with the same id share one mean and variance, and
    here that id is the same in every sample of the batch (:meth:`course_lib.norms.BatchNorm2d.statistic_ids`).
    """
    return norms.BatchNorm2d(num_channels).statistic_ids((batch_size, num_channels, height, width))


def plot_batch_vs_layer_norm(num_channels: int = 6, samples: int = 3, height: int = 3, width: int = 3) -> Figure:
    """BatchNorm (top row) against LayerNorm (bottom row), one panel per sample of a batch.

    Each panel shows one sample's channels (rows) x spatial positions (columns), coloured by the statistic
    the value is normalized with (:func:`batch_statistic_ids`, :func:`group_statistic_ids` with one group).
    BatchNorm: one colour per channel row, the same colours in every sample's panel (a channel's statistic
    mixes the whole batch); LayerNorm: one colour per panel, a different one in each (per sample). Q6.
    """
    from matplotlib.patches import Patch

    rows = (("BatchNorm", batch_statistic_ids(num_channels, samples, height, width), "tab10", num_channels,
             [f"channel {c}" for c in range(num_channels)]),
            ("LayerNorm", group_statistic_ids(num_channels, 1, samples, height, width), "Dark2", samples,
             [f"sample {n}" for n in range(samples)]))
    fig, axes = new_figure(2, samples, figsize=(2.8 * samples + 1.8, 5.8))
    for (name, ids, cmap_name, count, names), row_axes in zip(rows, axes):
        cmap = matplotlib.colormaps[cmap_name].resampled(max(count, 2))
        for n, ax in enumerate(row_axes):
            ax.imshow(ids[n].reshape(num_channels, height * width).numpy(), cmap=cmap, vmin=-0.5, vmax=count - 0.5,
                      aspect="auto", interpolation="nearest")
            ax.set_yticks(range(num_channels))
            ax.set(title=f"{name}: sample {n}", xlabel="spatial position h*W + w", ylabel="channel c")
        row_axes[-1].legend(handles=[Patch(facecolor=cmap(k), label=f"statistic of {names[k]}") for k in range(count)],
                            loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", title=name)
    fig.suptitle("Same colour = same mean and variance. BatchNorm: one per channel, over the whole batch; "
                 "LayerNorm: one per sample")
    return fig


# ----------------------------------------------------------------------------------------------------------
# Training curves (Recorder, Q2 and Q5)

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


# ----------------------------------------------------------------------------------------------------------
# All layers side by side (closing overview of Q9): which values share one statistic

NORMALIZATION_LAYERS = ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "RMSNorm", "RunningBatchNorm")
_REDUCED_OVER = {"BatchNorm": "(N, H·W) per channel", "LayerNorm": "(C, H·W) per sample",
                 "InstanceNorm": "(H·W) per sample and channel", "GroupNorm": "(C/G, H·W) per sample and group",
                 "RMSNorm": "(C, H·W) per sample, no centring", "RunningBatchNorm": "(N, H·W) per channel + history"}


def shared_statistic_mask(layer: str, batch_size: int = 4, num_channels: int = 6, spatial: int = 5,
                          num_groups: int = 2) -> Tensor:
    """Boolean ``(N, C, H*W)``: the values that share one mean and variance with value ``(0, 0, 0)`` in ``layer``.

    ``layer`` is one of :data:`NORMALIZATION_LAYERS`. BatchNorm and RunningBatchNorm reduce over (N, H*W) per
    channel (RunningBatchNorm also merges earlier batches, which a single input cannot show); LayerNorm and
    RMSNorm over (C, H*W) per sample (``normalized_shape = (C, H, W)``); InstanceNorm over H*W per sample and
    channel; GroupNorm(``num_groups``, C) over the C/G channels of the first group and H*W, per sample.
    """
    if layer not in NORMALIZATION_LAYERS:
        raise ValueError(f"expected one of {NORMALIZATION_LAYERS}, got {layer!r}")
    if num_groups < 1 or num_channels % num_groups != 0:
        raise ValueError(f"expected num_groups dividing num_channels={num_channels}, got {num_groups}")
    layers = {"BatchNorm": lambda: norms.BatchNorm1d(num_channels),  # RunningBatchNorm: BatchNorm's axes
              "RunningBatchNorm": lambda: norms.BatchNorm1d(num_channels),
              "LayerNorm": lambda: norms.LayerNorm([num_channels, spatial]),
              "RMSNorm": lambda: norms.RMSNorm([num_channels, spatial]),
              "InstanceNorm": lambda: norms.InstanceNorm1d(num_channels),
              "GroupNorm": lambda: norms.GroupNorm(num_groups, num_channels)}
    ids = layers[layer]().statistic_ids((batch_size, num_channels, spatial))
    return ids == ids[0, 0, 0]


def plot_normalization_overview(layers=NORMALIZATION_LAYERS, batch_size: int = 4, num_channels: int = 6,
                                spatial: int = 5, num_groups: int = 2, history: int = 2) -> Figure:
    """One cube per layer (Wu & He 2018, Fig. 2 style): the input ``(N, C, H*W)``, with the values that share
    one statistic (:func:`shared_statistic_mask`) highlighted. RunningBatchNorm's cube gets ``history`` extra
    slices along N for the earlier batches merged into its statistics; RMSNorm's block is coloured differently
    (a mean square, no mean)."""
    from matplotlib.patches import Patch

    layers = tuple(layers)
    if not layers:
        raise ValueError("expected at least one layer to draw, got none")
    colours = {"shared": "#2b8cbe", "rms": "#e6550d", "past": "#a6cee3c0", "other": "#e0e0e040"}
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    fig = plt.figure(figsize=(4.2 * cols, 4.0 * rows + 0.6))
    plt.close(fig)
    for k, layer in enumerate(layers):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        mask = shared_statistic_mask(layer, batch_size, num_channels, spatial, num_groups).numpy()
        extra = history if layer == "RunningBatchNorm" else 0
        facecolors = np.full((batch_size + extra, num_channels, spatial), colours["other"], dtype=object)
        facecolors[extra:][mask] = colours["rms"] if layer == "RMSNorm" else colours["shared"]
        facecolors[:extra, 0, :] = colours["past"]
        ax.voxels(np.ones(facecolors.shape, dtype=bool), facecolors=facecolors, edgecolor="#555555", linewidth=0.3)
        ax.set_xlabel("N (batch)" + (" + earlier batches" if extra else ""), labelpad=-8)
        ax.set_ylabel("C (channels)", labelpad=-8)
        ax.set_zlabel("H·W (spatial)", labelpad=-8)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_title(f"{layer}\none statistic over {_REDUCED_OVER[layer]}", fontsize=10)
        ax.view_init(elev=20, azim=-60)
    handles = [Patch(facecolor=colours["shared"], label="values sharing one mean and variance"),
               Patch(facecolor=colours["rms"], label="RMSNorm: values sharing one mean square (no mean)"),
               Patch(facecolor=colours["past"][:7], label="RunningBatchNorm: earlier batches, weight 1 - a"),
               Patch(facecolor=colours["other"][:7], label="other values (other statistics)")]
    fig.suptitle("Which values share one statistic: each cube is an input (N, C, H·W)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    return fig

