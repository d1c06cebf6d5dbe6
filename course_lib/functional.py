r"""The one core every normalization layer shares: *normalize over these axes, then an affine*.

Every layer of the course is the same computation with different reduction axes ``dims``:

.. math::

    \mu = \frac{1}{n}\sum_{i \in \text{dims}} x_i, \qquad
    \sigma^2 = \frac{1}{n}\sum_{i \in \text{dims}} (x_i - \mu)^2 \;\text{(biased)}, \qquad
    y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta

where ``n`` is the number of elements reduced for one statistic. RMSNorm is the uncentred case
(:math:`\mu` fixed at 0, :math:`\sigma^2 = \frac1n\sum x_i^2`).

=================  ===========================  =====================  ================================
layer              axes reduced (input N,C,*)   one statistic per      affine shape
=================  ===========================  =====================  ================================
BatchNorm          (N, *spatial)                channel                (C,)
InstanceNorm       (*spatial)                   sample and channel     (C,)
GroupNorm          (C/G, *spatial)              sample and group       (C,)
LayerNorm          the last ``len(shape)``      sample (row)           ``normalized_shape``
RMSNorm            the last ``len(shape)``      sample (row)           ``normalized_shape``
=================  ===========================  =====================  ================================

Numerics (taught in Q1, Q3, Q9):

* the variance is computed in two passes over centred data, never as :math:`E[x^2]-E[x]^2`, so a float32
  channel like ``1e4 + randn`` keeps its precision; when ``|mean| / std`` is large, the rounding error of the
  float32 mean itself is measured and removed (the corrected two-pass algorithm);
* gradients flow through :math:`\mu` and :math:`\sigma^2` (the statistics are *not* constants);
* the returned statistics are detached, so a caller can store them in buffers without keeping a graph.

Speed (``benchmarks/norms.py``): the backward pass is written by hand (still only tensor operations), about
four times faster than letting autograd differentiate the composite; forward and backward each allocate a
single full-size tensor and finish it in place (fresh memory costs page faults), and take the cheaper
uncentred formulas where they are exact enough. When a graph of the gradient itself is requested
(``create_graph=True``), backward differentiates the plain composite :func:`reference_normalize` instead, so double backward is exact.  PyTorch equivalents: ``F.batch_norm``, ``F.instance_norm``, ``F.group_norm``,
``F.layer_norm``, ``F.rms_norm`` -- none of which is called here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["normalize", "normalize_with_stats", "reference_normalize", "moments"]


def moments(x: Tensor, dims: tuple[int, ...], center: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and biased variance of ``x`` over ``dims`` (kept as size-1 axes), as the layers compute them.

    ``mu = sum(x)/n``, ``var = sum((x - mu)**2)/n``, corrected for the rounding of ``mu`` when it matters.
    With ``center=False`` the mean is 0 and the "variance" is the mean square (RMSNorm).
    """
    _, mean, var, _, _ = _standardize(x, tuple(sorted(d % x.dim() for d in dims)), 0.0, center)
    return mean, var


