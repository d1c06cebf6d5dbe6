"""Interactive explorers (ipywidgets) for Q1 and Q8: sliders -> pure functions -> a readout and a picture.

The work is done by pure functions that the tests call directly (:func:`running_stats_experiment`,
:func:`group_norm_summary` and the figures of :mod:`course_lib.plots`); the explorers only connect sliders to
them. Each explorer returns an ``ipywidgets.VBox`` holding a description, the slider(s), an
``ipywidgets.HTML`` readout with the numbers and an ``ipywidgets.Image`` with the plot (PNG bytes); every slider
change recomputes both. One update takes 0.2-0.7 s on one CPU thread (drawing the PNG, and for the running-
statistics explorer at small momentum 20/momentum batches).
"""
from __future__ import annotations

import math

import ipywidgets as widgets
import torch

from . import norms
from .plots import figure_to_png, plot_group_norm, plot_running_estimates
from .stats import RunningEstimates, ema_effective_window, ema_noise_std, track_running_estimates

__all__ = ["seeded_normal_batches", "running_stats_batches", "running_stats_experiment", "running_stats_explorer",
           "divisors", "group_norm_summary", "group_norm_explorer"]


# ----------------------------------------------------------------------------------------------------------
# (a) Q1: how running_mean / running_var track the true statistics, for a momentum and a batch size

def seeded_normal_batches(n_batches: int, batch_size: int, channels: int = 1, seed: int = 0,
                          mean: float = 0.0) -> torch.Tensor:
    """``(n_batches, batch_size, channels)`` samples of N(``mean``, 1) from a generator seeded with ``seed``."""
    if n_batches < 1 or batch_size < 2:
        raise ValueError(f"expected n_batches >= 1 and batch_size >= 2, got {n_batches} and {batch_size}")
    return torch.randn(n_batches, batch_size, channels, generator=torch.Generator().manual_seed(seed)) + mean


def running_stats_batches(momentum: float, n_batches: int = 300) -> int:
    """How many batches the experiment feeds: at least ``n_batches`` and at least ``20 / momentum``.

    The noise is measured after a burn-in of ``3 / momentum`` batches (the EMA's time constant is ``1 / m``),
    so ``20 / m`` batches leave about 17 time constants to measure it on, for any momentum.
    """
    if not 0 < momentum <= 1:
        raise ValueError(f"expected 0 < momentum <= 1, got {momentum}")
    return max(n_batches, math.ceil(20 / momentum))


def running_stats_experiment(momentum: float, batch_size: int, n_batches: int = 300, seed: int = 0,
                             data_mean: float = 0.0) -> tuple[RunningEstimates, dict[str, float]]:
    """Feed seeded N(``data_mean``, 1) batches to BatchNorm with ``momentum`` and with ``momentum=None``.

    Uses :func:`running_stats_batches` batches (at least ``n_batches``). Returns the histories
    (:func:`course_lib.stats.track_running_estimates`) and a summary:

    * ``predicted_noise`` = ``ema_noise_std(momentum, 1 / sqrt(batch_size))`` (a batch mean of N(mu, 1) values has
      std 1/sqrt(n));
    * ``measured_noise`` = RMS of the EMA's deviation from its *expected* value
      ``data_mean * (1 - (1 - m)^t)`` (the EMA starts at 0), over batches ``t > burn_in = ceil(3 / m)``. Measured
      against the known truth, not against the exact mean of the same batches: with a long window (small m) the
      EMA and the exact mean average nearly the same batches, and their difference is much smaller than the noise;
    * ``final_ema_error`` / ``final_cumulative_error`` = |estimate - exact mean| after the last batch;
    * ``effective_window`` = (2 - m) / m batches, ``time_constant`` = 1 / m batches, ``batches_to_5_percent`` =
      the first t with (1 - m)^t < 5 % (the initial running_mean 0 then weighs less than 5 %), ``initial_weight_300``
      = (1 - m)^300, ``n_batches`` and ``burn_in`` as used;
    * ``measurement_rel_error`` = the expected relative sampling error of ``measured_noise`` itself: the EMA is
      an AR(1) process with coefficient phi = 1 - m, so its T = n_batches - burn_in values are correlated and
      the relative std of the measured std is about ``sqrt((1 + phi^2) / (2 T (1 - phi^2)))`` (17 % at
      m = 0.01 over 1700 batches, 5 % at m = 0.5 over 294).
    """
    n_used = running_stats_batches(momentum, n_batches)
    burn_in = math.ceil(3 / momentum)
    est = track_running_estimates(seeded_normal_batches(n_used, batch_size, 1, seed, data_mean), momentum)
    t = torch.arange(1, n_used + 1, dtype=torch.float64)
    expected_ema = data_mean * (1 - (1 - momentum) ** t)
    deviation = est.ema_mean[:, 0].double() - expected_ema
    summary = {
        "momentum": momentum,
        "batch_size": batch_size,
        "data_mean": data_mean,
        "n_batches": n_used,
        "burn_in": burn_in,
        "final_ema_error": abs(float(est.ema_mean[-1, 0] - est.exact_mean[-1, 0])),
        "final_cumulative_error": abs(float(est.cumulative_mean[-1, 0] - est.exact_mean[-1, 0])),
        "predicted_noise": ema_noise_std(momentum, 1.0 / batch_size ** 0.5),
        "measured_noise": float(deviation[burn_in:].square().mean().sqrt()),
        "effective_window": ema_effective_window(momentum),
        "time_constant": 1 / momentum,
        "batches_to_5_percent": (math.ceil(math.log(0.05) / math.log(1 - momentum)) if momentum < 1 else 1),
        "initial_weight_300": (1 - momentum) ** 300,
        "measurement_rel_error": math.sqrt((1 + (1 - momentum) ** 2)
                                           / (2 * (n_used - burn_in) * (1 - (1 - momentum) ** 2))),
    }
    return est, summary


