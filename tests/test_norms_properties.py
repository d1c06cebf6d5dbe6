"""Layer 2: properties of the layers (equivalences, invariances, numerics) and the swap test.

These hold by mathematics, not because PyTorch says so; PyTorch appears only to build the swap-test model.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import course_lib.norms as cn
from course_lib.functional import normalize

F64 = torch.float64


def stats_over(x, dims):
    return x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)


# ----------------------------------------------------------------------------------------------------------
# Equivalences between layers (Q6, Q7, Q8)

def test_groupnorm_one_group_has_layernorm_statistics():
    x = torch.randn(5, 6, 4, 4, dtype=F64)
    gn = cn.GroupNorm(1, 6, affine=False).double()
    ln = cn.LayerNorm([6, 4, 4], elementwise_affine=False).double()
    torch.testing.assert_close(gn(x), ln(x))
    mean, var = stats_over(x, (1, 2, 3))
    torch.testing.assert_close(gn(x), (x - mean) / torch.sqrt(var + gn.eps))


def test_groupnorm_one_group_affine_is_per_channel_layernorm_per_element():
    """Q6: GroupNorm(1, C) = LayerNorm((C, H, W)) whose per-element affine is constant over (H, W)."""
    gn, ln = cn.GroupNorm(1, 3).double(), cn.LayerNorm([3, 2, 2]).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        gn.weight.copy_(torch.randn(3, generator=gen, dtype=F64))
        gn.bias.copy_(torch.randn(3, generator=gen, dtype=F64))
        ln.weight.copy_(gn.weight.view(3, 1, 1).expand(3, 2, 2))
        ln.bias.copy_(gn.bias.view(3, 1, 1).expand(3, 2, 2))
    x = torch.randn(5, 3, 2, 2, generator=gen, dtype=F64)
    torch.testing.assert_close(gn(x), ln(x))


def test_groupnorm_c_groups_equals_instancenorm():
    x = torch.randn(5, 6, 4, 4, dtype=F64)
    torch.testing.assert_close(cn.GroupNorm(6, 6, affine=False).double()(x), cn.InstanceNorm2d(6).double()(x))


def test_groupnorm_three_groups_reduces_over_pairs_of_channels():
    """Seed 003 Q8: N=20, C=6, H=W=10, G=3 -> channels {0,1}, {2,3}, {4,5} share statistics."""
    x = torch.randn(20, 6, 10, 10, dtype=F64)
    y = cn.GroupNorm(3, 6, affine=False).double()(x)
    grouped = x.view(20, 3, 2, 10, 10)
    mean, var = stats_over(grouped, (2, 3, 4))
    torch.testing.assert_close(y, ((grouped - mean) / torch.sqrt(var + 1e-5)).view_as(x))


def test_batchnorm1d_on_ncl_reduces_over_batch_and_length():
    """(N, C, L): one statistic per channel C, over N and L (NZH-5's layout fix, Q4)."""
    x = torch.randn(8, 3, 7, dtype=F64)
    y = cn.BatchNorm1d(3, affine=False).double()(x)
    mean, var = stats_over(x, (0, 2))
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5))


def test_instancenorm_removes_per_image_brightness_and_contrast():
    x = torch.randn(4, 3, 8, 8, dtype=F64)
    scale = torch.rand(4, 3, 1, 1, dtype=F64) * 5 + 0.5
    shift = torch.randn(4, 3, 1, 1, dtype=F64) * 10
    inorm = cn.InstanceNorm2d(3, eps=0.0).double()
    torch.testing.assert_close(inorm(x * scale + shift), inorm(x))


@pytest.mark.parametrize("layer", [cn.LayerNorm([3, 4, 4], eps=0.0), cn.GroupNorm(3, 3, eps=0.0),
                                   cn.BatchNorm2d(3, eps=0.0), cn.RMSNorm([3, 4, 4], eps=0.0)])
def test_scale_invariance(layer):
    """BN(a x) = BN(x) for a > 0 (and LN, GN, RMSNorm): the weight scale before a norm does not matter (Q6)."""
    layer = layer.double()
    x = torch.randn(5, 3, 4, 4, dtype=F64)
    torch.testing.assert_close(layer(37.0 * x), layer(x))


