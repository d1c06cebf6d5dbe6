"""Speed of course_lib.norms against PyTorch's native layers: training forward + backward, one thread.

Run with ``make bench`` (or ``python benchmarks/norms.py``). For every layer, both implementations are timed
in the same process, alternating call by call, so they share the machine's state (caches, the memory
allocator's heap, CPU frequency); the printed number is median(course_lib) / median(PyTorch), i.e. a ratio,
never seconds. Goals (issue 3): <= 1.5x for BatchNorm, InstanceNorm and RMSNorm, <= 2.0x for LayerNorm and
GroupNorm. The "textbook" column is the plain autograd composite ``(x - mean) / sqrt(var + eps) * w + b``
for comparison.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import course_lib.norms as ours
from course_lib.functional import reference_normalize

CONV_SHAPE = (32, 32, 32, 32)  # N, C, H, W
SEQ_SHAPE = (64, 128, 256)  # batch, tokens, features (normalized size 256)

# name, course_lib layer, torch layer, input shape, reduced axes and affine view for the textbook line
CASES = [
    ("BatchNorm2d", lambda: ours.BatchNorm2d(32), lambda: nn.BatchNorm2d(32), CONV_SHAPE, (0, 2, 3)),
    ("InstanceNorm2d", lambda: ours.InstanceNorm2d(32, affine=True), lambda: nn.InstanceNorm2d(32, affine=True),
     CONV_SHAPE, (2, 3)),
    ("GroupNorm(8)", lambda: ours.GroupNorm(8, 32), lambda: nn.GroupNorm(8, 32), CONV_SHAPE, None),
    ("LayerNorm", lambda: ours.LayerNorm(256), lambda: nn.LayerNorm(256), SEQ_SHAPE, (2,)),
    ("RMSNorm", lambda: ours.RMSNorm(256), lambda: nn.RMSNorm(256), SEQ_SHAPE, (2,)),
]
GOALS = {"BatchNorm2d": 1.5, "InstanceNorm2d": 1.5, "RMSNorm": 1.5, "LayerNorm": 2.0, "GroupNorm(8)": 2.0}


def training_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    x.grad = None
    module.zero_grad(set_to_none=True)
    module(x).backward(grad)


def textbook_step(dims, x, grad, weight, bias, center):
    x.grad = None
    view = (1, -1) + (1,) * (x.dim() - 2) if dims != (x.dim() - 1,) else (-1,)
    reference_normalize(x, dims, 1e-5, weight.view(view), None if bias is None else bias.view(view),
                        center).backward(grad)


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="calls of each implementation (default 200)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, rounds={args.rounds}")
    print(f"{'layer':<16}{'input':<20}{'course_lib / torch':>20}{'textbook / torch':>18}{'goal':>7}")
    failures = 0
    for name, make_ours, make_torch, shape, dims in CASES:
        mine, theirs = make_ours(), make_torch()
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        fns = [lambda: training_step(mine, x, grad), lambda: training_step(theirs, x, grad)]
        if dims is not None:
            center = name != "RMSNorm"
            fns.append(lambda: textbook_step(dims, x, grad, theirs.weight, getattr(theirs, "bias", None), center))
        medians = compare(fns, args.rounds)
        ratio = medians[0] / medians[1]
        textbook = f"{medians[2] / medians[1]:.2f}x" if dims is not None else "-"
        ok = ratio <= GOALS[name]
        failures += not ok
        print(f"{name:<16}{'x'.join(map(str, shape)):<20}{ratio:>19.2f}x{textbook:>18}{GOALS[name]:>6.1f}x"
              f"{'' if ok else '  over goal'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