def _running_stats_readout(s: dict[str, float]) -> str:
    return (f"<b>momentum {s['momentum']:.2f}, batch size {s['batch_size']}</b>, {s['n_batches']} batches of "
            f"N({s['data_mean']:g}, 1) &rarr; EMA noise std predicted {s['predicted_noise']:.4f}, "
            f"measured {s['measured_noise']:.4f} (after batch {s['burn_in']}, around the EMA's expected value; "
            f"one run of correlated batches: expect &plusmn;{s['measurement_rel_error']:.0%}); "
            f"as noisy as a plain average of {s['effective_window']:.1f} batches. "
            f"Forgetting: the initial running_mean 0 still weighs (1 &minus; m)<sup>t</sup>, below 5 % after "
            f"{s['batches_to_5_percent']} batches (&asymp; 3/m), {s['initial_weight_300']:.1%} after 300. "
            f"After the last batch: |EMA &minus; exact| = {s['final_ema_error']:.4f}, "
            f"|cumulative &minus; exact| = {s['final_cumulative_error']:.1e}")


def running_stats_explorer(momentum: float = 0.1, batch_size: int = 20, n_batches: int = 300,
                           seed: int = 0, data_mean: float = 0.0) -> widgets.VBox:
    """Momentum and batch-size sliders over :func:`running_stats_experiment` (Q1).

    Starts at PyTorch's default momentum 0.1 and seed 004's batches of 20: the EMA wobbles around the exact
    mean by about 0.05 while the cumulative average settles. With ``data_mean`` != 0 (Q1 uses 1, as in its
    section 3) the EMA visibly forgets its initial value 0, with time constant 1 / momentum.
    """
    description = widgets.HTML(
        f"Running statistics of BatchNorm on batches of N({data_mean:g}, 1) values, at least {n_batches} batches "
        "(20/momentum for small momentum). Try momentum 0.1 &rarr; 0.01 and 0.5 (smooth but slow to forget vs "
        "noisy), and batch size 20 &rarr; 80 and 2 (the noise band scales like 1/&radic;batch size).")
    momentum_slider = widgets.FloatSlider(value=momentum, min=0.01, max=0.9, step=0.01, readout_format=".2f",
                                          description="momentum", continuous_update=False)
    batch_slider = widgets.IntSlider(value=batch_size, min=2, max=256, step=1, description="batch size",
                                     continuous_update=False)
    readout = widgets.HTML()
    image = widgets.Image(format="png")

    def update(change=None) -> None:
        est, summary = running_stats_experiment(momentum_slider.value, batch_slider.value, n_batches, seed,
                                                data_mean)
        readout.value = _running_stats_readout(summary)
        image.value = figure_to_png(plot_running_estimates(est))

    for slider in (momentum_slider, batch_slider):
        slider.observe(update, names="value")
    update()
    return widgets.VBox([description, widgets.HBox([momentum_slider, batch_slider]), readout, image])


# ----------------------------------------------------------------------------------------------------------
# (b) Q8: which elements share statistics in GroupNorm, for every valid number of groups

