"""Layer 1: course_lib.norms against torch.nn, the oracle.

Outputs, input gradients, parameter gradients and running buffers, in training and eval, float32 and float64,
on PyTorch's own module test inputs (torch.testing._internal.common_modules.module_db) and on edge cases; also
parameter/buffer names, dtypes, initial values, repr, reset_*, state_dict both ways and memory layouts.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.testing._internal.common_modules import module_db

import course_lib.norms as cn

NAMES = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
         "LayerNorm", "GroupNorm", "RMSNorm"]
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-9)}


def pair(name: str, *args, dtype=torch.float32, **kwargs):
    """The torch.nn layer and ours, built with the same arguments and synchronised state."""
    theirs = getattr(nn, name)(*args, dtype=dtype, **kwargs)
    mine = getattr(cn, name)(*args, dtype=dtype, **kwargs)
    mine.load_state_dict(theirs.state_dict(), strict=True)
    return mine, theirs


def run_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Forward + backward on a fresh leaf copy of x; returns output, input grad, parameter grads."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def assert_same_step(mine, theirs, x, tol, steps=2):
    """Several forward/backward steps: outputs, grads and buffers agree after each one."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        grad = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        y1, gx1, gp1 = run_step(mine, x, grad)
        y2, gx2, gp2 = run_step(theirs, x, grad)
        torch.testing.assert_close(y1, y2, **tol, msg=lambda m: f"output: {m}")
        torch.testing.assert_close(gx1, gx2, **tol, msg=lambda m: f"input grad: {m}")
        assert gp1.keys() == gp2.keys()
        for name in gp1:
            torch.testing.assert_close(gp1[name], gp2[name], **tol, msg=lambda m, name=name: f"{name}.grad: {m}")
        for (n1, b1), (n2, b2) in zip(mine.named_buffers(), theirs.named_buffers(), strict=True):
            assert n1 == n2
            torch.testing.assert_close(b1, b2, **tol, msg=lambda m, n1=n1: f"buffer {n1}: {m}")


# ----------------------------------------------------------------------------------------------------------
# PyTorch's own module test inputs

def _module_db_cases():
    cases = []
    for info in module_db:
        name = info.name.removeprefix("nn.")
        if name not in NAMES:
            continue
        for dtype in (torch.float32, torch.float64):
            for training in (True, False):
                inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                                 training=training)
                for k, mi in enumerate(inputs):
                    desc = mi.desc or f"case{k}"
                    cases.append(pytest.param(name, mi, dtype, training,
                                              id=f"{name}-{desc}-{str(dtype)[6:]}-{'train' if training else 'eval'}"))
    return cases


@pytest.mark.parametrize("name,module_input,dtype,training", _module_db_cases())
def test_torch_module_db_inputs(name, module_input, dtype, training):
    args, kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
    mine, theirs = pair(name, *args, dtype=dtype, **kwargs)
    mine.train(training), theirs.train(training)
    (x,) = module_input.forward_input.args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InstanceNorm's "num_features not used" warning, raised by both
        assert_same_step(mine, theirs, x, TOL[dtype])


def test_module_db_covers_every_class():
    covered = {info.name.removeprefix("nn.") for info in module_db}
    assert set(NAMES) <= covered


# ----------------------------------------------------------------------------------------------------------
# Edge cases named in the issue

