"""Activation statistics (Q3): what ``ActivationStats`` recorded, one curve or image per layer."""
from __future__ import annotations


import torch
from matplotlib.figure import Figure

from course_lib.plots.figures import layer_labels as _layer_labels, new_figure


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
