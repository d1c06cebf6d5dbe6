"""Learning-rate (or any hyper-parameter) schedules as plain functions of the training position (Q5).

A schedule maps ``p`` in [0, 1] -- the fraction of all training batches done -- to a value. The four shapes
below are glued by :func:`combine_scheds`; ``course_lib.training.ParamScheduler`` writes a schedule into an
optimizer hyper-parameter before every batch, and ``course_lib.training.one_cycle`` builds fastai's one-cycle
policy from them. Equivalent in PyTorch: ``torch.optim.lr_scheduler.LambdaLR`` / ``OneCycleLR``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["Schedule", "sched_lin", "sched_cos", "sched_exp", "sched_no", "combine_scheds"]

Schedule = Callable[[float], float]


def sched_lin(start: float, end: float) -> Schedule:
    """Linear: ``start + p * (end - start)``."""
    return lambda p: start + p * (end - start)


def sched_cos(start: float, end: float) -> Schedule:
    """Half a cosine from ``start`` to ``end``: ``start + (1 - cos(pi * p)) / 2 * (end - start)``."""
    return lambda p: start + (1 - math.cos(math.pi * p)) / 2 * (end - start)


def sched_exp(start: float, end: float) -> Schedule:
    """Geometric: ``start * (end / start) ** p`` (linear on a log scale; needs positive values)."""
    if start <= 0 or end <= 0:
        raise ValueError(f"expected positive start and end for an exponential schedule, got {start}, {end}")
    return lambda p: start * (end / start) ** p


def sched_no(start: float, end: float | None = None) -> Schedule:
    """Constant ``start`` (``end`` is ignored; same signature as the others)."""
    return lambda p: start


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """Schedule ``k`` runs for the fraction ``pcts[k]`` of training, seeing its own position rescaled to [0, 1].

    ``combine_scheds([0.3, 0.7], [sched_cos(0.1, 1), sched_cos(1, 0)])`` warms up for 30 % then anneals.
    """
    pcts = [float(p) for p in pcts]
    if len(pcts) != len(scheds):
        raise ValueError(f"expected one fraction per schedule ({len(scheds)}), got {len(pcts)}")
    if any(p < 0 for p in pcts) or not math.isclose(sum(pcts), 1.0, abs_tol=1e-6):
        raise ValueError(f"expected non-negative fractions summing to 1, got {pcts} (sum {sum(pcts):g})")
    edges = np.cumsum([0.0, *pcts])

    def combined(p: float) -> float:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"expected a training position p in [0, 1], got {p}")
        k = max(i for i in range(len(pcts)) if pcts[i] > 0 and edges[i] <= p)
        return scheds[k](min((p - edges[k]) / pcts[k], 1.0))

    return combined