EDGE_CONFIGS = [
    ("BatchNorm2d", (4,), {}, (6, 4, 5, 5)),
    ("BatchNorm2d", (4,), {"momentum": None}, (6, 4, 5, 5)),
    ("BatchNorm2d", (4,), {"track_running_stats": False}, (6, 4, 5, 5)),
    ("BatchNorm2d", (4,), {"affine": False}, (6, 4, 5, 5)),
    ("BatchNorm2d", (4,), {"bias": False}, (6, 4, 5, 5)),
    ("BatchNorm2d", (4,), {"momentum": 0.5, "eps": 1e-3}, (1, 4, 3, 3)),  # batch size 1 with spatial extent
    ("BatchNorm1d", (5,), {}, (8, 5)),
    ("BatchNorm1d", (5,), {"momentum": None}, (3, 5, 7)),
    ("BatchNorm3d", (3,), {}, (2, 3, 3, 4, 5)),
    ("InstanceNorm2d", (4,), {"affine": True, "track_running_stats": True}, (3, 4, 5, 6)),
    ("InstanceNorm2d", (4,), {"affine": True, "track_running_stats": True, "momentum": None}, (3, 4, 5, 6)),
    ("InstanceNorm1d", (4,), {"affine": True}, (4, 9)),  # unbatched (C, L)
    ("InstanceNorm3d", (2,), {"affine": True, "bias": False}, (2, 2, 3, 3, 3)),
    ("GroupNorm", (2, 6), {}, (3, 6, 4, 4)),
    ("GroupNorm", (1, 6), {}, (3, 6, 4, 4)),
    ("GroupNorm", (6, 6), {"affine": False}, (3, 6, 4, 4)),
    ("GroupNorm", (3, 6), {"bias": False}, (1, 6, 7)),
    ("LayerNorm", ([4, 5],), {}, (3, 2, 4, 5)),
    ("LayerNorm", (5,), {"bias": False}, (7, 5)),
    ("LayerNorm", (5,), {"elementwise_affine": False}, (7, 5)),
    ("RMSNorm", (6,), {}, (4, 3, 6)),
    ("RMSNorm", ([3, 6],), {"eps": 1e-6}, (4, 3, 6)),
    ("RMSNorm", (6,), {"elementwise_affine": False}, (4, 6)),
]


def _edge_id(case):
    name, args, kwargs, shape = case
    extra = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}{list(args)}{extra}-{'x'.join(map(str, shape))}"


