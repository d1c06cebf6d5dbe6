r"""The course's experiments as pure functions: seeded data in, histories and summaries out (Q1, Q8).

The explorers of :mod:`course_lib.widgets` connect sliders to these functions; the notebooks and the tests call
them directly.

* Q1, how BatchNorm's running statistics track the truth: :func:`track_running_estimates` feeds batches to two
  BatchNorm layers (momentum ``m``: an EMA; ``momentum=None``: the cumulative average) and to an exact
  :class:`course_lib.stats.Welford` accumulator, and returns the histories (:class:`RunningEstimates`);
  :func:`running_stats_experiment` runs it on seeded N(mu, 1) batches (:func:`seeded_normal_batches`) and compares
  the measured EMA noise with :func:`course_lib.stats.ema_noise_std`.
* Q8, which elements share statistics in GroupNorm: :func:`group_norm_summary` compares GroupNorm with LayerNorm
  (G = 1) and InstanceNorm (G = C) for every valid G (:func:`divisors`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .norms import BatchNorm1d, GroupNorm, InstanceNorm2d, LayerNorm
from .stats import Welford, ema_effective_window, ema_noise_std

__all__ = ["RunningEstimates", "track_running_estimates", "seeded_normal_batches", "running_stats_batches",
           "running_stats_experiment", "divisors", "group_norm_summary"]


# ----------------------------------------------------------------------------------------------------------
# Q1: how running_mean / running_var track the true statistics, for a momentum and a batch size

@dataclass
class RunningEstimates:
    """Histories (one row per batch, one column per channel) of three estimates of a channel's mean and var."""

    ema_mean: Tensor
    ema_var: Tensor
    cumulative_mean: Tensor
    cumulative_var: Tensor
    exact_mean: Tensor
    exact_var: Tensor
    batch_mean: Tensor
    momentum: float
    batch_size: int


def track_running_estimates(batches, momentum: float = 0.1) -> RunningEstimates:
    """Feed batches ``(N, C)`` or ``(N, C, *)`` to two BatchNorm layers and a Welford accumulator.

    Records after each batch: ``running_mean``/``running_var`` of ``course_lib.norms.BatchNorm1d`` with
    ``momentum`` (EMA) and with ``momentum=None`` (cumulative average), and the exact mean / unbiased
    variance of everything seen (Welford). Memory is O(batches x channels) for the histories only; nothing
    is concatenated (seed 004 stacks every batch, which is O(values)).
    """
    ema = cumulative = None
    exact = Welford(feature_dim=1)
    rows: dict[str, list[Tensor]] = {k: [] for k in ("em", "ev", "cm", "cv", "xm", "xv", "bm")}
    batch_size = 0
    with torch.no_grad():
        for batch in batches:
            batch = batch.reshape(batch.shape[0], batch.shape[1], -1)
            if ema is None:
                channels, batch_size = batch.shape[1], batch.shape[0]
                ema = BatchNorm1d(channels, momentum=momentum, affine=False, dtype=batch.dtype)
                cumulative = BatchNorm1d(channels, momentum=None, affine=False, dtype=batch.dtype)
            ema(batch), cumulative(batch)
            exact.update(batch)
            rows["em"].append(ema.running_mean.clone())
            rows["ev"].append(ema.running_var.clone())
            rows["cm"].append(cumulative.running_mean.clone())
            rows["cv"].append(cumulative.running_var.clone())
            rows["xm"].append(exact.mean.float())
            rows["xv"].append(exact.var(unbiased=True).float() if exact.count > 1 else exact.mean.new_ones(channels))
            rows["bm"].append(batch.mean((0, 2)))
    if ema is None:
        raise ValueError("expected at least one batch, got none")
    h = {k: torch.stack(v) for k, v in rows.items()}
    return RunningEstimates(h["em"], h["ev"], h["cm"], h["cv"], h["xm"], h["xv"], h["bm"], momentum, batch_size)


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
    (:func:`track_running_estimates`) and a summary:

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


# ----------------------------------------------------------------------------------------------------------
# Q8: which elements share statistics in GroupNorm, for every valid number of groups

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
        grouped = GroupNorm(num_groups, num_channels, affine=False)(x)
        layer = LayerNorm([num_channels, height, width], elementwise_affine=False)(x)
        instance = InstanceNorm2d(num_channels)(x)
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
