"""course_lib norms under torch.func: the same results, and the same failures, as their torch.nn namesakes.

Every transform (``functional_call``, ``grad``, ``vmap``, ``jacrev``, ``jvp``, ``jacfwd``, per-sample gradients
``vmap(grad(...))``) runs on a course_lib layer and on the torch.nn layer with the same state. Either both succeed
and agree (outputs, gradients, buffers afterwards), or both raise the same exception type: BatchNorm in training mode
with running statistics updates its buffers in place, which vmap cannot do for a per-sample batch -- torch.nn fails
there too, and its documented ways out (eval mode, ``track_running_stats=False``) work for both.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import course_lib.norms as cn

F64 = torch.float64

# name, args, kwargs, input shape, training
CASES = [
    ("BatchNorm1d", (3,), {}, (4, 3), False),
    ("BatchNorm1d", (3,), {"track_running_stats": False}, (4, 3, 2), True),
    ("BatchNorm1d", (3,), {}, (4, 3, 2), True),  # running stats updated in place
    ("BatchNorm2d", (3,), {}, (2, 3, 2, 2), False),
    ("BatchNorm2d", (3,), {"track_running_stats": False}, (2, 3, 2, 2), True),
    ("BatchNorm2d", (3,), {}, (2, 3, 2, 2), True),
    ("BatchNorm2d", (3,), {"momentum": None}, (2, 3, 2, 2), True),
    ("BatchNorm3d", (2,), {}, (2, 2, 2, 2, 2), False),
    ("InstanceNorm1d", (3,), {"affine": True}, (2, 3, 4), True),
    ("InstanceNorm2d", (3,), {"affine": True}, (2, 3, 2, 2), True),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 2, 2), True),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 2, 2), False),
    ("InstanceNorm3d", (2,), {}, (2, 2, 2, 2, 2), True),
    ("LayerNorm", ([3, 4],), {}, (2, 3, 4), True),
    ("LayerNorm", (4,), {"bias": False}, (2, 3, 4), True),
    ("GroupNorm", (2, 4), {}, (2, 4, 2, 2), True),
    ("GroupNorm", (1, 4), {"affine": False}, (2, 4, 3), True),
    ("RMSNorm", (4,), {}, (2, 3, 4), True),
    ("RMSNorm", ([3, 4],), {"eps": 1e-6}, (2, 3, 4), True),
]


def _case_id(case):
    name, args, kwargs, shape, training = case
    extra = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}{list(args)}{extra}-{'x'.join(map(str, shape))}-{'train' if training else 'eval'}"


def pair(name, args, kwargs, training):
    theirs = getattr(nn, name)(*args, dtype=F64, **kwargs)
    mine = getattr(cn, name)(*args, dtype=F64, **kwargs)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64))
        for key in ("running_mean", "running_var"):
            buffer = getattr(theirs, key, None)
            if buffer is not None:
                buffer.copy_(torch.rand(buffer.shape, generator=gen, dtype=F64) + 0.5)
    mine.load_state_dict(theirs.state_dict(), strict=True)
    return mine.train(training), theirs.train(training)


def transforms(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict:
    """name -> a function that runs that torch.func transform over ``module`` and returns its result."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def f(p, x):
        return functional_call(module, (p, buffers), (x,))

    def loss(p, x):
        return (f(p, x) * g).sum()

    xs = torch.stack([x, 2 * x + 1])  # a batch of two inputs for vmap
    tangent = torch.cos(x)
    return {
        "functional_call": lambda: f(params, x),
        "grad": lambda: grad(loss, argnums=(0, 1))(params, x),
        "vmap": lambda: vmap(lambda xi: f(params, xi))(xs),
        "jacrev": lambda: jacrev(f, argnums=(0, 1))(params, x),
        "jvp": lambda: jvp(lambda xi: f(params, xi), (x,), (tangent,)),
        "jacfwd": lambda: jacfwd(f, argnums=1)(params, x),
        "vmap_grad": lambda: vmap(grad(loss), in_dims=(None, 0))(params, xs),
    }


def outcome(run):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "ok", run()
    except Exception as error:  # noqa: BLE001 -- the exception type is what is compared
        return "raised", type(error)


