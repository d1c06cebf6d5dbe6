r"""One seed knob for the whole course: every random source derives from ``COURSE_SEED``.

A notebook's claims must hold for any base seed, not for one lucky run. So no notebook hard-codes a seed: it asks
for ``course_seed(k)``, the base seed plus a per-experiment offset ``k``, and the base seed comes from the
environment variable ``COURSE_SEED`` (default 0). Running a notebook with ``COURSE_SEED=3`` repeats every
experiment on other random draws; ``make test-portability`` does exactly that.

>>> import os; os.environ["COURSE_SEED"] = "3"
>>> course_seed(), course_seed(10)
(3, 13)
>>> del os.environ["COURSE_SEED"]
>>> course_seed(10)
10
"""
from __future__ import annotations

import os
import random
from typing import Callable, TypeVar

import numpy as np
import torch

T = TypeVar("T")

__all__ = ["base_seed", "course_seed", "set_seed", "seed_generator", "over_seeds", "describe_spread"]


def base_seed() -> int:
    """The base seed: the integer in ``COURSE_SEED``, 0 when it is unset or empty."""
    text = os.environ.get("COURSE_SEED", "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"COURSE_SEED must be an integer, got {text!r}") from None


def course_seed(offset: int = 0) -> int:
    """The seed of one experiment: ``base_seed() + offset`` (offsets keep the experiments of a notebook apart)."""
    return base_seed() + int(offset)


def set_seed(offset: int = 0) -> int:
    """Seed Python's, NumPy's and PyTorch's global generators with ``course_seed(offset)`` and return that seed.

    The same offset and ``COURSE_SEED`` give the same model, batches and result on one machine; another
    ``COURSE_SEED`` gives other draws of the same experiment.
    """
    seed = course_seed(offset)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def seed_generator(offset: int = 0) -> torch.Generator:
    """A private ``torch.Generator`` seeded with ``course_seed(offset)`` (draws that leave the global one alone)."""
    return torch.Generator().manual_seed(course_seed(offset))


def over_seeds(experiment: Callable[[int], T], n: int = 5, first: int = 0) -> list[T]:
    """``[experiment(first), ..., experiment(first + n - 1)]``: one run per seed offset.

    ``experiment`` takes a seed offset and calls :func:`set_seed` with it (directly or through a training helper).
    The list is the distribution a notebook shows and asserts statistics of, never one run's outcome.
    """
    if n < 1:
        raise ValueError(f"expected at least one seed, got n={n}")
    return [experiment(first + k) for k in range(n)]


def describe_spread(values, fmt: str = ".1%") -> str:
    """``"median 93.0% (range 88.0%-95.0%, 5 seeds)"``: the summary of a distribution over seeds that prose quotes.

    >>> describe_spread([0.9, 0.95, 0.88])
    'median 90.0% (range 88.0%-95.0%, 3 seeds)'
    """
    values = sorted(float(v) for v in values)
    if not values:
        raise ValueError("expected at least one value, got none")
    return (f"median {float(np.median(values)):{fmt}} (range {values[0]:{fmt}}-{values[-1]:{fmt}}, "
            f"{len(values)} seed{'s' if len(values) != 1 else ''})")
