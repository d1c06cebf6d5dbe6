"""Cost of recording activation statistics: a training step with ActivationStats vs the same step without hooks.

Run with ``python benchmarks/hooks.py``. The model is the course's digits CNN (``get_cnn_model``: 4 conv +
BatchNorm + ReLU blocks, global pooling, linear) on batches of 128 images 1x8x8, one thread.
ActivationStats hooks on the 4 conv blocks are registered and removed between steps, so steps with and
without hooks alternate on the *same* model (two copies of a model can differ by a few percent through memory
placement alone); the order flips every round. The printed number is median(step with hooks) / median(step
without), measured in the same run after 100 warm-up rounds; the main line is the median of 3 such runs.
Goal (issue 4): <= 1.05 for mean/std recording.
The other lines are for information only: hooks that do nothing (the cost of a hook call and the noise of the
measurement), a wider CNN, and the optional histogram and near-zero recording.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from course_lib.hooks import ActivationStats, Hooks, find_modules
from course_lib.models import ConvLayer, get_cnn_model

GOAL = 1.05
WARMUP = 100


def interleaved_ratio(rounds: int, make_recorder: Callable[[torch.nn.Module], object],
                      channels: tuple[int, ...] = (8, 16, 32, 64)) -> float:
    """median(step with hooks) / median(step without) over ``rounds`` interleaved steps of one model.

    ``make_recorder(model)`` returns an object with ``register()`` and ``remove()``; both run before every
    timed step, in the order that leaves the hooks on or off. The first ``WARMUP`` rounds are discarded
    (allocator and caches settle).
    """
    torch.manual_seed(0)
    model = get_cnn_model(channels=channels)
    x, y = torch.randn(128, 1, 8, 8), torch.randint(0, 10, (128,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    recorder = make_recorder(model)
    try:
        for r in range(WARMUP + rounds):
            for hooked in ((False, True) if r % 2 == 0 else (True, False)):
                # the same Python work before every step (outside the timing), ending with or without hooks
                if hooked:
                    recorder.remove()
                    recorder.register()
                else:
                    recorder.register()
                    recorder.remove()
                elapsed = step()
                if r >= WARMUP:
                    times[hooked].append(elapsed)
    finally:
        recorder.remove()
    return statistics.median(times[True]) / statistics.median(times[False])


class DoNothingHooks:
    """Control: hooks that do nothing, to show the cost of a hook call and the noise of the measurement."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.modules, self.hooks = find_modules(model, ConvLayer), None

    def register(self) -> None:
        self.hooks = Hooks(self.modules, lambda hook, module, inputs, output: None)

    def remove(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="timed steps with and without hooks (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="independent runs of the main measurement (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, rounds={args.rounds}, batch 128x1x8x8, "
          "4 conv blocks hooked")

    def stats_recorder(**kwargs):
        return lambda model: ActivationStats(find_modules(model, ConvLayer), **kwargs)

    ratios = [interleaved_ratio(args.rounds, stats_recorder()) for _ in range(args.repeats)]
    ratio = statistics.median(ratios)
    ok = round(ratio, 3) <= GOAL
    print(f"{'ActivationStats mean/std':<36}step with / without hooks = {ratio:.3f}  ({(ratio - 1) * 100:+.1f} %)  "
          f"goal <= {GOAL}  {'ok' if ok else 'MISSED'}  (median of {', '.join(f'{r:.3f}' for r in ratios)})")
    for label, make, channels in (
            ("control: hooks doing nothing", DoNothingHooks, (8, 16, 32, 64)),
            ("mean/std, CNN channels 16-32-64-128", stats_recorder(), (16, 32, 64, 128)),
            ("+ histogram (40 bins)", stats_recorder(bins=40), (8, 16, 32, 64)),
            ("+ histogram + near-zero fraction", stats_recorder(bins=40, near_zero=0.1), (8, 16, 32, 64))):
        ratio = interleaved_ratio(args.rounds // 2, make, channels)
        print(f"{label:<36}step with / without hooks = {ratio:.3f}  ({(ratio - 1) * 100:+.1f} %)  (information)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
