"""What every course_lib normalization layer shares: the affine, the axes, the running-statistics base."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import init

from course_lib.stats import ema_update


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


def _public_layers() -> dict[str, type]:
    """``{name: class}`` of course_lib's public layers (the ``_Norm`` subclasses that ``course_lib.norms`` exports)."""
    found, stack = {}, [_Norm]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__ == "course_lib.norms":
                found[sub.__name__] = sub
    return found


def reduce_dims_of(layer: nn.Module, ndim: int) -> tuple[int, ...] | None:
    """The axes of a batched ``ndim``-axis input over which ``layer`` computes one mean and variance.

    A course_lib layer answers with its own ``reduce_dims``; a ``torch.nn`` layer with that of its course_lib
    namesake, applied to it (the drop-in contract: same attributes, e.g. ``normalized_shape``). ``None`` for a
    GroupNorm (its statistics reduce a grouped *view* of the input, not axes of the input) and for anything that
    is not a normalization layer. Used by the grading checks to name a student's classic mistakes.

    Example:
        >>> reduce_dims_of(nn.BatchNorm2d(3), 4), reduce_dims_of(nn.LayerNorm((5, 6)), 4)
        ((0, 2, 3), (2, 3))
    """
    twin = type(layer) if isinstance(layer, _Norm) else _public_layers().get(type(layer).__name__)
    if twin is None:
        return None
    if twin._stats_shape is not _Norm._stats_shape:
        return None
    return twin.reduce_dims(layer, ndim)


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