def reference_normalize(x: Tensor, dims: tuple[int, ...], eps: float, weight: Tensor | None = None,
                        bias: Tensor | None = None, center: bool = True) -> Tensor:
    """The textbook composite, differentiated by autograd: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Used for double backward and as the "textbook" line of the benchmarks; the fast path must agree with it.
    """
    centered = x - x.mean(dims, keepdim=True) if center else x
    var = (centered * centered).mean(dims, keepdim=True)
    y = centered / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def normalize(x: Tensor, dims: tuple[int, ...], eps: float, weight: Tensor | None = None,
              bias: Tensor | None = None, center: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Normalize ``x`` with its own statistics over ``dims``, then apply the affine.

    Args:
        x: input of any shape.
        dims: the axes reduced for one statistic.
        eps: added to the variance inside the square root.
        weight, bias: ``None`` or tensors that broadcast against ``x`` (already viewed, e.g. ``(1, C, 1, 1)``
            for a per-channel affine on NCHW input, or ``normalized_shape`` for LayerNorm).
        center: subtract the mean (``False`` for RMSNorm).

    Returns:
        ``(y, mean, var)``: ``y`` has the shape of ``x``; ``mean`` and ``var`` (biased) are detached and keep
        the reduced axes as size 1.
    """
    ndim = x.dim()
    dims = tuple(sorted({d % ndim for d in dims})) if ndim else ()
    if not dims:
        raise ValueError(f"expected at least one axis to normalize over, got dims={dims} for input {list(x.shape)}")
    if x.numel() == 0:  # an empty batch: nothing to normalize, no statistics (as PyTorch)
        nan = x.new_full([1 if d in dims else s for d, s in enumerate(x.shape)], math.nan)
        y = x * 1.0 if weight is None else x * weight
        return (y if bias is None else y + bias), nan, nan
    return _Normalize.apply(x, weight, bias, dims, float(eps), bool(center))


def normalize_with_stats(x: Tensor, mean: Tensor, var: Tensor, eps: float, weight: Tensor | None = None,
                         bias: Tensor | None = None) -> Tensor:
    """Normalize with *given* statistics (e.g. running estimates in eval mode); all arguments broadcast.

    The statistics are constants here, so ``y = x * scale + shift`` with ``scale = weight / sqrt(var + eps)``
    and ``shift = bias - mean * scale``: one pass over ``x``, and autograd gives the gradients.
    """
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return (x * scale).add_(shift)


class _Normalize(torch.autograd.Function):
    r"""Forward and hand-written backward of :func:`normalize` (see the module docstring for the math).

    Backward, with ``d = g * weight`` (the gradient reaching the normalized values), ``c = x - mu`` and
    ``r = 1/sqrt(var + eps)``, ``n`` values per statistic:

    .. math::
        \frac{\partial L}{\partial x} = r\,d - \frac{r}{n}\sum d - c\,\frac{r^3}{n}\sum d\,c, \qquad
        \frac{\partial L}{\partial \gamma} = \sum g\,c\,r, \qquad \frac{\partial L}{\partial \beta} = \sum g

    (the middle term vanishes for RMSNorm). Two cases:

    * the weight is constant along the innermost reduced axes (BatchNorm, InstanceNorm, GroupNorm, or no
      weight): ``sum g`` and ``sum g*c`` over those axes first; what follows is arithmetic on per-channel
      tensors, then ``dx = g*A + x*B + C`` in place (:func:`_grouped_backward`);
    * the weight is elementwise over the reduced trailing axes (LayerNorm, RMSNorm): the feature sums are
      matrix-vector products ``g @ w``, block by block of rows so a block stays in the CPU cache
      (:func:`_rows_backward`).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps, center):
        y, mean, var, rstd, ctx.ill_conditioned = _standardize(x, dims, eps, center)
        if weight is not None and _elementwise(weight, dims, x.dim()):
            if bias is None:
                y.mul_(rstd).mul_(weight)
            else:
                torch.addcmul(bias, y.mul_(rstd), weight, out=y)  # y * w + b in one pass
        else:
            y.mul_(rstd if weight is None else rstd * weight)  # one per-statistic scale: one pass
            if bias is not None:
                y.add_(bias)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.dims, ctx.eps, ctx.center = dims, eps, center
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the composite instead
            return _composite_grads(ctx, grad_y, x, weight, bias)
        if weight is not None and _elementwise(weight, ctx.dims, x.dim()):
            grads = _rows_backward(ctx, grad_y, x, weight, bias, mean, rstd)
        else:
            grads = _grouped_backward(ctx, grad_y, x, weight, bias, mean, rstd)
        return (*grads, None, None, None)


def _standardize(x, dims, eps, center):
    """``(x - mean, mean, var, rstd, ill_conditioned)`` with ``x - mean`` in one new tensor.

    Two passes (``sum``, then the norm of ``x - mu``); the float32 rounding error of ``mu`` is measured and
    removed (corrected two-pass algorithm) only where it matters, when some ``|mu| / std`` is large.
    """
    n = _count(x, dims)
    y = torch.empty_like(x)  # allocated first, as PyTorch's kernels do
    if center:
        mean = x.sum(dims, keepdim=True).div_(n)
        torch.sub(x, mean, out=y)  # exact for |x - mean| << |x|: the same subtrahend for every element
    else:
        y.copy_(x)
        mean = x.new_zeros([1] * x.dim())
    var = _sum_of_squares(y, dims).div_(n)
    rstd = torch.rsqrt(var + eps)
    ill_conditioned = center and _ill_conditioned(mean, rstd)
    if ill_conditioned:
        delta = y.sum(dims, keepdim=True).div_(n)
        y.sub_(delta)
        mean.add_(delta)
        var.sub_(delta * delta)
        rstd = torch.rsqrt(var + eps)
    return y, mean, var, rstd, ill_conditioned