TRANSFORMS = ["functional_call", "grad", "vmap", "jacrev", "jvp", "jacfwd", "vmap_grad"]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_transform_matches_torch_nn(case, transform):
    name, args, kwargs, shape, training = case
    mine, theirs = pair(name, args, kwargs, training)
    gen = torch.Generator().manual_seed(2)
    x = 3 + 2 * torch.randn(shape, generator=gen, dtype=F64)
    g = torch.randn(shape, generator=gen, dtype=F64)
    got = outcome(transforms(mine, x, g)[transform])
    expected = outcome(transforms(theirs, x, g)[transform])
    assert got[0] == expected[0], f"course_lib: {got}, torch.nn: {expected}"
    if expected[0] == "raised":
        assert got[1] is expected[1], f"course_lib raised {got[1]}, torch.nn raised {expected[1]}"
        return
    torch.testing.assert_close(got[1], expected[1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dict(mine.named_buffers()), dict(theirs.named_buffers()), rtol=1e-9, atol=1e-9)


def test_vmap_over_batchnorm_updating_running_stats_fails_for_both():
    """The one failure in the table above, pinned down: in-place buffer updates under vmap (torch.nn too)."""
    mine, theirs = pair("BatchNorm2d", (3,), {}, True)
    x = torch.randn(2, 2, 3, 2, 2, dtype=F64)
    for module in (theirs, mine):
        with pytest.raises(RuntimeError):
            vmap(module)(x)


# ----------------------------------------------------------------------------------------------------------
# Per-sample gradients, the torch.func tutorial's example, with a course_lib norm in the model

def small_model(lib, norm: str) -> nn.Sequential:
    norms = {"LayerNorm": lambda: lib.LayerNorm(8), "RMSNorm": lambda: lib.RMSNorm(8),
             "GroupNorm": lambda: lib.GroupNorm(2, 8), "BatchNorm1d": lambda: lib.BatchNorm1d(8)}
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), norms[norm](), nn.ReLU(), nn.Linear(8, 3)).double()


def per_sample_grads(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> dict:
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):  # one sample, seen as a batch of one
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return nn.functional.cross_entropy(out, y.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)


@pytest.mark.parametrize("norm,training", [("LayerNorm", True), ("RMSNorm", True), ("GroupNorm", True),
                                           ("BatchNorm1d", False)])
def test_per_sample_gradients_match_torch_nn_and_a_loop(norm, training):
    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(6, 5, generator=gen, dtype=F64)
    ys = torch.randint(0, 3, (6,), generator=gen)
    mine, theirs = small_model(cn, norm).train(training), small_model(nn, norm).train(training)
    mine.load_state_dict(theirs.state_dict(), strict=True)
    got = per_sample_grads(mine, xs, ys)
    torch.testing.assert_close(got, per_sample_grads(theirs, xs, ys), rtol=1e-9, atol=1e-9)
    for i in range(len(xs)):  # the same as one backward pass per sample
        mine.zero_grad()
        nn.functional.cross_entropy(mine(xs[i:i + 1]), ys[i:i + 1]).backward()
        for name, p in mine.named_parameters():
            torch.testing.assert_close(got[name][i], p.grad, rtol=1e-9, atol=1e-9)


def test_per_sample_gradients_of_training_batchnorm_need_its_running_stats_removed():
    """torch.func.replace_all_batch_norm_modules_ recognizes torch.nn's BatchNorm classes only; for course_lib's,
    do what it does by hand: ``track_running_stats = False`` and the three buffers ``None``. Then both agree.
    (A per-sample batch of one has one value per channel: BatchNorm1d raises, as in torch.nn, so 2d here.)"""
    gen = torch.Generator().manual_seed(4)
    xs = torch.randn(4, 2, 3, 3, dtype=F64, generator=gen)
    ys = torch.randint(0, 3, (4,), generator=gen)

    def model(lib):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), lib.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(36, 3)).double()

    mine, theirs = model(cn), model(nn)
    mine.load_state_dict(theirs.state_dict(), strict=True)
    for module in (mine, theirs):
        with pytest.raises(RuntimeError):
            per_sample_grads(module, xs, ys)
    torch.func.replace_all_batch_norm_modules_(theirs)
    assert mine[1].track_running_stats  # not recognized...
    mine[1].track_running_stats = False  # ...so by hand
    mine[1].running_mean = mine[1].running_var = mine[1].num_batches_tracked = None
    torch.testing.assert_close(per_sample_grads(mine, xs, ys), per_sample_grads(theirs, xs, ys),
                               rtol=1e-9, atol=1e-9)
