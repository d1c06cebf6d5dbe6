r"""The one core every normalization layer shares: *normalize over these axes, then an affine*.

Every layer of the course is the same computation with different reduction axes ``dims``:

.. math::

    \mu = \frac{1}{n}\sum_{i \in \text{dims}} x_i, \qquad
    \sigma^2 = \frac{1}{n}\sum_{i \in \text{dims}} (x_i - \mu)^2 \;\text{(biased)}, \qquad
    y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta

where ``n`` is the number of elements reduced for one statistic. RMSNorm is the uncentred case
(:math:`\mu` fixed at 0, :math:`\sigma^2 = \frac1n\sum x_i^2`). Which axes each layer reduces is stated once, by
the layer itself: ``layer.reduce_dims(ndim)`` in :mod:`course_lib.norms`.

:func:`normalize` is that formula in tensor operations, and autograd differentiates it: the gradient flows
through :math:`\mu` and :math:`\sigma^2` (they are functions of ``x``, not constants), and ``torch.func``
(``grad``, ``vmap``, ``jacrev``, ``jvp``) works over it as over any tensor code. Q3 derives the backward by hand;
``tests/test_norms_properties.py`` checks that formula against this autograd. PyTorch equivalents:
``F.batch_norm``, ``F.instance_norm``, ``F.group_norm``, ``F.layer_norm``, ``F.rms_norm`` -- none is called here.

Numerics (a teaching point of Q1, Q3 and Q9): why two passes, and why a second centring.

* The one-pass formula :math:`\sigma^2 = E[x^2] - E[x]^2` subtracts two numbers of size :math:`\mu^2 + \sigma^2`
  to get one of size :math:`\sigma^2`; in a precision with unit roundoff :math:`u` (float32: :math:`6\cdot10^{-8}`)
  its relative error grows like :math:`u\,(1 + \mu^2/\sigma^2)`. For ``1e4 + randn`` that is
  :math:`6\cdot10^{-8}\cdot10^8 = 6`: every digit is lost (three rows of 4096 values of ``1e4 + randn`` give
  0, 24 and 8 instead of about 1; at ``1e5``, -1024).
* Two passes (mean first, then the mean of :math:`(x - \mu)^2`) square only the small centred values, so the
  error no longer grows with :math:`\mu^2/\sigma^2` (Chan, Golub & LeVeque 1983). What is left is the rounding of
  :math:`\mu` itself: float32 spaces numbers near ``1e4`` by ``1e-3``, so the mean, hence every ``x - mean``, is
  off by a constant ``delta`` of that size (measured: ``1.0e-3`` at ``1e4``, ``1.2e-2`` at ``1e5``) -- an output
  error of ``delta / sigma``. The *corrected* two-pass algorithm measures ``delta`` as the mean of ``x - mean``
  (small numbers, so measured accurately) and subtracts it too. ``delta`` is 0 in exact arithmetic whatever ``x``
  is, so it has no derivative and is detached.

Measured with ``python benchmarks/norms.py --accuracy``: ``x = offset + randn`` in float32 (seeded), the max abs
error of the output / of the input gradient (for a random output gradient) against the same torch.nn layer run in
float64 on the same values; torch 2.13 CPU, one thread:

=======================  ======  =====================  =====================
layer, input             offset  course_lib             torch.nn
=======================  ======  =====================  =====================
BatchNorm2d, (8,3,6,6)   0       2.4e-7 / 3.2e-7        2.3e-7 / 2.6e-7
BatchNorm2d, (8,3,6,6)   1e4     3.0e-7 / 4.3e-7        5.6e-4 / 7.6e-5
GroupNorm(3), (8,6,6,6)  1e4     4.3e-7 / 4.2e-7        2.3e-3 / 1.5e-3
LayerNorm, (8,3,64)      1e4     2.7e-7 / 4.9e-7        1.3e-3 / 1.2e-3
LayerNorm, (8,3,64)      1e5     3.4e-7 / 4.8e-7        1.1e-2 / 1.1e-2
=======================  ======  =====================  =====================

course_lib is more accurate than its oracle at large offsets: torch.nn's float32 errors grow with the offset,
course_lib's do not; the one-pass :math:`E[x^2]-E[x]^2` has errors of order 1 there. Without the second centring, this
``normalize`` would have output errors of ``1.0e-3`` at ``1e4`` (``tests/test_norms_properties.py``,
``test_statistics_are_accurate_at_large_offsets``).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["normalize", "normalize_with_stats"]


def normalize(x: Tensor, dims: tuple[int, ...], eps: float, weight: Tensor | None = None,
              bias: Tensor | None = None, center: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Normalize ``x`` with its own mean and biased variance over ``dims``, then apply the affine.

    Args:
        x: input of any shape.
        dims: the axes reduced for one statistic (e.g. ``(0, 2, 3)`` for BatchNorm2d).
        eps: added to the variance inside the square root.
        weight, bias: ``None`` or tensors that broadcast against ``x`` (already viewed, e.g. ``(1, C, 1, 1)``
            for a per-channel affine on NCHW input, or ``normalized_shape`` for LayerNorm).
        center: subtract the mean (``False`` for RMSNorm: ``mean`` is 0 and ``var`` the mean square).

    Returns:
        ``(y, mean, var)``: ``y`` has the shape of ``x``; ``mean`` and ``var`` (biased) are detached and keep
        the reduced axes as size 1 (a caller stores them in buffers without keeping a graph).

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0]])
        >>> y, mean, var = normalize(x, dims=(1,), eps=0.0)
        >>> mean.flatten().tolist(), var.flatten().tolist()
        ([2.0, 11.0], [0.6666666865348816, 2.0])
        >>> y.sum(1).abs().max() < 1e-6  # each row has mean 0 ...
        tensor(True)
        >>> ((y ** 2).mean(1) - 1).abs().max() < 1e-6  # ... and variance 1
        tensor(True)
    """
    if not dims:
        raise ValueError(f"expected at least one axis to normalize over, got dims={dims} for input {list(x.shape)}")
    if center:
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        delta = xc.mean(dims, keepdim=True).detach()  # the rounding error of mean (see the module docstring)
        xc = xc - delta
        mean = mean + delta
    else:
        mean = x.new_zeros(())
        xc = x
    var = (xc * xc).mean(dims, keepdim=True)
    y = xc * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean.detach(), var.detach()


def normalize_with_stats(x: Tensor, mean: Tensor, var: Tensor, eps: float, weight: Tensor | None = None,
                         bias: Tensor | None = None) -> Tensor:
    """Normalize with *given* statistics (e.g. running estimates in eval mode); all arguments broadcast.

    The statistics are constants here, so ``y = x * scale + shift`` with ``scale = weight / sqrt(var + eps)``
    and ``shift = bias - mean * scale``: one pass over ``x``, and autograd gives the gradients.

    Example:
        >>> normalize_with_stats(torch.tensor([1.0, 3.0]), mean=torch.tensor(1.0), var=torch.tensor(4.0), eps=0.0)
        tensor([0., 1.])
    """
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return x * scale + shift