def _randomize_affine(mine, theirs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (_, p1), (_, p2) in zip(mine.named_parameters(), theirs.named_parameters(), strict=True):
            p2.copy_(torch.randn(p2.shape, generator=gen, dtype=p2.dtype))
            p1.copy_(p2)


def _layouts(shape):
    return ["contiguous", "non_contiguous"] + (["channels_last"] if len(shape) in (4, 5) else [])


EDGE_CASES = [pytest.param(case, layout, id=f"{_edge_id(case)}-{layout}")
              for case in EDGE_CONFIGS for layout in _layouts(case[3])]


@pytest.mark.parametrize("case,layout", EDGE_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_edge_cases_train_then_eval(case, layout, dtype):
    name, args, kwargs, shape = case
    mine, theirs = pair(name, *args, dtype=dtype, **kwargs)
    _randomize_affine(mine, theirs)
    gen = torch.Generator().manual_seed(2)
    x = 3.0 + 2.0 * torch.randn(shape, generator=gen, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    elif layout == "non_contiguous":
        wide = 3.0 + 2.0 * torch.randn((*shape[:-1], 2 * shape[-1]), generator=gen, dtype=dtype)
        x = wide[..., ::2]
        assert not x.is_contiguous()
    tol = TOL[dtype]
    assert_same_step(mine, theirs, x, tol, steps=3)
    mine.eval(), theirs.eval()
    assert_same_step(mine, theirs, x, tol, steps=1)


@pytest.mark.parametrize("name,args,shape", [
    ("BatchNorm2d", (3,), (4, 3, 5, 5)), ("InstanceNorm2d", (3,), (4, 3, 5, 5)),
    ("GroupNorm", (3, 6), (4, 6, 5)), ("LayerNorm", (5,), (4, 3, 5)), ("RMSNorm", (5,), (4, 3, 5)),
])
def test_expanded_grad_from_sum_backward(name, args, shape):
    """y.sum().backward() hands the layer a stride-0 gradient."""
    mine, theirs = pair(name, *args, dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64)
    grads = []
    for m in (mine, theirs):
        xi = x.clone().requires_grad_()
        (m(xi) * torch.arange(xi.shape[-1], dtype=xi.dtype)).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float64])


# ----------------------------------------------------------------------------------------------------------
# Construction: names, dtypes, initial values, repr, resets, state_dict

CONSTRUCTIONS = [
    ("BatchNorm1d", (7,), {}), ("BatchNorm2d", (7,), {"momentum": None, "affine": False}),
    ("BatchNorm3d", (7,), {"track_running_stats": False, "bias": False}),
    ("InstanceNorm1d", (7,), {}), ("InstanceNorm2d", (7,), {"affine": True, "track_running_stats": True}),
    ("InstanceNorm3d", (7,), {"momentum": None, "track_running_stats": True}),
    ("LayerNorm", ([3, 7],), {"eps": 1e-3}), ("LayerNorm", (7,), {"bias": False}),
    ("LayerNorm", (7,), {"elementwise_affine": False}),
    ("GroupNorm", (7, 14), {}), ("GroupNorm", (1, 7), {"affine": False}), ("GroupNorm", (7, 7), {"bias": False}),
    ("RMSNorm", (7,), {}), ("RMSNorm", ([2, 7],), {"eps": 1e-4, "elementwise_affine": False}),
]


@pytest.mark.parametrize("name,args,kwargs", CONSTRUCTIONS)
@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_same_surface(name, args, kwargs, dtype):
    theirs = getattr(nn, name)(*args, dtype=dtype, **kwargs)
    mine = getattr(cn, name)(*args, dtype=dtype, **kwargs)
    assert repr(mine) == repr(theirs)
    for mine_items, their_items in [(mine.named_parameters(), theirs.named_parameters()),
                                    (mine.named_buffers(), theirs.named_buffers())]:
        mine_items, their_items = dict(mine_items), dict(their_items)
        assert mine_items.keys() == their_items.keys()
        for key in mine_items:
            assert mine_items[key].dtype == their_items[key].dtype, key
            assert mine_items[key].shape == their_items[key].shape, key
            torch.testing.assert_close(mine_items[key], their_items[key], rtol=0, atol=0)
    assert mine.state_dict().keys() == theirs.state_dict().keys()
    assert mine.state_dict()._metadata[""].get("version") == theirs.state_dict()._metadata[""].get("version")
    # both directions, strict
    theirs.load_state_dict(mine.state_dict(), strict=True)
    mine.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize("name,args,shape", [("BatchNorm2d", (3,), (4, 3, 5, 5)),
                                             ("InstanceNorm2d", (3,), (4, 3, 5, 5))])
def test_state_dict_round_trip_after_training(name, args, shape):
    kwargs = {"affine": True, "track_running_stats": True}
    mine, theirs = pair(name, *args, **kwargs)
    x = torch.randn(shape) * 3 + 1
    mine(x), mine(x + 1)
    fresh_theirs = getattr(nn, name)(*args, **kwargs)
    fresh_theirs.load_state_dict(mine.state_dict(), strict=True)
    mine.eval(), fresh_theirs.eval()
    torch.testing.assert_close(mine(x), fresh_theirs(x))
    fresh_mine = getattr(cn, name)(*args, **kwargs)
    fresh_mine.load_state_dict(fresh_theirs.state_dict(), strict=True)
    for (n1, b1), (_, b2) in zip(fresh_mine.named_buffers(), mine.named_buffers(), strict=True):
        torch.testing.assert_close(b1, b2, msg=n1)


@pytest.mark.parametrize("counter", [0, 5])
def test_old_checkpoint_without_num_batches_tracked_loads(counter):
    """Version-1 checkpoints (before num_batches_tracked) load as in PyTorch, which keeps the module's own
    counter when the key is missing (0 for a fresh module)."""
    state = nn.BatchNorm2d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    results = []
    for module in (cn.BatchNorm2d(3), nn.BatchNorm2d(3)):
        module.num_batches_tracked.fill_(counter)
        module.load_state_dict(copy.deepcopy(state), strict=True)
        results.append(int(module.num_batches_tracked))
    assert results == [counter, counter]  # ours == torch.nn's, which is the counter it had


def test_resets_restore_initial_state():
    bn = cn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.fill_(2.0), bn.bias.fill_(-1.0)
    bn(torch.randn(4, 3, 2, 2) + 5)
    bn.reset_running_stats()
    torch.testing.assert_close(bn.running_mean, torch.zeros(3))
    torch.testing.assert_close(bn.running_var, torch.ones(3))
    assert int(bn.num_batches_tracked) == 0
    assert bn.weight[0] == 2.0  # parameters untouched by reset_running_stats
    bn.reset_parameters()
    torch.testing.assert_close(bn.weight, torch.ones(3))
    torch.testing.assert_close(bn.bias, torch.zeros(3))
    for layer in (cn.LayerNorm(4), cn.GroupNorm(2, 4), cn.RMSNorm(4)):
        with torch.no_grad():
            for p in layer.parameters():
                p.fill_(3.0)
        layer.reset_parameters()
        torch.testing.assert_close(layer.weight, torch.ones(4))


def test_deepcopy_and_to_dtype():
    bn = cn.BatchNorm2d(3)
    bn(torch.randn(4, 3, 2, 2))
    clone = copy.deepcopy(bn).double()
    assert clone.running_mean.dtype == torch.float64 and clone.weight.dtype == torch.float64
    assert clone.num_batches_tracked.dtype == torch.long
    torch.testing.assert_close(clone.running_mean.float(), bn.running_mean)


# ----------------------------------------------------------------------------------------------------------
# Errors: same types as PyTorch, messages that say what was expected and what came

@pytest.mark.parametrize("name,args,shape,error", [
    ("BatchNorm1d", (4,), (1, 4), ValueError),       # one value per channel in training
    ("BatchNorm2d", (4,), (1, 4, 1, 1), ValueError),
    ("BatchNorm2d", (4,), (2, 4, 3), ValueError),    # wrong rank
    ("BatchNorm1d", (4,), (2, 4, 3, 3), ValueError),
    ("BatchNorm2d", (4,), (2, 5, 3, 3), RuntimeError),  # wrong number of channels
    ("InstanceNorm2d", (4,), (2, 4, 1, 1), ValueError),  # one spatial element
    ("InstanceNorm2d", (4,), (4, 5), ValueError),       # wrong rank (2D)
    ("GroupNorm", (4, 4), (1, 4), ValueError),
    ("GroupNorm", (3, 6), (2, 5, 3), RuntimeError),
    ("GroupNorm", (3, 6), (5,), RuntimeError),
    ("LayerNorm", (4,), (3, 5), RuntimeError),
    ("RMSNorm", (4,), (3, 5), RuntimeError),
])
def test_errors_match_torch(name, args, shape, error):
    mine, theirs = pair(name, *args)
    x = torch.randn(shape)
    with pytest.raises(error):
        theirs(x)
    with pytest.raises(error) as info:
        mine(x)
    message = str(info.value)
    assert "got" in message.lower() and str(list(shape)) in message, message


def test_batch_size_one_message_says_expected_and_got():
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel.*got input size"):
        cn.BatchNorm1d(4)(torch.randn(1, 4))
    bn = cn.BatchNorm1d(4).eval()  # eval uses the running statistics: batch size 1 is fine
    assert torch.isfinite(bn(torch.randn(1, 4))).all()


def test_groupnorm_constructor_checks_divisibility():
    with pytest.raises(ValueError, match=r"num_channels \(6\) must be divisible by num_groups \(4\)"):
        cn.GroupNorm(4, 6)


def test_instancenorm_channel_mismatch_warns_without_affine_and_raises_with_it():
    with pytest.warns(UserWarning, match="does not match num_features"):
        cn.InstanceNorm2d(3)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="to match num_features"):
        cn.InstanceNorm2d(3, affine=True)(torch.randn(2, 4, 3, 3))
