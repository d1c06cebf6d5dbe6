r"""The small CNN every experiment trains: one argument, ``norm``, switches the normalization layer.

``get_cnn_model(norm=...)`` stacks :func:`conv_layer` blocks and ends with global average pooling and a
linear classifier. ``norm`` is a *factory* called as ``norm(num_channels)``:

* a class from ``course_lib.norms`` or ``torch.nn``: ``BatchNorm2d``, ``InstanceNorm2d``, ``RunningBatchNorm``;
* a ``functools.partial`` for classes that need more: ``partial(GroupNorm, 2)`` gives ``GroupNorm(2, C)``;
  ``partial(GroupNorm, 1)`` has the statistics of a LayerNorm over (C, H, W) (a ``LayerNorm(C)`` would
  normalize over the last axis W instead, so it is not a drop-in factory here, Q6);
* ``None``: no normalization (the baseline).

Spatial sizes for the 8x8 digits with the default ``strides=(1, 2, 2, 2)`` (padding ``ks // 2``):
8x8 -> 8x8 -> 4x4 -> 2x2 -> **1x1** (:func:`feature_map_sizes`). On the last 1x1 map a per-image
statistic has one value: InstanceNorm raises in training, and even with a biased variance it would map
every input to the constant beta -- all information erased (Q7). BatchNorm is fine there (N values).

Block order (Q2, Q3): ``conv -> norm -> act`` (default) or ``conv -> act -> norm`` (``norm_after_act=True``).
The conv bias is dropped only when a norm with per-channel statistics (BatchNorm, InstanceNorm) directly
follows the conv: such a norm subtracts each channel's mean, which removes any per-channel constant. After
an activation the bias is no longer a constant shift of the norm's input (ReLU clips it), so it is kept.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from .norms import BatchNorm2d

__all__ = ["GeneralRelu", "ConvLayer", "conv_layer", "get_cnn_model", "init_cnn", "feature_map_sizes",
           "cancels_channel_bias"]

NormFactory = Callable[[int], nn.Module]


class GeneralRelu(nn.Module):
    """ReLU with a leak, a shift and a ceiling: ``min(leaky_relu(x, leak) - sub, maxv)``.

    ``leak`` is the negative slope (``None`` = plain ReLU); ``sub`` shifts the output down so that its mean
    is closer to 0 (ReLU outputs have mean > 0); ``maxv`` clamps large values. From fastai course-v3 lesson 6.
    """

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None) -> None:
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.leaky_relu(x, self.leak) if self.leak is not None else nn.functional.relu(x)
        if self.sub is not None:
            x = x - self.sub
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


class ConvLayer(nn.Sequential):
    """A ``Conv2d`` followed by a norm and an activation (in either order); built by :func:`conv_layer`."""


def cancels_channel_bias(norm_module: nn.Module) -> bool:
    """True if ``norm_module`` subtracts a per-channel mean (BatchNorm, InstanceNorm, RunningBatchNorm).

    Duck-typed: those layers (torch.nn's and course_lib.norms') carry a ``running_mean`` attribute (possibly
    ``None``); GroupNorm and LayerNorm do not -- they subtract a mean shared by several channels, which
    cancels only the common part of the channels' biases.
    """
    return hasattr(norm_module, "running_mean")


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, norm: NormFactory | None = BatchNorm2d,
               act: Callable[[], nn.Module] | None = nn.ReLU, norm_after_act: bool = False,
               bias: bool | None = None) -> ConvLayer:
    """``Conv2d(ni, nf, ks, stride, padding=ks // 2)`` then ``norm(nf)`` and ``act()``.

    Output size per spatial axis: ``floor((size + 2 * (ks // 2) - ks) / stride) + 1``, i.e. ``ceil(size /
    stride)`` for odd ``ks``. ``bias=None`` decides for you: no conv bias when ``norm`` follows the conv
    directly and cancels per-channel constants (:func:`cancels_channel_bias`), a bias otherwise.
    ``norm_after_act=True`` puts the norm after the activation (fastai course-v3's order).
    """
    if ks % 2 != 1:
        raise ValueError(f"expected an odd kernel size (so padding ks // 2 keeps the grid centred), got {ks}")
    norm_module = norm(nf) if norm is not None else None
    if bias is None:
        bias = norm_module is None or norm_after_act or not cancels_channel_bias(norm_module)
    layers: list[nn.Module] = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)]
    act_module = act() if act is not None else None
    tail = [act_module, norm_module] if norm_after_act else [norm_module, act_module]
    layers += [m for m in tail if m is not None]
    return ConvLayer(*layers)


def feature_map_sizes(input_size: int = 8, strides: Sequence[int] = (1, 2, 2, 2),
                      kernel_sizes: Sequence[int] | None = None) -> list[int]:
    """Spatial size after each conv of :func:`get_cnn_model`, starting with the input: ``[8, 8, 4, 2, 1]``.

    Kernel sizes default to the model's (5 for the first conv, 3 after). Q7 uses it to find the 1x1 map.
    """
    kernel_sizes = kernel_sizes or [5] + [3] * (len(strides) - 1)
    sizes = [input_size]
    for ks, stride in zip(kernel_sizes, strides):
        sizes.append((sizes[-1] + 2 * (ks // 2) - ks) // stride + 1)
    return sizes


def get_cnn_model(n_classes: int = 10, channels: Sequence[int] = (8, 16, 32, 64),
                  norm: NormFactory | None = BatchNorm2d, strides: Sequence[int] | None = None,
                  act: Callable[[], nn.Module] | None = nn.ReLU, norm_after_act: bool = False,
                  in_channels: int = 1, init: bool = True) -> nn.Sequential:
    """CNN for ``(N, in_channels, H, W)`` images: conv blocks, global average pooling, ``Linear(C_last, n_classes)``.

    One :func:`conv_layer` per entry of ``channels``; the first has a 5x5 kernel and stride 1 (it looks at
    the whole 8x8 digit before downsampling), the others 3x3 and stride 2. With 8x8 inputs the maps are
    8 -> 8 -> 4 -> 2 -> 1 (:func:`feature_map_sizes`). Global average pooling makes the classifier work for
    any input size. ``init=True`` applies :func:`init_cnn` (Kaiming). Returns logits ``(N, n_classes)``.
    """
    strides = list(strides) if strides is not None else [1] + [2] * (len(channels) - 1)
    if len(strides) != len(channels):
        raise ValueError(f"expected one stride per conv layer ({len(channels)}), got {len(strides)}: {strides}")
    sizes = [in_channels, *channels]
    layers = [conv_layer(sizes[i], sizes[i + 1], ks=5 if i == 0 else 3, stride=strides[i], norm=norm, act=act,
                         norm_after_act=norm_after_act) for i in range(len(channels))]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(sizes[-1], n_classes))
    return init_cnn(model) if init else model


def init_cnn(model: nn.Module, leak: float = 0.0) -> nn.Module:
    r"""Kaiming-normal weights for every conv and linear layer, zero biases; returns ``model``.

    ``std = gain / sqrt(fan_in)`` with ``gain = sqrt(2 / (1 + leak^2))``: keeps the activations' variance
    roughly constant through (leaky) ReLU layers without normalization (He et al. 2015; Q2, Q3).
    Norm layers keep their own initialization (gamma = 1, beta = 0).
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, a=leak, nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model