def test_scale_invariance_shrinks_gradients():
    """d BN(a x) / dx = (1/a) d BN(x) / dx: larger weights get smaller gradients (NZH-3, teaching point 21)."""
    bn = cn.BatchNorm1d(4).double()
    x = torch.randn(16, 4, dtype=F64)
    grads = []
    for a in (1.0, 10.0):
        xa = (a * x).requires_grad_()
        (bn(xa) * torch.arange(4.0, dtype=F64)).sum().backward()
        grads.append(xa.grad)
    torch.testing.assert_close(grads[1], grads[0] / 10.0)


# ----------------------------------------------------------------------------------------------------------
# Running statistics (Q1)

def test_running_stats_follow_the_ema_with_unbiased_variance():
    bn = cn.BatchNorm2d(3, momentum=0.1)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    bn(x)
    n = 4 * 5 * 5
    mean = x.mean((0, 2, 3))
    unbiased = x.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean, 0.9 * torch.zeros(3) + 0.1 * mean)
    torch.testing.assert_close(bn.running_var, 0.9 * torch.ones(3) + 0.1 * unbiased)
    assert not torch.allclose(unbiased, x.var((0, 2, 3), unbiased=False) * 1.0)  # the distinction is real
    assert math.isclose(float(unbiased[0] / x.var((0, 2, 3), unbiased=False)[0]), n / (n - 1), rel_tol=1e-5)


def test_momentum_none_reproduces_exact_mean_and_unbiased_variance_over_all_batches():
    """Cumulative average: the mean of the batch means and of the per-batch unbiased variances."""
    torch.manual_seed(0)
    bn = cn.BatchNorm1d(3, momentum=None).double()
    batches = [torch.randn(20, 3, dtype=F64) * (1 + k % 3) + k for k in range(50)]
    for b in batches:
        bn(b)
    stacked = torch.stack(batches)  # (50, 20, 3)
    torch.testing.assert_close(bn.running_mean, stacked.mean((0, 1)))
    torch.testing.assert_close(bn.running_var, stacked.var(1, unbiased=True).mean(0))
    assert int(bn.num_batches_tracked) == 50


def test_buffers_updated_in_place_and_never_hold_a_graph():
    bn = cn.BatchNorm2d(3)
    pointers = [bn.running_mean.data_ptr(), bn.running_var.data_ptr()]
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    for _ in range(3):
        bn(x * 2).sum().backward()
    assert [bn.running_mean.data_ptr(), bn.running_var.data_ptr()] == pointers
    for buffer in bn.buffers():
        assert buffer.grad_fn is None and not buffer.requires_grad


def test_mode_comes_only_from_training_flag():
    """eval() switches to running statistics even when gradients are enabled; no_grad() alone does not."""
    bn = cn.BatchNorm1d(2)
    bn(torch.randn(32, 2) * 3 + 5)
    x = torch.randn(8, 2) + 100
    with torch.no_grad():
        train_out = bn(x)  # still training: batch statistics, output ~ standardized
    assert train_out.mean().abs() < 1e-4
    bn.eval()
    eval_out = bn(x)  # grad enabled, running statistics
    assert eval_out.mean() > 10
    bn.train()
    bn.training = False  # the attribute alone decides, whoever sets it
    torch.testing.assert_close(bn(x), eval_out)
    assert bn.train() is bn and bn.training  # train() is nn.Module's method, not shadowed by an attribute


# ----------------------------------------------------------------------------------------------------------
# Numerics (Q3, Q9)

