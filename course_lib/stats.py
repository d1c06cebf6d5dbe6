r"""Streaming statistics: how a layer can summarize 2000 batches in O(1) memory (Q1, Q9).

* :func:`ema_update` -- the exponential moving average of ``nn.BatchNorm``'s running buffers, in PyTorch's
  convention ``running = (1 - momentum) * running + momentum * new`` (momentum = weight of the *new* value;
  Keras/TF write ``decay = 1 - momentum``: :func:`momentum_from_decay`).
* :func:`cumulative_average_update` -- the plain average of everything so far, updated one batch at a time
  (``momentum=None`` in PyTorch; what seed 000 derives).
* :func:`merge_moments` / :class:`Welford` -- exact streaming mean and variance: Welford's update and Chan's
  merge of two partial results, never :math:`E[x^2]-E[x]^2`.
* :func:`ema_noise_std` -- how much an EMA of noisy batch statistics wobbles: for i.i.d. inputs with standard
  deviation :math:`\sigma` its stationary standard deviation is :math:`\sqrt{m/(2-m)}\,\sigma`, the same as a
  plain average over :func:`ema_effective_window` :math:`= (2-m)/m` values (19 batches at m = 0.1).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ema_update", "momentum_from_decay", "cumulative_average_update", "ema_noise_std", "ema_effective_window",
    "merge_moments", "Welford",
]


def ema_update(running: Tensor, new: Tensor, momentum: float) -> Tensor:
    """In place: ``running = (1 - momentum) * running + momentum * new``; returns ``running``.

    PyTorch's convention: ``momentum`` (default 0.1) is the weight of the *new* value.
    Equivalent: the running-buffer update inside ``F.batch_norm``.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected momentum in [0, 1] (weight of the new value), got {momentum}")
    return running.mul_(1.0 - momentum).add_(new, alpha=momentum)


def momentum_from_decay(decay: float) -> float:
    """PyTorch momentum for a Keras/TensorFlow ``momentum``/``decay`` (weight of the *old* value): ``1 - decay``."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"expected decay in [0, 1], got {decay}")
    return 1.0 - decay


def cumulative_average_update(running: Tensor, new: Tensor, count: int) -> Tensor:
    """In place: the mean of ``count`` values from the mean of the first ``count - 1`` and the new one.

    ``running += (new - running) / count``, i.e. an EMA whose momentum is ``1 / count``.
    ``nn.BatchNorm*(momentum=None)`` does exactly this with ``count = num_batches_tracked``.
    """
    if count < 1:
        raise ValueError(f"expected count >= 1 (values averaged so far, this one included), got {count}")
    return running.add_(new - running, alpha=1.0 / count)


def ema_effective_window(momentum: float) -> float:
    """Number of values a plain average needs to be as noisy as an EMA: ``(2 - m) / m`` (19 at m = 0.1)."""
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"expected momentum in (0, 1], got {momentum}")
    return (2.0 - momentum) / momentum


def ema_noise_std(momentum: float, sigma: float | Tensor = 1.0) -> float | Tensor:
    r"""Stationary standard deviation of an EMA of i.i.d. values with standard deviation ``sigma``.

    With :math:`r_t = (1-m) r_{t-1} + m x_t`: :math:`\mathrm{Var}[r] = m^2 \sum_k (1-m)^{2k} \sigma^2
    = \frac{m}{2-m}\sigma^2`. At m = 0.1 that is 0.23 sigma. For the running mean of BatchNorm, sigma is the
    standard deviation of a *batch mean*, ``sigma_x / sqrt(values per channel per batch)``.
    """
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"expected momentum in (0, 1], got {momentum}")
    return math.sqrt(momentum / (2.0 - momentum)) * sigma


def merge_moments(count_a, mean_a, var_a, count_b, mean_b, var_b):
    r"""Count, mean and *biased* variance of the union of two groups, from each group's own (Chan et al.).

    .. math::
        n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad \bar x = \bar x_a + \delta\,\frac{n_b}{n},\quad
        n\,\sigma^2 = n_a\sigma_a^2 + n_b\sigma_b^2 + \delta^2\,\frac{n_a n_b}{n}

    Counts may be real-valued weights (an EMA scales them by ``1 - a`` and ``a``: RunningBatchNorm) and
    may be zero for one side. Works elementwise on tensors (per channel) and is differentiable.
    """
    count = count_a + count_b
    if isinstance(count, Tensor):
        safe = torch.where(count > 0, count, torch.ones_like(count))
    else:
        if count <= 0:
            raise ValueError(f"expected a positive total count, got {count_a} + {count_b}")
        safe = count
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / safe)
    m2 = var_a * count_a + var_b * count_b + delta * delta * (count_a * count_b / safe)
    return count, mean, m2 / safe


class Welford:
    """Exact streaming mean and variance per feature, in O(1) memory, batch by batch.

    ``update(batch)`` merges a batch's own two-pass statistics (over every axis but ``feature_dim``) with
    :func:`merge_moments`; ``merge(other)`` combines two partial results (e.g. two data shards) and gives the
    same answer as one pass over everything. ``var(unbiased=True)`` is what ``running_var`` tracks.
    """

    def __init__(self, feature_dim: int | None = 1):
        self.feature_dim = feature_dim
        self.count = 0
        self.mean: Tensor | None = None
        self._var: Tensor | None = None  # biased

    def update(self, batch: Tensor) -> "Welford":
        batch = batch.detach().double()
        if self.feature_dim is None:
            dims = tuple(range(batch.dim()))
        else:
            dims = tuple(d for d in range(batch.dim()) if d != self.feature_dim % batch.dim())
        n = math.prod(batch.shape[d] for d in dims)
        if n == 0:
            return self
        mean = batch.mean(dims)
        var = (batch - mean.view([-1 if d not in dims else 1 for d in range(batch.dim())])).square().mean(dims)
        return self._merge(n, mean, var)

    def merge(self, other: "Welford") -> "Welford":
        if other.count == 0:
            return self
        return self._merge(other.count, other.mean, other._var)

    def _merge(self, n, mean, var) -> "Welford":
        if self.count == 0:
            self.count, self.mean, self._var = n, mean.clone(), var.clone()
        else:
            self.count, self.mean, self._var = merge_moments(self.count, self.mean, self._var, n, mean, var)
        return self

    def var(self, unbiased: bool = True) -> Tensor:
        if self.count == 0:
            raise ValueError("no values seen yet: call update() with a batch first")
        if not unbiased:
            return self._var
        if self.count < 2:
            raise ValueError(f"the unbiased variance needs at least 2 values, got {self.count}")
        return self._var * (self.count / (self.count - 1))
