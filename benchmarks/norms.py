"""Speed and accuracy of each course_lib norm against PyTorch's native layer, one thread.

Speed (default): training forward + backward of one layer; both implementations are timed in the same process,
alternating call by call, so they share the machine's state; the printed number is median(course_lib) /
median(PyTorch). These are for information: course_lib's core is the plain formula differentiated by autograd
(readability first), and the speed goal is end to end, on the course CNN (``benchmarks/cnn_step.py``).

Accuracy (``--accuracy``): on ``x = offset + randn`` in float32, the max abs error of the output and of the input
gradient (for a random output gradient) against the same torch.nn layer run in float64, for course_lib and for
torch.nn. These numbers are quoted in ``course_lib/functional.py``'s docstring.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import course_lib.norms as ours

CONV_SHAPE = (32, 32, 32, 32)  # N, C, H, W
SEQ_SHAPE = (64, 128, 256)  # batch, tokens, features (normalized size 256)

# name, course_lib layer, torch layer, input shape
CASES = [
    ("BatchNorm2d", lambda: ours.BatchNorm2d(32), lambda: nn.BatchNorm2d(32), CONV_SHAPE),
    ("InstanceNorm2d", lambda: ours.InstanceNorm2d(32, affine=True), lambda: nn.InstanceNorm2d(32, affine=True),
     CONV_SHAPE),
    ("GroupNorm(8)", lambda: ours.GroupNorm(8, 32), lambda: nn.GroupNorm(8, 32), CONV_SHAPE),
    ("LayerNorm", lambda: ours.LayerNorm(256), lambda: nn.LayerNorm(256), SEQ_SHAPE),
    ("RMSNorm", lambda: ours.RMSNorm(256), lambda: nn.RMSNorm(256), SEQ_SHAPE),
]

# name, layer class name, constructor arguments, input shape (those of tests/test_norms_properties.py)
ACCURACY_CASES = [
    ("BatchNorm2d(3)", "BatchNorm2d", (3,), (8, 3, 6, 6)),
    ("GroupNorm(3, 6)", "GroupNorm", (3, 6), (8, 6, 6, 6)),
    ("LayerNorm(64)", "LayerNorm", (64,), (8, 3, 64)),
]


def training_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    x.grad = None
    module.zero_grad(set_to_none=True)
    module(x).backward(grad)


def time_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(fns: list, rounds: int) -> list[float]:
    """Median time of each function over ``rounds`` rounds; each round calls every function once, in an
    order that rotates from round to round, so that none always runs right after the same neighbour."""
    for fn in fns:  # warm up
        fn(), fn()
    times = [[] for _ in fns]
    for r in range(rounds):
        for k in range(len(fns)):
            i = (r + k) % len(fns)
            times[i].append(time_call(fns[i]))
    return [statistics.median(t) for t in times]


def errors(module: nn.Module, reference: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[float, float]:
    """Max abs error of ``module``'s output and input gradient against ``reference`` (float64) on ``x``."""
    xi = x.clone().requires_grad_()
    y = module(xi)
    y.backward(grad)
    xr = x.double().requires_grad_()
    yr = reference(xr)
    yr.backward(grad.double())
    return (y.double() - yr).abs().max().item(), (xi.grad.double() - xr.grad).abs().max().item()


def accuracy(offsets=(0.0, 1e2, 1e4, 1e5)) -> None:
    print(f"max abs error vs float64, x = offset + randn (float32), torch {torch.__version__}")
    print(f"{'layer':<17}{'input':<11}{'offset':>8}{'course_lib out / grad':>26}{'torch.nn out / grad':>26}")
    for label, name, args, shape in ACCURACY_CASES:
        for offset in offsets:
            gen = torch.Generator().manual_seed(0)
            x = offset + torch.randn(shape, generator=gen)
            grad = torch.randn(shape, generator=gen)
            reference = getattr(nn, name)(*args, dtype=torch.float64)
            mine = errors(getattr(ours, name)(*args), reference, x, grad)
            theirs = errors(getattr(nn, name)(*args), reference, x, grad)
            print(f"{label:<17}{'x'.join(map(str, shape)):<11}{offset:>8.0e}"
                  f"{mine[0]:>13.1e} / {mine[1]:.1e}{theirs[0]:>13.1e} / {theirs[1]:.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="calls of each implementation (default 200)")
    parser.add_argument("--accuracy", action="store_true", help="errors at large offsets instead of speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.accuracy:
        accuracy()
        return 0
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, rounds={args.rounds}")
    print(f"{'layer':<16}{'input':<20}{'course_lib / torch':>20}")
    for name, make_ours, make_torch, shape in CASES:
        mine, theirs = make_ours(), make_torch()
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        medians = compare([lambda m=mine, x=x, g=grad: training_step(m, x, g),
                           lambda m=theirs, x=x, g=grad: training_step(m, x, g)], args.rounds)
        print(f"{name:<16}{'x'.join(map(str, shape)):<20}{medians[0] / medians[1]:>19.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
