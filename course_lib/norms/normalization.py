"""LayerNorm, GroupNorm, RMSNorm: statistics per sample, no running state (Q6, Q8), as torch.nn's
``normalization.py``."""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from course_lib.functional import normalize
from course_lib.norms.base import _Norm, _register_affine


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
    channels counting as one more spatial axis: statistics over ``(C/G, *)`` for each ``(n, g)``. ``weight`` and
    ``bias`` are per channel. ``GroupNorm(1, C)`` has LayerNorm's statistics, ``GroupNorm(C, C)`` InstanceNorm's (Q8).
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
