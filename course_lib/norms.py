r"""Normalization layers written from tensor operations, drop-in replacements for their ``torch.nn`` namesakes.

Every class is a thin statement of three things over the shared core :func:`course_lib.functional.normalize`:
which axes one statistic reduces (its method ``reduce_dims``), which state it carries, and the shape of its affine.

======================  =============================  ==========================  ======================
class                   ``reduce_dims``, input (N,C,*)  state (buffers)             taught in
======================  =============================  ==========================  ======================
``BatchNorm1d/2d/3d``   N and all spatial axes          running_mean/var, count     Q1-Q5
``InstanceNorm1d/2d/3d`` all spatial axes               optional running stats      Q7
``GroupNorm``           C/G and spatial, of the view    none                        Q8
                        ``(N, G, C/G, *)``
``LayerNorm``           the last len(shape) axes        none                        Q6
``RMSNorm``             the last len(shape) axes        none (no centring)          Q6
``RunningBatchNorm``    N and all spatial axes          smoothed count/mean/var     Q9
======================  =============================  ==========================  ======================

``layer.statistic_ids(shape)`` turns that description into a picture: an integer tensor of the input's shape in
which elements with the same id share one mean and variance (what Q6-Q9's plots draw).

Same constructor arguments, defaults, parameter and buffer names, dtypes, ``state_dict`` keys and error types
as PyTorch 2.13; the tests use PyTorch as the oracle. None of PyTorch's normalization functions is called.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor, nn
from torch.nn import init

from .functional import normalize, normalize_with_stats
from .stats import ema_update, merge_moments

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "LayerNorm", "RMSNorm", "RunningBatchNorm"]


def _channel_view(t: Tensor | None, ndim: int) -> Tensor | None:
    """A per-channel ``(C,)`` tensor viewed as ``(1, C, 1, ...)`` to broadcast against an ``ndim`` input."""
    return None if t is None else t.view(1, -1, *([1] * (ndim - 2)))


def _register_affine(module: nn.Module, shape, weight: bool, bias: bool, factory: dict) -> None:
    """``weight`` and ``bias`` parameters of ``shape`` (filled by ``reset_parameters``), or ``None``, as torch.nn."""
    module.register_parameter("weight", nn.Parameter(torch.empty(shape, **factory)) if weight else None)
    module.register_parameter("bias", nn.Parameter(torch.empty(shape, **factory)) if weight and bias else None)


class _Norm(nn.Module):
    """What every layer states: the axes one statistic reduces, and an affine initialized to the identity."""

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """The axes one mean and variance reduce, for a batched input of ``ndim`` axes."""
        raise NotImplementedError

    def _stats_shape(self, shape: torch.Size) -> torch.Size:
        """The shape the input is viewed as before reducing over ``reduce_dims`` (GroupNorm groups channels)."""
        return shape

    def statistic_ids(self, shape) -> Tensor:
        """Integer tensor of ``shape`` (a batched input's): elements with the same id share one statistic."""
        view = self._stats_shape(torch.Size(shape))
        dims = self.reduce_dims(len(view))
        kept = [1 if d in dims else size for d, size in enumerate(view)]
        return torch.arange(math.prod(kept)).view(kept).expand(view).reshape(shape)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if getattr(self, "bias", None) is not None:
            init.zeros_(self.bias)


class _NormBase(_Norm):
    """Parameters and running statistics shared by BatchNorm and InstanceNorm (``torch.nn.modules.batchnorm``).

    Parameters: ``weight`` (gamma, ones) and ``bias`` (beta, zeros), shape ``(num_features,)``, when ``affine``.
    Buffers, when ``track_running_stats``: ``running_mean`` (zeros), ``running_var`` (ones, the *unbiased*
    variance), ``num_batches_tracked`` (int64 0). Buffers are in ``state_dict`` and move with ``.to()``, but
    receive no gradient (Q1).
    """

    _version = 2  # version 2 added num_batches_tracked, as in PyTorch

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _register_affine(self, num_features, affine, bias, factory)
        tracked = track_running_stats
        self.register_buffer("running_mean", torch.zeros(num_features, **factory) if tracked else None)
        self.register_buffer("running_var", torch.ones(num_features, **factory) if tracked else None)
        self.register_buffer("num_batches_tracked",
                             torch.tensor(0, dtype=torch.long, device=device) if tracked else None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Back to "no batch seen": mean 0, variance 1, count 0 (before a recalibration pass, Q5)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        super().reset_parameters()

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int, factor: float) -> None:
        """EMA of the batch mean and of the *unbiased* batch variance ``var * n / (n - 1)``, in place.

        ``mean`` and ``var`` are detached per-channel tensors; ``factor`` is the weight of the new batch
        (PyTorch's momentum convention). Runs under ``no_grad``: no graph ever reaches a buffer.
        The buffers are written through an alias, as ``torch.instance_norm`` does (``at::alias``): ``torch.func``'s
        ``grad``/``jvp`` refuse in-place writes into a tensor created outside the transform, but accept them into
        an alias, so InstanceNorm with running stats works under them as torch.nn's does (BatchNorm fails in both
        earlier, at ``num_batches_tracked.add_``).
        """
        with torch.no_grad():
            running_mean, running_var = torch.ops.aten.alias(self.running_mean), torch.ops.aten.alias(self.running_var)
            ema_update(running_mean, mean.to(running_mean.dtype), factor)
            unbiased = var * (count / (count - 1)) if count > 1 else var
            ema_update(running_var, unbiased.to(running_var.dtype), factor)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            key = prefix + "num_batches_tracked"  # checkpoints older than version 2 lack the counter
            if key not in state_dict:
                state_dict[key] = (self.num_batches_tracked if self.num_batches_tracked is not None
                                   and self.num_batches_tracked.device != torch.device("meta")
                                   else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


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


class _InstanceNorm(_NormBase):
    r"""Instance normalization: one mean and variance per sample *and* channel, over the spatial axes only.

    Removes each image's per-channel brightness and contrast (Q7). Defaults differ from BatchNorm:
    ``affine=False`` and ``track_running_stats=False`` (batch statistics in eval too). With tracking, the
    running estimates average the per-instance statistics over the batch; ``momentum=None`` leaves them
    unchanged, as in PyTorch. Accepts unbatched input ``(C, *spatial)``.
    Equivalent: ``torch.nn.InstanceNorm{1,2,3}d`` (``F.instance_norm``).
    """

    _unbatched_dim: int  # input rank without the batch axis

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """Every spatial axis: ``(2, ..., ndim - 1)``, one statistic per sample and channel."""
        return tuple(range(2, ndim))

    def _check_input_dim(self, input: Tensor) -> None:
        dims = (self._unbatched_dim, self._unbatched_dim + 1)
        if input.dim() not in dims:
            raise ValueError(f"expected {dims[0]}D (unbatched) or {dims[1]}D input, got {input.dim()}D input of size "
                             f"{list(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        channel_dim = input.dim() - self._unbatched_dim
        if input.size(channel_dim) != self.num_features:
            if self.affine:
                raise ValueError(f"expected input's size at dim={channel_dim} to match num_features "
                                 f"({self.num_features}), but got: {input.size(channel_dim)}.")
            warnings.warn(f"input's size at dim={channel_dim} does not match num_features. You can silence "
                          "this warning by not passing in num_features, which is not used because "
                          "affine=False", stacklevel=2)
        if input.dim() == self._unbatched_dim:
            return self._instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._instance_norm(input)

    def _instance_norm(self, input: Tensor) -> Tensor:
        ndim = input.dim()
        weight, bias = _channel_view(self.weight, ndim), _channel_view(self.bias, ndim)
        use_input_stats = self.training or not self.track_running_stats
        if not use_input_stats:
            return normalize_with_stats(input, _channel_view(self.running_mean, ndim),
                                        _channel_view(self.running_var, ndim), self.eps, weight, bias)
        dims = self.reduce_dims(ndim)
        count = math.prod(input.shape[d] for d in dims)
        if count == 1:
            raise ValueError("Expected more than 1 spatial element when training, got input size "
                             f"{list(input.shape)} (per-instance statistics need H * W > 1)")
        output, mean, var = normalize(input, dims, self.eps, weight, bias)
        if self.running_mean is not None and input.numel() > 0:
            factor = 0.0 if self.momentum is None else self.momentum
            self._update_running_stats(mean.mean(0).view(-1), var.mean(0).view(-1), count, factor)
        return output

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        version = local_metadata.get("version", None)
        if version is None and not self.track_running_stats:  # checkpoints from before PyTorch 0.4
            stale = [prefix + k for k in ("running_mean", "running_var") if prefix + k in state_dict]
            if stale:
                error_msgs.append(f"Unexpected running stats buffer(s) {' and '.join(stale)} for "
                                  f"{type(self).__name__} with track_running_stats=False.")
                for key in stale:
                    state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class InstanceNorm1d(_InstanceNorm):
    """InstanceNorm over ``(N, C, L)`` or ``(C, L)``: statistics over L. Equivalent: ``torch.nn.InstanceNorm1d``.

    Shape:
        - Input: :math:`(N, C, L)` or :math:`(C, L)`, statistics over ``reduce_dims(3) == (2,)``
        - Output: same shape as the input

    Example:
        >>> norm = InstanceNorm1d(2)
        >>> x = torch.tensor([[[1.0, 3.0], [10.0, 30.0]]])
        >>> norm(x)  # each (sample, channel) row has mean 0 and variance 1 (up to eps)
        tensor([[[-1.0000,  1.0000],
                 [-1.0000,  1.0000]]])
        >>> norm(x[0]).shape  # unbatched (C, L)
        torch.Size([2, 2])
    """

    _unbatched_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """InstanceNorm over ``(N, C, H, W)`` or ``(C, H, W)``: statistics over (H, W).
    Equivalent: ``torch.nn.InstanceNorm2d``.

    Shape:
        - Input: :math:`(N, C, H, W)` or :math:`(C, H, W)`, statistics over ``reduce_dims(4) == (2, 3)``
        - Output: same shape as the input

    Example:
        >>> norm = InstanceNorm2d(3, affine=True)
        >>> norm(torch.randn(2, 3, 4, 4)).shape, norm.reduce_dims(4)
        (torch.Size([2, 3, 4, 4]), (2, 3))
        >>> norm.statistic_ids((2, 3, 1, 1)).flatten().tolist()  # one statistic per (sample, channel)
        [0, 1, 2, 3, 4, 5]
    """

    _unbatched_dim = 3


class InstanceNorm3d(_InstanceNorm):
    """InstanceNorm over ``(N, C, D, H, W)`` or ``(C, D, H, W)``. Equivalent: ``torch.nn.InstanceNorm3d``.

    Shape:
        - Input: :math:`(N, C, D, H, W)` or :math:`(C, D, H, W)`, statistics over ``reduce_dims(5) == (2, 3, 4)``
        - Output: same shape as the input

    Example:
        >>> InstanceNorm3d(4)(torch.randn(2, 4, 3, 3, 3)).shape
        torch.Size([2, 4, 3, 3, 3])
    """

    _unbatched_dim = 4


def _as_shape(normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(normalized_shape)


def _check_trailing_shape(input: Tensor, normalized_shape: tuple[int, ...]) -> None:
    """Raise unless the input ends with ``normalized_shape``."""
    k = len(normalized_shape)
    if input.dim() < k or tuple(input.shape[input.dim() - k:]) != normalized_shape:
        raise RuntimeError(f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, normalized_shape))}], but got input of size{list(input.shape)}")


class LayerNorm(_Norm):
    r"""Layer normalization: statistics per sample over the last ``len(normalized_shape)`` axes.

    .. math::  y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    No batch statistics, no running state: training and eval compute the same thing, at any batch size.
    ``weight``/``bias`` have shape ``normalized_shape`` (one per element, unlike GroupNorm(1, C)'s one per
    channel). Equivalent: ``torch.nn.LayerNorm`` (``F.layer_norm``). Taught in Q6.

    Shape:
        - Input: :math:`(*, \text{normalized\_shape})`, statistics over the last ``len(normalized_shape)`` axes
        - Output: same shape as the input

    Example:
        >>> ln = LayerNorm(4)
        >>> ln(torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 3.0, 3.0]]))  # each row: mean 0, variance 1
        tensor([[-1.3416, -0.4472,  0.4472,  1.3416],
                [-1.0000, -1.0000,  1.0000,  1.0000]], grad_fn=<AddBackward0>)
        >>> LayerNorm([3, 4, 4]).reduce_dims(4)  # (N, C, H, W): one statistic per sample
        (1, 2, 3)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _register_affine(self, self.normalized_shape, elementwise_affine, bias, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """The last ``len(normalized_shape)`` axes, one statistic per row."""
        return tuple(range(ndim - len(self.normalized_shape), ndim))

    def forward(self, input: Tensor) -> Tensor:
        _check_trailing_shape(input, self.normalized_shape)
        return normalize(input, self.reduce_dims(input.dim()), self.eps, self.weight, self.bias)[0]

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(_Norm):
    r"""Group normalization: channels split into ``num_groups`` groups; statistics per sample and group.

    The input ``(N, C, *)`` is viewed as ``(N, G, C/G, *)``; then it is InstanceNorm on that view, the group's
    channels counting as one more spatial axis: statistics over (C/G, *) for each (n, g). ``weight``/``bias`` are
    per channel. ``GroupNorm(1, C)`` has LayerNorm's statistics, ``GroupNorm(C, C)`` InstanceNorm's (Q8).
    Independent of the batch size. Equivalent: ``torch.nn.GroupNorm`` (``F.group_norm``).

    Shape:
        - Input: :math:`(N, C, *)` with ``C == num_channels``, statistics over ``reduce_dims`` of the view
          ``(N, G, C/G, *)``: ``(2, ..., ndim)``
        - Output: same shape as the input

    Example:
        >>> gn = GroupNorm(2, 4)
        >>> gn(torch.randn(3, 4, 5, 5)).shape
        torch.Size([3, 4, 5, 5])
        >>> gn.statistic_ids((2, 4, 1, 1)).view(2, 4).tolist()  # channels {0, 1} and {2, 3}, per sample
        [[0, 0, 1, 1], [2, 2, 3, 3]]
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _register_affine(self, num_channels, affine, bias, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """For the grouped view ``(N, G, C/G, *)`` of ``ndim`` axes: C/G and every spatial axis."""
        return tuple(range(2, ndim))

    def _stats_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size((shape[0], self.num_groups, shape[1] // self.num_groups, *shape[2:]))

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 2:
            raise RuntimeError(f"Expected at least 2 dimensions (N, C, *) for input tensor but received {input.dim()}: "
                               f"got input of size {list(input.shape)}")
        n, c, groups = input.shape[0], input.shape[1], self.num_groups
        if c % groups != 0:
            raise RuntimeError("Expected number of channels in input to be divisible by num_groups, but got "
                               f"input of shape {list(input.shape)} and num_groups={groups}")
        if self.affine and c != self.num_channels:
            raise RuntimeError(f"expected input with {self.num_channels} channels (num_channels), "
                               f"got input of shape {list(input.shape)}")
        if n * (c // groups) * math.prod(input.shape[2:]) == 1:
            raise ValueError("Expected more than 1 value per channel when training, got input size "
                             f"{[n * c // groups, groups, *input.shape[2:]]}")
        grouped = input.reshape(self._stats_shape(input.shape))
        affine_view = (1, groups, c // groups, *[1] * (input.dim() - 2))
        weight = None if self.weight is None else self.weight.view(affine_view)
        bias = None if self.bias is None else self.bias.view(affine_view)
        return normalize(grouped, self.reduce_dims(grouped.dim()), self.eps, weight, bias)[0].reshape(input.shape)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(_Norm):
    r"""Root-mean-square normalization: LayerNorm without centring and without bias.

    .. math::  y = \frac{x}{\sqrt{\frac{1}{n}\sum x_i^2 + \epsilon}} \gamma

    over the last ``len(normalized_shape)`` axes. ``eps=None`` means ``torch.finfo(x.dtype).eps``.
    Equivalent: ``torch.nn.RMSNorm`` (``F.rms_norm``). Used in LLaMA-style transformers (Q6).

    Shape:
        - Input: :math:`(*, \text{normalized\_shape})`, statistics over the last ``len(normalized_shape)`` axes
        - Output: same shape as the input

    Example:
        >>> rms = RMSNorm(2)
        >>> rms(torch.tensor([[3.0, 4.0], [-1.0, 1.0]]))  # divided by sqrt((3**2 + 4**2) / 2), by 1
        tensor([[ 0.8485,  1.1314],
                [-1.0000,  1.0000]], grad_fn=<MulBackward0>)
    """

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True,
                 device=None, dtype=None) -> None:
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        weight = nn.Parameter(torch.empty(self.normalized_shape, **factory)) if elementwise_affine else None
        self.register_parameter("weight", weight)
        self.reset_parameters()

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """The last ``len(normalized_shape)`` axes, one statistic per row."""
        return tuple(range(ndim - len(self.normalized_shape), ndim))

    def forward(self, x: Tensor) -> Tensor:
        _check_trailing_shape(x, self.normalized_shape)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return normalize(x, self.reduce_dims(x.dim()), eps, self.weight, None, center=False)[0]

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RunningBatchNorm(nn.Module):
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
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("count", torch.zeros((), **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self.register_buffer("num_samples_tracked", torch.tensor(0, dtype=torch.long, device=device))

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
        dims = (0, *range(2, ndim))
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
