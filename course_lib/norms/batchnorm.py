"""BatchNorm1d/2d/3d: one statistic per channel over the batch and every spatial axis (Q1-Q5)."""
from __future__ import annotations

import math

from torch import Tensor

from course_lib.functional import normalize, normalize_with_stats
from course_lib.norms.base import _channel_view, _NormBase


class _BatchNorm(_NormBase):
    r"""Batch normalization: one mean and variance per channel, over the batch and all spatial axes.

    .. math::  y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Training: statistics of the current batch (biased variance), and the running estimates move by
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance); with ``momentum=None`` the
    running estimates are the cumulative average over all batches so far (``1 / num_batches_tracked``).
    Eval: the running estimates, if tracked; otherwise batch statistics again.
    Equivalent: ``torch.nn.BatchNorm{1,2,3}d`` (``F.batch_norm``).
    """

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """N and every spatial axis: ``(0, 2, ..., ndim - 1)``, one statistic per channel."""
        return (0, *range(2, ndim))

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        ndim = input.dim()
        self._check_channels(input, use_batch_stats)
        weight, bias = _channel_view(self.weight, ndim), _channel_view(self.bias, ndim)
        if not use_batch_stats:
            return normalize_with_stats(input, _channel_view(self.running_mean, ndim),
                                        _channel_view(self.running_var, ndim), self.eps, weight, bias)
        dims = self.reduce_dims(ndim)
        count = math.prod(input.shape[d] for d in dims)
        if count == 1:
            raise ValueError("Expected more than 1 value per channel when training, got input size "
                             f"{list(input.shape)} (batch statistics need N * spatial size > 1)")
        output, mean, var = normalize(input, dims, self.eps, weight, bias)
        if self.training and self.track_running_stats and self.running_mean is not None and count > 0:
            self._update_running_stats(mean.view(-1), var.view(-1), count, factor)
        return output

    def _check_channels(self, input: Tensor, use_batch_stats: bool) -> None:
        uses_per_channel = self.affine or not use_batch_stats or self.track_running_stats
        if uses_per_channel and input.shape[1] != self.num_features:
            raise RuntimeError(f"expected input with {self.num_features} channels in dim 1 (num_features), "
                               f"got input of size {list(input.shape)}")


class BatchNorm1d(_BatchNorm):
    """BatchNorm over ``(N, C)`` or ``(N, C, L)`` input, one statistic per channel C (not per position L).

    A ``(N, L, C)`` tensor (tokens last) must be permuted first (Karpathy's makemore fix, Q4).
    Equivalent: ``torch.nn.BatchNorm1d``.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, L)`, statistics over ``reduce_dims``: (0,) or (0, 2)
        - Output: same shape as the input

    Example:
        >>> bn = BatchNorm1d(3)
        >>> x = torch.arange(12.0).view(4, 3)
        >>> bn(x).shape, bn.reduce_dims(x.dim())
        (torch.Size([4, 3]), (0,))
        >>> bn.running_mean  # 0.9 * 0 + 0.1 * the batch mean per channel (4.5, 5.5, 6.5)
        tensor([0.4500, 0.5500, 0.6500])
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (N, C) or (N, C, L), got {input.dim()}D input of size "
                             f"{list(input.shape)}")


class BatchNorm2d(_BatchNorm):
    """BatchNorm over ``(N, C, H, W)`` input, statistics over (N, H, W). Equivalent: ``torch.nn.BatchNorm2d``.

    Shape:
        - Input: :math:`(N, C, H, W)`, statistics over ``reduce_dims(4) == (0, 2, 3)``
        - Output: :math:`(N, C, H, W)` (same shape as input)

    Example:
        >>> bn = BatchNorm2d(2)
        >>> x = torch.arange(16.0).view(2, 2, 2, 2)
        >>> y = bn(x)
        >>> y.shape, bn.reduce_dims(y.dim())
        (torch.Size([2, 2, 2, 2]), (0, 2, 3))
        >>> bn.statistic_ids((2, 2, 1, 1)).flatten().tolist()  # (n, c) -> the statistic it is normalized with
        [0, 1, 0, 1]
        >>> bn.running_mean, int(bn.num_batches_tracked)  # batch means 5.5 and 9.5, momentum 0.1
        (tensor([0.5500, 0.9500]), 1)
        >>> bn.eval()(x).shape  # eval: the running estimates, any batch size
        torch.Size([2, 2, 2, 2])
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W), got {input.dim()}D input of size {list(input.shape)}")


class BatchNorm3d(_BatchNorm):
    """BatchNorm over ``(N, C, D, H, W)`` input, statistics over (N, D, H, W). Equivalent: ``torch.nn.BatchNorm3d``.

    Shape:
        - Input: :math:`(N, C, D, H, W)`, statistics over ``reduce_dims(5) == (0, 2, 3, 4)``
        - Output: :math:`(N, C, D, H, W)` (same shape as input)

    Example:
        >>> bn = BatchNorm3d(4)
        >>> bn(torch.randn(2, 4, 3, 5, 5)).shape
        torch.Size([2, 4, 3, 5, 5])
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (N, C, D, H, W), got {input.dim()}D input of size {list(input.shape)}")