def _ill_conditioned(mean: Tensor, rstd: Tensor) -> bool:
    """Whether some ``|mean| / std`` exceeds ``_CONDITION_LIMIT``: then subtracting the mean cancels enough
    digits that the float32 rounding of the mean itself (and of ``sum(g*x) - mean*sum(g)``) matters."""
    return bool((mean.abs() * rstd).amax() > _CONDITION_LIMIT)


_CONDITION_LIMIT = 8.0


def _elementwise(weight: Tensor, dims: tuple[int, ...], ndim: int) -> bool:
    """LayerNorm/RMSNorm's affine: the weight spans exactly the trailing reduced axes."""
    return weight.dim() == len(dims) and dims == tuple(range(ndim - len(dims), ndim))


def _grouped_backward(ctx, grad_y, x, weight, bias, mean, rstd):
    """Backward when the weight is constant along the innermost reduced axes (BatchNorm, InstanceNorm, GroupNorm).

    Sums over those axes first (``inner``), then per-channel arithmetic, then ``dx = A*g + B*x + C`` in the
    one full-size buffer. Uses ``sum(g*x) - mean*sum(g)`` and ``B*x + (C - B*mean)`` (one pass fewer than
    centring explicitly) unless the data are ill-conditioned, where it centres exactly.
    """
    dims, center = ctx.dims, ctx.center
    ndim = x.dim()
    w_shape = None if weight is None else _padded_shape(weight, ndim)
    inner = tuple(d for d in dims if w_shape is None or w_shape[d] == 1)
    buf = torch.empty_like(x)  # the one full-size buffer: g*x (or g*c) first, then dx
    n = _count(x, dims)
    exact = ctx.ill_conditioned
    g_sum = grad_y.sum(inner, keepdim=True)
    if exact:
        gc_sum = torch.sub(x, mean, out=buf).mul_(grad_y).sum(inner, keepdim=True)
    else:
        gc_sum = torch.mul(grad_y, x, out=buf).sum(inner, keepdim=True)
        if center:
            gc_sum.sub_(g_sum * mean)
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        d_sum, dc_sum = (g_sum, gc_sum) if weight is None else (g_sum * weight, gc_sum * weight)
        coef_x = dc_sum.sum(dims, keepdim=True).mul_(rstd.pow(3)).mul_(-1.0 / n)
        if exact:  # dx = coef_x * (x - mean) + coef_1 + (r w) g
            grad_x = torch.sub(x, mean, out=buf).mul_(coef_x)
            grad_x.add_(d_sum.sum(dims, keepdim=True).mul_(rstd).mul_(-1.0 / n))
        else:  # the same, regrouped as coef_x * x + (coef_1 - coef_x * mean)
            grad_x = torch.mul(x, coef_x, out=buf)
            if center:
                grad_x.add_(d_sum.sum(dims, keepdim=True).mul_(rstd).mul_(-1.0 / n).sub_(coef_x * mean))
        grad_x.addcmul_(grad_y, rstd if weight is None else rstd * weight)
    if weight is not None and ctx.needs_input_grad[1]:
        grad_w = (gc_sum * rstd).sum_to_size(w_shape).view(weight.shape)
    if bias is not None and ctx.needs_input_grad[2]:
        grad_b = g_sum.sum_to_size(_padded_shape(bias, ndim)).view(bias.shape)
    return grad_x, grad_w, grad_b