@pytest.mark.parametrize("layer_name,shape,args", [
    ("BatchNorm2d", (8, 3, 6, 6), (3,)), ("InstanceNorm2d", (8, 3, 6, 6), (3,)),
    ("GroupNorm", (8, 6, 6, 6), (3, 6)), ("LayerNorm", (8, 3, 64), (64,)),
])
def test_large_offset_float32_as_accurate_as_pytorch(layer_name, shape, args):
    """x = 1e4 + randn in float32: E[x^2] - E[x]^2 would lose every digit; two passes keep them."""
    torch.manual_seed(0)
    x = 1e4 + torch.randn(shape)
    grad = torch.randn(shape)
    kwargs = {"affine": True} if layer_name == "InstanceNorm2d" else {}
    reference = getattr(nn, layer_name)(*args, dtype=F64, **kwargs)
    errors = {}
    for label, layer in [("ours", getattr(cn, layer_name)(*args, **kwargs)),
                         ("torch", getattr(nn, layer_name)(*args, **kwargs))]:
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.backward(grad)
        xr = x.double().requires_grad_()
        yr = reference(xr)
        yr.backward(grad.double())
        errors[label] = ((y.double() - yr).abs().max().item(), (xi.grad.double() - xr.grad).abs().max().item())
    out_err, grad_err = errors["ours"]
    assert out_err <= 2 * errors["torch"][0] + 1e-5, errors
    assert grad_err <= 2 * errors["torch"][1] + 1e-5, errors
    assert out_err < 2e-4, errors  # a naive E[x^2]-E[x]^2 gives errors of order 1 here


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e4, 1e5])
def test_statistics_are_accurate_at_large_offsets(offset):
    """On offset + randn in float32, E[x^2] - E[x]^2 loses every digit near 1e4 (error ~ u * offset^2); the
    corrected two-pass mean and variance stay accurate to float32 precision of the values themselves."""
    gen = torch.Generator().manual_seed(0)
    x = offset + torch.randn(3, 4096, generator=gen)
    y, mean, var = normalize(x, (1,), 1e-5)
    x64 = x.double()
    torch.testing.assert_close(mean.double().squeeze(1), x64.mean(1), rtol=0, atol=1e-7 * max(offset, 1))
    torch.testing.assert_close(var.double().squeeze(1), x64.var(1, unbiased=False), rtol=1e-5, atol=0)
    y64 = (x64 - x64.mean(1, keepdim=True)) / torch.sqrt(x64.var(1, unbiased=False, keepdim=True) + 1e-5)
    assert (y.double() - y64).abs().max() < 1e-5


@pytest.mark.parametrize("layer", [cn.BatchNorm2d(3), cn.InstanceNorm2d(3, affine=True), cn.GroupNorm(3, 3),
                                   cn.LayerNorm([3, 4, 4]), cn.RMSNorm([3, 4, 4]), cn.RunningBatchNorm(3)])
def test_constant_input_gives_finite_output_and_gradients(layer):
    x = torch.full((4, 3, 4, 4), 7.0, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    for p in layer.parameters():
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("dims,affine_shape", [((0, 2, 3), (1, 4, 1, 1)), ((2, 3), (1, 4, 1, 1)),
                                                ((1, 2, 3), (4, 3, 5)), ((3,), (5,))],
                         ids=["batch", "instance", "layer", "last-axis"])
def test_autograd_equals_the_backward_derived_in_q3(dims, affine_shape):
    """The hand-derived backward (Q3, makemore-style centred expression) equals autograd through normalize:

    with d = g * weight, xhat = (x - mean) * r, r = 1 / sqrt(var + eps), means over the reduced axes,
    dx = r * (d - mean(d) - xhat * mean(d * xhat)); dweight = sum(g * xhat); dbias = sum(g)."""
    gen = torch.Generator().manual_seed(0)
    x = (3 + 2 * torch.randn(2, 4, 3, 5, generator=gen, dtype=F64)).requires_grad_()
    w = torch.randn(affine_shape, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(affine_shape, generator=gen, dtype=F64, requires_grad=True)
    g = torch.randn(x.shape, generator=gen, dtype=F64)
    y, mean, var = normalize(x, dims, 1e-5, w, b)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), g)
    r = torch.rsqrt(var + 1e-5)
    xhat = (x.detach() - mean) * r
    d = g * w.detach()
    torch.testing.assert_close(dx, r * (d - d.mean(dims, keepdim=True) - xhat * (d * xhat).mean(dims, keepdim=True)))
    torch.testing.assert_close(dw, (g * xhat).sum_to_size(affine_shape))
    torch.testing.assert_close(db, g.sum_to_size(affine_shape))


def test_double_backward():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(5, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=F64, requires_grad=True)
    for center in (True, False):
        assert torch.autograd.gradgradcheck(lambda *t, c=center: normalize(t[0], (2,), 1e-5, t[1], t[2], c)[0],
                                            (x, w, b))


