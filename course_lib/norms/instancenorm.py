"""InstanceNorm1d/2d/3d: one statistic per sample and channel over the spatial axes (Q7)."""
from __future__ import annotations

import math
import warnings

from torch import Tensor

from course_lib.functional import normalize, normalize_with_stats
from course_lib.norms.base import _channel_view, _NormBase


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