def _rows_backward(ctx, grad_y, x, weight, bias, mean, rstd):
    """Backward when the weight spans the reduced trailing axes (LayerNorm, RMSNorm with an affine).

    Per row with ``F`` features, ``xhat = (x - mean) * r`` and ``d = g * w``:
    ``dx = r * (d - mean_f(d) - xhat * mean_f(d * xhat))``; ``dw = sum_rows g * xhat``, ``db = sum_rows g``.
    The feature sums are matrix-vector products (``g @ w``). Rows go in blocks of about ``_BLOCK_ELEMENTS``
    so that a block stays in the CPU cache between passes; ``xhat`` of a block lives in a block-sized scratch
    buffer, and each block of ``dx`` (the one full-size allocation) first holds ``g * xhat``, then ``dx``.
    """
    features = weight.numel()
    rows = x.numel() // features
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    g, x2, w = grad_y.reshape(rows, features), x.reshape(rows, features), weight.view(features)
    dx2, r, mean2 = grad_x.view(rows, features), rstd.view(rows, 1), mean.expand(rstd.shape).reshape(rows, 1)
    grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
    grad_b = torch.zeros_like(w) if bias is not None and ctx.needs_input_grad[2] else None
    step = max(1, _BLOCK_ELEMENTS // features)
    scratch = torch.empty((min(step, rows), features), dtype=x.dtype, device=x.device)  # xhat of one block
    for start in range(0, rows, step):
        block = slice(start, start + step)
        g_b, r_b, dx_b = g[block], r[block], dx2[block]
        xhat = torch.sub(x2[block], mean2[block], out=scratch[: g_b.shape[0]]).mul_(r_b)
        g_xhat = torch.mul(g_b, xhat, out=dx_b)
        if grad_w is not None:
            grad_w += g_xhat.sum(0)
        if grad_b is not None:
            grad_b += g_b.sum(0)
        coef_xhat = (g_xhat @ w).unsqueeze_(1).mul_(-1.0 / features)
        torch.mul(xhat, coef_xhat, out=dx_b)
        if ctx.center:
            dx_b.sub_((g_b @ w).unsqueeze_(1).mul_(1.0 / features))
        dx_b.addcmul_(g_b, w).mul_(r_b)
    grad_b = None if grad_b is None else grad_b.view(bias.shape)
    grad_w = None if grad_w is None else grad_w.view(weight.shape)
    return (grad_x if ctx.needs_input_grad[0] else None), grad_w, grad_b


_BLOCK_ELEMENTS = 1 << 19  # 2 MB of float32 per block: fits the L2/L3 caches of a laptop


def _composite_grads(ctx, grad_y, x, weight, bias):
    """Gradients with a graph (for double backward), from autograd on :func:`reference_normalize`."""
    inputs = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3]) if need]
    with torch.enable_grad():
        y = reference_normalize(x, ctx.dims, ctx.eps, weight, bias, ctx.center)
        grads = iter(torch.autograd.grad(y, inputs, grad_y, create_graph=True, allow_unused=True))
    out = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
    return (*out, None, None, None)


def _count(x: Tensor, dims: tuple[int, ...]) -> int:
    return math.prod(x.shape[d] for d in dims)


def _padded_shape(t: Tensor, ndim: int) -> tuple[int, ...]:
    """Shape of ``t`` right-aligned to ``ndim`` axes, as broadcasting sees it."""
    return (1,) * (ndim - t.dim()) + tuple(t.shape)


def _sum_of_squares(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``(t * t).sum(dims, keepdim=True)`` in one pass, without a full-size temporary.

    ``vector_norm`` is fastest over trailing axes of a contiguous tensor, so those are reduced first on a
    flattened view (e.g. H*W for NCHW BatchNorm), and the remaining axes (N) on the small result.
    """
    ndim = t.dim()
    tail = 0
    while tail < len(dims) and (ndim - 1 - tail) in dims:
        tail += 1
    if tail == 0 or not t.is_contiguous():
        return torch.linalg.vector_norm(t, 2, dims, keepdim=True).square_()
    head = t.shape[: ndim - tail]
    partial = torch.linalg.vector_norm(t.view(*head, -1), 2, -1, keepdim=True).square_()
    partial = partial.view(*head, *[1] * tail)
    return partial.sum(dims[: len(dims) - tail], keepdim=True) if tail < len(dims) else partial
