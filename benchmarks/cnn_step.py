"""Speed of the course CNN's training step with course_lib norms against the same CNN with torch.nn norms.

The goal (docs/DESIGN.md §2) is end to end: one SGD step of ``course_lib.models.get_cnn_model`` on a batch of 64
digits, one thread, course_lib's norm <= 1.5x torch.nn's. Both models start from the same weights and train on
the same batches; their steps are interleaved (the order alternates every round) so they share the machine's
state, and the printed number is median(course_lib) / median(torch.nn). Each step is timed with the thread's CPU
clock by default (``--clock cpu``): on a shared machine the wall clock also counts the time other processes hold
the core; ``--clock wall`` measures what a student waits.

Run with ``python benchmarks/cnn_step.py`` (``--rounds``, ``--norm``).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch import nn

import course_lib.norms as cn
from course_lib.data import get_digits
from course_lib.models import get_cnn_model

NORMS = {  # name: (course_lib factory, torch.nn factory)
    "BatchNorm2d": (cn.BatchNorm2d, nn.BatchNorm2d),
    "GroupNorm(2)": (functools.partial(cn.GroupNorm, 2), functools.partial(nn.GroupNorm, 2)),
}
GOAL = 1.5
BATCH_SIZE = 64


def make_step(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """A function doing one SGD step (forward, loss, backward, update) on the next batch of ``batches``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {"k": 0}

    def step() -> None:
        x, y = batches[state["k"] % len(batches)]
        state["k"] += 1
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def compare(steps: list, rounds: int, clock=time.thread_time) -> list[float]:
    """Median seconds of each step over ``rounds`` rounds; each round runs every step once, order rotating."""
    for step in steps:  # warm up
        for _ in range(5):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds):
        for k in range(len(steps)):
            i = (r + k) % len(steps)
            start = clock()
            steps[i]()
            times[i].append(clock() - start)
    return [statistics.median(t) for t in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400, help="steps of each model (default 400)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="thread CPU time (default) or wall")
    parser.add_argument("--norm", choices=list(NORMS), action="append", help="norm(s) to time (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    split = get_digits(seed=0)
    n = len(split.x_train) // BATCH_SIZE * BATCH_SIZE
    batches = list(zip(split.x_train[:n].split(BATCH_SIZE), split.y_train[:n].split(BATCH_SIZE)))
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, rounds={args.rounds}, "
          f"batch {BATCH_SIZE} of the digits, get_cnn_model, SGD, {args.clock} clock")
    print(f"{'norm':<14}{'course_lib ms':>14}{'torch.nn ms':>13}{'ratio':>8}{'goal':>7}")
    failures = 0
    for name in args.norm or list(NORMS):
        ours, theirs = NORMS[name]
        torch.manual_seed(0)
        reference = get_cnn_model(norm=theirs)
        mine = get_cnn_model(norm=ours)
        mine.load_state_dict(reference.state_dict(), strict=True)
        mine_ms, theirs_ms = compare([make_step(mine, batches), make_step(reference, batches)], args.rounds,
                                    CLOCKS[args.clock])
        ratio = mine_ms / theirs_ms
        failures += ratio > GOAL
        print(f"{name:<14}{mine_ms * 1e3:>14.3f}{theirs_ms * 1e3:>13.3f}{ratio:>7.2f}x{GOAL:>6.1f}x"
              f"{'' if ratio <= GOAL else '  over goal'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