def test_gradients_flow_through_batch_statistics():
    """Normalizing with detached statistics (CV3-07's custom BN) gives a different, wrong input gradient."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, dtype=F64, requires_grad=True)
    weights = torch.randn(16, 3, dtype=F64)
    (cn.BatchNorm1d(3).double()(x) * weights).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    mean, var = x.mean(0).detach(), x.var(0, unbiased=False).detach()
    (((x - mean) / torch.sqrt(var + 1e-5)) * weights).sum().backward()
    assert ours.sum(0).abs().max() < 1e-10  # through the mean: the gradient sums to zero per channel
    assert not torch.allclose(ours, x.grad)


# ----------------------------------------------------------------------------------------------------------
# gradcheck in float64 for every class

GRADCHECK = [
    (cn.BatchNorm1d(3), (5, 3, 4)), (cn.BatchNorm2d(3), (4, 3, 3, 3)), (cn.BatchNorm3d(2), (3, 2, 2, 2, 3)),
    (cn.InstanceNorm1d(3, affine=True), (2, 3, 6)), (cn.InstanceNorm2d(3, affine=True), (2, 3, 3, 3)),
    (cn.InstanceNorm3d(2, affine=True), (2, 2, 2, 2, 3)), (cn.LayerNorm([3, 4]), (2, 3, 4)),
    (cn.GroupNorm(2, 4), (3, 4, 3, 3)), (cn.RMSNorm([4]), (3, 2, 4)), (cn.RunningBatchNorm(3), (4, 3, 3, 3)),
]


@pytest.mark.parametrize("layer,shape", GRADCHECK, ids=[type(layer).__name__ for layer, _ in GRADCHECK])
def test_gradcheck_float64(layer, shape):
    layer = layer.double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64))
    x = torch.randn(shape, generator=gen, dtype=F64, requires_grad=True)
    params = tuple(layer.parameters())

    def fn(inp, *ps):
        state = {k: v.clone() for k, v in layer.state_dict().items()}  # gradcheck calls fn many times
        with torch.no_grad():
            for p, value in zip(params, ps):
                p.copy_(value)
        y = torch.func.functional_call(layer, {n: v for (n, _), v in zip(layer.named_parameters(), ps)}, (inp,))
        layer.load_state_dict(state)
        return y

    inputs = (x, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(fn, inputs)


# ----------------------------------------------------------------------------------------------------------
# RunningBatchNorm (Q9)

def test_running_batchnorm_works_at_batch_size_one():
    rbn = cn.RunningBatchNorm(3)
    for _ in range(5):
        y = rbn(torch.randn(1, 3, 1, 1))  # one value per channel per batch
        assert torch.isfinite(y).all()
    assert int(rbn.num_samples_tracked) == 5
    assert rbn.batch_weight(1) == pytest.approx(0.1)  # no division by zero: sqrt(max(bs - 1, 1))


def test_running_batchnorm_statistics_equal_fastai_sums_on_ordinary_data():
    """Chan's merge reproduces fastai's lerp of sums / sums of squares / counts (without dbias, which cancels)."""
    torch.manual_seed(0)
    rbn = cn.RunningBatchNorm(2, momentum=0.1).double()
    sums = torch.zeros(2, dtype=F64)
    sqrs = torch.zeros(2, dtype=F64)
    count = torch.zeros((), dtype=F64)
    for step in range(30):
        bs = 2 + step % 5
        x = torch.randn(bs, 2, 3, 3, dtype=F64) * 2 + 1
        rbn(x)
        a = 1 - 0.9 / math.sqrt(bs - 1)
        sums.lerp_(x.sum((0, 2, 3)), a)
        sqrs.lerp_((x * x).sum((0, 2, 3)), a)
        count.lerp_(torch.tensor(x.numel() / 2, dtype=F64), a)
    torch.testing.assert_close(rbn.running_mean, sums / count)
    torch.testing.assert_close(rbn.running_var, sqrs / count - (sums / count) ** 2)


def test_running_batchnorm_keeps_precision_where_sums_of_squares_do_not():
    """fastai's float32 sums of squares cancel almost every digit at 3e3; Chan's merge matches a float64 run."""
    torch.manual_seed(0)
    rbn, exact = cn.RunningBatchNorm(1), cn.RunningBatchNorm(1).double()
    for _ in range(20):
        x = 3e3 + torch.randn(8, 1, 4, 4)
        rbn(x)
        exact(x.double())
    assert abs(float(rbn.running_var) - float(exact.running_var)) < 1e-3, (rbn.running_var, exact.running_var)
    assert abs(float(rbn.running_mean) - float(exact.running_mean)) < 1e-3


def test_running_batchnorm_train_and_eval_agree_after_training():
    torch.manual_seed(0)
    rbn = cn.RunningBatchNorm(3)
    for _ in range(50):
        rbn(torch.randn(16, 3, 4, 4) * 2 + 1)
    x = torch.randn(16, 3, 4, 4) * 2 + 1
    state = {k: v.clone() for k, v in rbn.state_dict().items()}
    train_out = rbn(x)
    rbn.load_state_dict(state)
    eval_out = rbn.eval()(x)
    assert (train_out - eval_out).abs().max() < 0.5  # close, unlike BatchNorm at tiny batch sizes


# ----------------------------------------------------------------------------------------------------------
# Layer 3 (library level): a model with every torch.nn norm swapped for ours trains to the same weights

def small_cnn(lib):
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=False), lib.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), lib.GroupNorm(2, 8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), lib.InstanceNorm2d(8, affine=True), nn.ReLU(),
        nn.Flatten(), lib.LayerNorm(8 * 2 * 2), nn.Linear(32, 16), lib.BatchNorm1d(16), nn.ReLU(),
        lib.RMSNorm(16), nn.Linear(16, 10),
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_swap_every_norm_trains_to_the_same_weights(dtype, tol):
    torch.manual_seed(0)
    reference = small_cnn(nn).to(dtype)
    swapped = small_cnn(cn).to(dtype)
    swapped.load_state_dict(reference.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(16, 1, 8, 8, generator=gen, dtype=dtype) for _ in range(5)]
    ys = [torch.randint(0, 10, (16,), generator=gen) for _ in range(5)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (reference, swapped)]
    for x, y in zip(xs, ys):
        for model, opt in zip((reference, swapped), optimizers):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    ref_state, swap_state = reference.state_dict(), swapped.state_dict()
    for key in ref_state:
        torch.testing.assert_close(swap_state[key], ref_state[key], rtol=tol, atol=tol, msg=key)
    reference.eval(), swapped.eval()
    torch.testing.assert_close(swapped(xs[0]), reference(xs[0]), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------------------
# The one description of the axes: reduce_dims / statistic_ids say what forward does

AXES_LAYERS = [
    (cn.BatchNorm1d(4, affine=False), (6, 4, 5)), (cn.BatchNorm2d(4, affine=False), (3, 4, 3, 2)),
    (cn.BatchNorm3d(4, affine=False), (2, 4, 2, 3, 2)), (cn.InstanceNorm1d(4), (3, 4, 5)),
    (cn.InstanceNorm2d(4), (3, 4, 3, 2)), (cn.InstanceNorm3d(4), (2, 4, 2, 3, 2)),
    (cn.GroupNorm(2, 4, affine=False), (3, 4, 3, 2)), (cn.GroupNorm(1, 4, affine=False), (3, 4, 5)),
    (cn.GroupNorm(4, 4, affine=False), (3, 4, 2, 2, 2)), (cn.LayerNorm([3, 2], elementwise_affine=False), (3, 4, 3, 2)),
    (cn.RMSNorm([2], eps=0.0, elementwise_affine=False), (3, 4, 3, 2)),
]


@pytest.mark.parametrize("layer,shape", AXES_LAYERS, ids=[repr(layer) for layer, _ in AXES_LAYERS])
def test_statistic_ids_describe_what_forward_normalizes(layer, shape):
    """The elements sharing an id come out with mean 0 and variance 1 (RMSNorm: mean square 1), together."""
    layer = layer.double().train()
    x = 3 + 2 * torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    y, ids = layer(x).flatten(), layer.statistic_ids(shape).flatten()
    assert ids.shape == y.shape and ids.unique().numel() > 1
    for i in ids.unique():
        group = y[ids == i]
        if not isinstance(layer, cn.RMSNorm):
            assert abs(float(group.mean())) < 1e-9
            assert abs(float(group.var(unbiased=False)) - 1) < 1e-3
        else:
            assert abs(float(group.square().mean()) - 1) < 1e-9
        assert group.numel() == math.prod(shape) // ids.unique().numel()


def test_statistic_ids_are_the_ones_plots_draws():
    """plots.group_statistic_ids / batch_statistic_ids could become one call each (issue 16)."""
    from course_lib import plots

    for groups in (1, 2, 3, 6):
        torch.testing.assert_close(cn.GroupNorm(groups, 6).statistic_ids((2, 6, 4, 5)),
                                   plots.group_statistic_ids(6, groups, 2, 4, 5))
    torch.testing.assert_close(cn.BatchNorm2d(6).statistic_ids((3, 6, 2, 2)), plots.batch_statistic_ids(6, 3, 2, 2))
