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
  channel like ``1e4 + randn`` keeps its precision;
* gradients flow through :math:`\mu` and :math:`\sigma^2` (the statistics are *not* constants);
* the returned statistics are detached, so a caller can store them in buffers without keeping a graph.

The backward pass is written by hand (still only tensor operations) because it is ~3x faster than letting
autograd differentiate the composite; when a graph of the gradient itself is requested
(``create_graph=True``), it differentiates the plain composite :func:`reference_normalize` instead, so
double backward is exact.  PyTorch equivalents: ``F.batch_norm``, ``F.instance_norm``, ``F.group_norm``,
``F.layer_norm``, ``F.rms_norm`` -- none of which is called here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["normalize", "normalize_with_stats", "reference_normalize", "moments"]


def moments(x: Tensor, dims: tuple[int, ...], center: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, centred values and biased variance of ``x`` over ``dims`` (kept as size-1 axes).

    Corrected two-pass algorithm: ``mu = sum(x)/n``, ``c = x - mu``, then ``delta = sum(c)/n`` (the rounding
    error of ``mu``: tiny, but not zero in float32 when ``|mu| >> std``) and ``var = sum(c**2)/n - delta**2``;
    the mean returned is ``mu + delta``. Never ``E[x^2] - E[x]^2`` on raw inputs. With ``center=False`` the
    mean is 0 and the "variance" is the mean square (RMSNorm).
    Returns ``(mean, centered, var)``; ``centered`` is the new tensor ``x - mu`` (``delta`` not subtracted).
    """
    mu, centered, var, delta = _centred_moments(x, dims, center)
    return (mu if delta is None else mu + delta), centered, var


def _centred_moments(x, dims, center):
    n = _count(x, dims)
    centered = torch.empty_like(x)  # allocated first, as PyTorch's kernels do (see _Normalize)
    if not center:
        centered.copy_(x)
        return x.new_zeros([1] * x.dim()), centered, _sum_of_squares(centered, dims).div_(n), None
    mu = x.sum(dims, keepdim=True).div_(n)
    torch.sub(x, mu, out=centered)
    delta = centered.sum(dims, keepdim=True).div_(n)
    var = _sum_of_squares(centered, dims).div_(n).sub_(delta * delta)
    return mu, centered, var, delta


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
        dims: the axes reduced for one statistic (non-negative ints).
        eps: added to the variance inside the square root.
        weight, bias: ``None`` or tensors that broadcast against ``x`` (already viewed, e.g. ``(1, C, 1, 1)``
            for a per-channel affine on NCHW input, or ``normalized_shape`` for LayerNorm).
        center: subtract the mean (``False`` for RMSNorm).

    Returns:
        ``(y, mean, var)``: ``y`` has the shape of ``x``; ``mean`` and ``var`` (biased) are detached and keep
        the reduced axes as size 1.
    """
    dims = tuple(sorted({d % x.dim() for d in dims})) if x.dim() else ()
    if not dims:
        raise ValueError(f"expected at least one axis to normalize over, got dims={dims} for input {list(x.shape)}")
    if x.numel() == 0:  # an empty batch: nothing to normalize, no statistics (as PyTorch)
        nan = x.new_full([1 if d in dims else s for d, s in enumerate(x.shape)], math.nan)
        return _apply_affine(x * 1.0, weight, bias), nan, nan
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


def _apply_affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


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
    partial = torch.linalg.vector_norm(t.reshape(*head, -1), 2, -1).square_().reshape(*head, *[1] * tail)
    rest = tuple(d for d in dims if d < ndim - tail)
    return partial.sum(rest, keepdim=True) if rest else partial


class _Normalize(torch.autograd.Function):
    r"""Forward and hand-written backward of :func:`normalize` (see the module docstring for the math).

    Backward, with ``d = g * weight`` (the gradient reaching the normalized values), ``c = x - mu`` and
    ``r = 1/sqrt(var + eps)``:

    .. math::
        \frac{\partial L}{\partial x} = r\,d - \frac{r}{n}\sum d - c\,\frac{r^3}{n}\sum d\,c, \qquad
        \frac{\partial L}{\partial \gamma} = \sum g\,c\,r, \qquad \frac{\partial L}{\partial \beta} = \sum g

    (the middle term vanishes for RMSNorm). Like PyTorch's kernels, forward and backward each allocate one
    full-size tensor (``y``, ``dx``): every other full-size step runs in place in that buffer, which matters
    on machines where touching fresh memory (page faults) costs more than the arithmetic. Two cases:

    * the weight is constant along the innermost reduced axes (BatchNorm, InstanceNorm, GroupNorm, or no
      weight): ``sum g`` and ``sum g*c`` are taken over those axes first; what follows is arithmetic on
      per-channel tensors, then ``dx = g*A + c*B + C`` in place;
    * the weight is elementwise over the reduced axes (LayerNorm, RMSNorm): on a ``(rows, features)`` view,
      the feature sums are matrix-vector products ``g @ w`` and ``(g*xhat) @ w``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps, center):
        ctx.dims, ctx.eps, ctx.center = dims, eps, center
        ctx.rows = _is_rows_layout(x, weight, dims)
        if ctx.rows:
            x = x.contiguous()
            y, mean, var, rstd = _rows_forward(x, weight, bias, eps, center)
        else:
            mu, y, var, delta = _centred_moments(x, dims, center)  # y holds x - mu: finish it in place
            rstd = torch.rsqrt(var + eps)
            scale = rstd if weight is None else rstd * weight
            y.mul_(scale)  # one per-statistic scale: one pass; then y = (x - mu - delta) * scale + bias
            shift = None if delta is None else delta * scale.neg()
            if bias is not None:
                shift = bias if shift is None else shift + bias
            if shift is not None:
                y.add_(shift)
            mean = mu if delta is None else mu + delta
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the composite instead
            return _composite_grads(ctx, grad_y, x, weight, bias)
        if ctx.rows:
            return _rows_backward(ctx, grad_y, x, weight, bias, mean, rstd)
        dims, center = ctx.dims, ctx.center
        ndim = x.dim()
        w_shape = None if weight is None else _padded_shape(weight, ndim)
        inner = tuple(d for d in dims if w_shape is None or w_shape[d] == 1)
        buf = torch.empty_like(x)  # the one full-size buffer: g*x (or g*c) first, then dx
        n = _count(x, dims)
        exact_centring = center and _needs_exact_centring(mean, rstd)
        g_sum = grad_y.sum(inner, keepdim=True)
        if exact_centring:
            gc_sum = torch.sub(x, mean, out=buf).mul_(grad_y).sum(inner, keepdim=True)
        else:
            gc_sum = torch.mul(grad_y, x, out=buf).sum(inner, keepdim=True)
            if center:
                gc_sum -= g_sum * mean
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            d_sum, dc_sum = (g_sum, gc_sum) if weight is None else (g_sum * weight, gc_sum * weight)
            coef_c = dc_sum.sum(dims, keepdim=True).mul_(rstd.pow(3)).mul_(-1.0 / n)
            coef_1 = d_sum.sum(dims, keepdim=True).mul_(rstd).mul_(-1.0 / n) if center else None
            if exact_centring:  # dx = coef_c * (x - mean) + coef_1 + (r w) g
                grad_x = torch.sub(x, mean, out=buf).mul_(coef_c).add_(coef_1)
            else:  # same, regrouped as x * coef_c + (coef_1 - coef_c * mean): one pass fewer
                grad_x = torch.mul(x, coef_c, out=buf)
                if center:
                    grad_x.add_(coef_1 - coef_c * mean)
            grad_x.addcmul_(grad_y, rstd if weight is None else rstd * weight)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = (gc_sum * rstd).sum_to_size(w_shape).view(weight.shape)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_b = g_sum.sum_to_size(_padded_shape(bias, ndim)).view(bias.shape)
        return grad_x, grad_w, grad_b, None, None, None


def _needs_exact_centring(mean: Tensor, rstd: Tensor) -> bool:
    """Whether ``sum(g*x) - mean*sum(g)`` would lose precision: true when some ``|mean| / std`` is large.

    That difference cancels ``|mean|/std`` times more digits than the centred ``sum(g*(x - mean))``; below
    the threshold the loss is under 3 bits and the uncentred form saves a pass over the data.
    """
    return bool((mean.abs() * rstd).amax() > _CENTRING_THRESHOLD)


_CENTRING_THRESHOLD = 8.0


def _is_rows_layout(x: Tensor, weight: Tensor | None, dims: tuple[int, ...]) -> bool:
    """LayerNorm/RMSNorm with an affine: the weight spans exactly the trailing reduced axes of x."""
    return (weight is not None and weight.dim() == len(dims)
            and dims == tuple(range(x.dim() - len(dims), x.dim())) and weight.shape == x.shape[x.dim() - len(dims):])


def _row_blocks(rows: int, features: int):
    """Slices of about ``_BLOCK_ELEMENTS`` elements: a block's passes then run in the CPU cache, not RAM."""
    step = max(1, _BLOCK_ELEMENTS // features)
    return (slice(start, min(start + step, rows)) for start in range(0, rows, step))


def _rows_forward(x, weight, bias, eps, center):
    """Forward on a ``(rows, features)`` view, block by block; returns y, mean, var, rstd (shaped as moments')."""
    features = weight.numel()
    rows = x.numel() // features
    y = torch.empty_like(x)
    x2, y2, w = x.view(rows, features), y.view(rows, features), weight.view(features)
    b = None if bias is None else bias.view(features)
    mean, var = x.new_zeros(rows, 1), x.new_empty(rows, 1)
    for block in _row_blocks(rows, features):
        x_b, y_b, mean_b, var_b = x2[block], y2[block], mean[block], var[block]
        if center:  # corrected two-pass (see moments): centre, then remove the mean's rounding error
            torch.sub(x_b, torch.sum(x_b, 1, keepdim=True, out=mean_b).div_(features), out=y_b)
            delta = y_b.sum(1, keepdim=True).div_(features)
            y_b.sub_(delta)
            mean_b.add_(delta)
        else:
            y_b.copy_(x_b)
        torch.linalg.vector_norm(y_b, 2, 1, keepdim=True, out=var_b).square_().div_(features)
        y_b.mul_(torch.rsqrt(var_b + eps))
        if b is None:
            y_b.mul_(w)
        else:
            torch.addcmul(b, y_b, w, out=y_b)
    stat_shape = (*x.shape[: x.dim() - weight.dim()], *([1] * weight.dim()))
    mean, var = mean.view(stat_shape), var.view(stat_shape)
    return y, mean, var, torch.rsqrt(var + eps)


def _rows_backward(ctx, grad_y, x, weight, bias, mean, rstd):
    """Backward of :func:`_rows_forward` (LayerNorm/RMSNorm with an affine), block by block.

    Per row with ``F`` features, ``xhat = (x - mean) * r`` and ``d = g * w``:
    ``dx = r * (d - mean_f(d) - xhat * mean_f(d * xhat))``; ``dw = sum_rows g * xhat``, ``db = sum_rows g``.
    The feature sums are matrix-vector products (``g @ w``). Each block of the ``dx`` buffer (the one
    full-size allocation) first holds ``g * xhat``, then ``dx``; recomputing ``xhat`` in cache is cheaper
    than a second full-size buffer.
    """
    features = weight.numel()
    rows = x.numel() // features
    grad_x = torch.empty_like(x)
    g, x2, w = grad_y.reshape(rows, features), x.view(rows, features), weight.view(features)
    dx2, r, mean2 = grad_x.view(rows, features), rstd.view(rows, 1), mean.view(rows, 1)
    grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
    grad_b = torch.zeros_like(w) if bias is not None and ctx.needs_input_grad[2] else None
    for block in _row_blocks(rows, features):
        g_b, x_b, m_b, r_b, dx_b = g[block], x2[block], mean2[block], r[block], dx2[block]
        g_xhat = torch.sub(x_b, m_b, out=dx_b).mul_(r_b).mul_(g_b)
        if grad_w is not None:
            grad_w += g_xhat.sum(0)
        if grad_b is not None:
            grad_b += g_b.sum(0)
        coef_xhat = (g_xhat @ w).unsqueeze_(1).mul_(-1.0 / features)
        torch.sub(x_b, m_b, out=dx_b).mul_(r_b).mul_(coef_xhat)
        if ctx.center:
            dx_b.sub_((g_b @ w).unsqueeze_(1).mul_(1.0 / features))
        dx_b.addcmul_(g_b, w).mul_(r_b)
    grad_b = None if grad_b is None else grad_b.view(bias.shape)
    grad_w = None if grad_w is None else grad_w.view(weight.shape)
    return grad_x if ctx.needs_input_grad[0] else None, grad_w, grad_b, None, None, None


_BLOCK_ELEMENTS = 1 << 19  # 2 MB of float32 per block: fits the L2/L3 caches of a laptop


def _composite_grads(ctx, grad_y, x, weight, bias):
    """Gradients with a graph (for double backward), from autograd on :func:`reference_normalize`."""
    inputs = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3]) if need]
    with torch.enable_grad():
        y = reference_normalize(x, ctx.dims, ctx.eps, weight, bias, ctx.center)
        grads = iter(torch.autograd.grad(y, inputs, grad_y, create_graph=True, allow_unused=True))
    out = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
    return (*out, None, None, None)
