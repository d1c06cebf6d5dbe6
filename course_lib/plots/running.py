"""Running estimates (Q1): the EMA, the cumulative average and the exact mean, with the EMA's noise band."""
from __future__ import annotations


import torch
from matplotlib.figure import Figure
from torch import Tensor

from course_lib.experiments import RunningEstimates
from course_lib.stats import ema_noise_std
from course_lib.plots.figures import new_figure


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
