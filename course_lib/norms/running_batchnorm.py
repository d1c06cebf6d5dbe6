"""RunningBatchNorm: BatchNorm with smoothed statistics in training too (fastai course-v3 lesson 7, Q9)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from course_lib.functional import normalize_with_stats
from course_lib.stats import merge_moments
from course_lib.norms.base import _channel_view, _Norm, _register_affine


class RunningBatchNorm(_Norm):
    r"""BatchNorm that normalizes with *smoothed* statistics in training too (fastai course-v3 lesson 7, Q9).

    Plain BatchNorm normalizes each batch with that batch's statistics, which are noisy when the batch is
    tiny (2 images). RunningBatchNorm keeps an exponentially weighted count, mean and variance of all values
    seen, merges the current batch into them (gradients flow through the batch's share), and normalizes
    with the merged statistics in training and with the stored ones in eval -- so the two modes agree.

    Per batch of ``bs`` samples with ``n`` values per channel, mean ``m_b`` and biased variance ``v_b``:

    * adaptive weight of the new batch ``a = 1 - (1 - momentum) / sqrt(max(bs - 1, 1))`` (larger batches
      are trusted more; fastai divides by ``sqrt(bs - 1)``, which is a division by zero at ``bs = 1``);
    * the weighted merge of (count, mean, variance) with weights ``1 - a`` and ``a``
      (:func:`course_lib.stats.merge_moments`: Chan's formula, which equals fastai's sums and sums of squares
      but never forms ``E[x^2] - E[x]^2``);
    * while fewer than ``warmup_samples`` samples have been seen (this batch included), the variance used to
      *normalize* is clamped to at least ``min_var`` (fastai: 20 and 0.01). As in fastai, the clamp acts on a
      temporary: ``running_var`` keeps the unclamped merged variance (fastai keeps the raw ``sqrs``), so a
      channel with a small variance is not inflated after the warm-up. Eval applies the same clamp while
      ``num_samples_tracked < warmup_samples`` (fastai checks ``batch < 20`` in both modes).

    fastai's ``dbias`` debiasing divides sums, squares *and* count by the same factor, so it cancels in
    ``mean = sums / count``; it is left out. Buffers: ``count`` (weighted number of values),
    ``running_mean``, ``running_var`` (weighted biased variance), ``num_batches_tracked``,
    ``num_samples_tracked``. No PyTorch equivalent.

    Shape:
        - Input: :math:`(N, C, *)`, statistics per channel over N and the spatial axes, merged with the past
        - Output: same shape as the input

    Example:
        >>> rbn = RunningBatchNorm(3)
        >>> rbn(torch.randn(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
        >>> rbn(torch.randn(1, 3, 1, 1)).shape  # one value per channel: BatchNorm2d would raise
        torch.Size([1, 3, 1, 1])
        >>> int(rbn.num_batches_tracked), int(rbn.num_samples_tracked)
        (2, 3)
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
                 warmup_samples: int = 20, min_var: float = 0.01, device=None, dtype=None) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features, self.momentum, self.eps, self.affine = num_features, momentum, eps, affine
        self.warmup_samples, self.min_var = warmup_samples, min_var
        _register_affine(self, num_features, affine, affine, factory)
        self.register_buffer("count", torch.zeros((), **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.register_buffer("num_samples_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.reset_parameters()

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """N and every spatial axis: ``(0, 2, ..., ndim - 1)``, one statistic per channel, as BatchNorm."""
        return (0, *range(2, ndim))

    def reset_running_stats(self) -> None:
        self.count.zero_()
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()
        self.num_samples_tracked.zero_()

    def batch_weight(self, batch_size: int) -> float:
        """Weight ``a`` of a new batch of ``batch_size`` samples in the merge (see the class docstring)."""
        return 1.0 - (1.0 - self.momentum) / math.sqrt(max(batch_size - 1, 1))

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 2 or input.shape[1] != self.num_features:
            raise ValueError(f"expected input of shape (N, {self.num_features}, *), got {list(input.shape)}")
        ndim = input.dim()
        weight, bias = _channel_view(self.weight, ndim), _channel_view(self.bias, ndim)
        if not self.training:
            var = self.running_var
            if int(self.num_samples_tracked) < self.warmup_samples:
                var = var.clamp_min(self.min_var)
            return normalize_with_stats(input, _channel_view(self.running_mean, ndim),
                                        _channel_view(var, ndim), self.eps, weight, bias)
        dims = self.reduce_dims(ndim)
        n = math.prod(input.shape[d] for d in dims)
        if n == 0:
            raise ValueError(f"expected a non-empty batch, got input of size {list(input.shape)}")
        batch_mean = input.mean(dims)
        batch_var = (input - _channel_view(batch_mean, ndim)).square().mean(dims)
        a = self.batch_weight(input.shape[0])
        # clones: the buffers are overwritten below while the graph still needs what it read
        count, mean, var = merge_moments(self.count * (1 - a), self.running_mean.clone(), self.running_var.clone(),
                                         input.new_tensor(float(n) * a), batch_mean, batch_var)
        with torch.no_grad():  # the stored statistics are never clamped (fastai keeps its raw sums too)
            self.count.copy_(count)
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.num_batches_tracked.add_(1)
            self.num_samples_tracked.add_(input.shape[0])
        if int(self.num_samples_tracked) < self.warmup_samples:  # warm-up: clamp only what normalizes
            var = var.clamp_min(self.min_var)
        return normalize_with_stats(input, _channel_view(mean, ndim), _channel_view(var, ndim), self.eps,
                                    weight, bias)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, affine={self.affine}"