def divisors(n: int) -> list[int]:
    """The valid numbers of groups for ``n`` channels: every divisor of ``n``, ascending."""
    if n < 1:
        raise ValueError(f"expected a positive number of channels, got {n}")
    return [g for g in range(1, n + 1) if n % g == 0]


def group_norm_summary(num_channels: int, num_groups: int, batch_size: int = 20, height: int = 10,
                       width: int = 10, seed: int = 0) -> dict[str, float]:
    """Sizes of GroupNorm's statistics and how far its output is from LayerNorm's and InstanceNorm's.

    On a seeded ``(N, C, H, W)`` N(0, 1) tensor, without affine: ``|GroupNorm - LayerNorm([C, H, W])|`` is 0
    for G = 1 and ``|GroupNorm - InstanceNorm2d|`` is 0 for G = C (up to rounding). Keys ``max_diff_*`` give
    the largest difference over all N*C*H*W elements (one outlier decides it), ``mean_diff_*`` the mean
    absolute difference, which moves steadily with G: towards InstanceNorm and away from LayerNorm as G grows.
    ``std_of_means`` is the standard deviation of the N*G group means of the input: the sampling noise of one
    statistic, about ``1 / sqrt(values_per_statistic)`` for N(0, 1) data (fewer values, noisier statistics).
    """
    if num_channels % num_groups != 0:
        raise ValueError(f"expected num_groups dividing num_channels={num_channels}, got {num_groups}")
    x = torch.randn(batch_size, num_channels, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        grouped = norms.GroupNorm(num_groups, num_channels, affine=False)(x)
        layer = norms.LayerNorm([num_channels, height, width], elementwise_affine=False)(x)
        instance = norms.InstanceNorm2d(num_channels)(x)
    return {
        "num_groups": num_groups,
        "channels_per_group": num_channels // num_groups,
        "values_per_statistic": num_channels // num_groups * height * width,
        "statistics_per_batch": batch_size * num_groups,
        "max_diff_layer_norm": float((grouped - layer).abs().max()),
        "max_diff_instance_norm": float((grouped - instance).abs().max()),
        "mean_diff_layer_norm": float((grouped - layer).abs().mean()),
        "mean_diff_instance_norm": float((grouped - instance).abs().mean()),
        "std_of_means": float(x.reshape(batch_size, num_groups, -1).mean(-1).std()),
    }


def _group_norm_readout(s: dict[str, float], num_channels: int) -> str:
    return (f"<b>G = {s['num_groups']}</b>: {s['channels_per_group']} of {num_channels} channels per group, "
            f"{s['values_per_statistic']} values per mean/variance, {s['statistics_per_batch']} "
            f"statistics per batch; the group means scatter with std {s['std_of_means']:.3f} "
            f"(1/&radic;{s['values_per_statistic']} = {s['values_per_statistic'] ** -0.5:.3f})<br>"
            f"|GroupNorm &minus; LayerNorm|: mean {s['mean_diff_layer_norm']:.3f}, "
            f"max {s['max_diff_layer_norm']:.2f}; "
            f"|GroupNorm &minus; InstanceNorm|: mean {s['mean_diff_instance_norm']:.3f}, "
            f"max {s['max_diff_instance_norm']:.2f}")


def group_norm_explorer(num_channels: int = 6, num_groups: int = 3, batch_size: int = 20, height: int = 10,
                        width: int = 10, samples_shown: int = 2) -> widgets.VBox:
    """A slider over the valid G (divisors of C) for GroupNorm on ``(N, C, H, W)`` (Q8: N=20, C=6, H=W=10, G=3)."""
    options = divisors(num_channels)
    if num_groups not in options:
        raise ValueError(f"expected num_groups in {options} (divisors of C={num_channels}), got {num_groups}")
    description = widgets.HTML(
        f"GroupNorm on a ({batch_size}, {num_channels}, {height}, {width}) tensor: same colour = same mean and "
        "variance. Try G=1 (LayerNorm's statistics) and G=C (InstanceNorm's).")
    groups_slider = widgets.SelectionSlider(options=options, value=num_groups, description="groups G",
                                            continuous_update=False)
    readout = widgets.HTML()
    image = widgets.Image(format="png")

    def update(change=None) -> None:
        summary = group_norm_summary(num_channels, groups_slider.value, batch_size, height, width)
        readout.value = _group_norm_readout(summary, num_channels)
        image.value = figure_to_png(plot_group_norm(num_channels, groups_slider.value, height, width,
                                                    samples_shown))

    groups_slider.observe(update, names="value")
    update()
    return widgets.VBox([description, groups_slider, readout, image])
