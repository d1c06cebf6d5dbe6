"""Interactive explorers (ipywidgets) for Q1 and Q8: sliders -> pure functions -> a readout and a picture.

The work is done by pure functions that the tests call directly (:mod:`course_lib.experiments` and the figures
of :mod:`course_lib.plots`); the explorers only connect sliders to them. Each explorer returns an
``ipywidgets.VBox`` holding a description, the slider(s), an ``ipywidgets.HTML`` readout with the numbers and an
``ipywidgets.Image`` with the plot (PNG bytes); every slider change recomputes both. One update takes 0.2-0.7 s
on one CPU thread (drawing the PNG, and for the running-statistics explorer at small momentum 20/momentum
batches).
"""
from __future__ import annotations

import ipywidgets as widgets

from .experiments import divisors, group_norm_summary, running_stats_experiment
from .plots import figure_to_png, plot_group_norm, plot_running_estimates

__all__ = ["running_stats_explorer", "group_norm_explorer"]


# ----------------------------------------------------------------------------------------------------------
# (a) Q1: momentum and batch size -> how running_mean / running_var track the true statistics

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
# (b) Q8: the number of groups G -> which elements share statistics in GroupNorm

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
