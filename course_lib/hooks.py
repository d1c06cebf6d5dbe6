r"""Look inside a network while it runs: forward hooks that always clean up, and per-layer activation statistics.

A forward hook ``fn(module, input, output)`` registered on a module runs after each of its forward calls.
Hooks that are never removed keep running (and keep whatever they store alive), so :class:`Hook` and
:class:`Hooks` are context managers that remove their hooks when the ``with`` block ends, also when an
exception leaves it.

:class:`ActivationStats` records, for each given module and each forward call ``k``, the mean and standard
deviation of the module's output (``stats.means[i][k]``, ``stats.stds[i][k]``), and optionally a histogram
over fixed bins (``torch.histc``) and the fraction of near-zero outputs. Its hook is a few lines (after fastai's
``append_stats``); it is also a :class:`course_lib.callbacks.Callback` (taught in Q3; plots in
:mod:`course_lib.plots`; its cost per training step is measured by ``benchmarks/hooks.py``).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .callbacks import Callback

__all__ = ["Hook", "Hooks", "ActivationStats", "find_modules"]


def find_modules(model: nn.Module, *types: type) -> list[nn.Module]:
    """Every submodule of ``model`` (itself included) that is an instance of one of ``types``, in order."""
    if not types:
        raise ValueError("expected at least one module type, e.g. find_modules(model, nn.Conv2d), got none")
    return [m for m in model.modules() if isinstance(m, types)]


class Hook:
    """``fn(hook, module, input, output)`` as a forward hook on ``module`` (``forward=False``: a full backward
    hook, ``fn(hook, module, grad_input, grad_output)``). ``fn`` may keep state on ``hook``.

    Removed by :meth:`remove` or at the end of a ``with Hook(...)`` block (also on exceptions).
    """

    def __init__(self, module: nn.Module, fn: Callable, forward: bool = True) -> None:
        self.handle = None
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module to hook, got {type(module).__name__}")
        self.module = module
        register = module.register_forward_hook if forward else module.register_full_backward_hook
        self.handle = register(functools.partial(fn, self))

    @property
    def removed(self) -> bool:
        return self.handle is None

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()  # returns None: an exception raised in the block still propagates

    def __del__(self) -> None:
        self.remove()


class Hooks:
    """One :class:`Hook` with the same ``fn`` per module; a list-like context manager that removes them all."""

    def __init__(self, modules: Iterable[nn.Module], fn: Callable, forward: bool = True) -> None:
        self.hooks: list[Hook] = []
        try:
            for module in modules:
                self.hooks.append(Hook(module, fn, forward))
        except BaseException:
            self.remove()  # registration failed half-way: leave no hook behind
            raise

    def __getitem__(self, i: int) -> Hook:
        return self.hooks[i]

    def __len__(self) -> int:
        return len(self.hooks)

    def __iter__(self):
        return iter(self.hooks)

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def __del__(self) -> None:
        self.remove()


class ActivationStats(Callback):
    r"""Per module ``i`` and forward call ``k``: mean, std (and optionally histogram, near-zero fraction) of the output.

    Args:
        modules: a module or an iterable of distinct modules (e.g. ``find_modules(model, ConvLayer)``); hooks are
            registered at construction.
        bins: number of histogram bins over ``hist_range`` (``None``: no histogram). Values outside the range
            are not counted (``torch.histc``).
        near_zero: record the fraction of outputs with ``|x| <= near_zero`` (``None``: do not).
        record_validation: as a Learner callback, also record during validation passes (default: training only).

    Read: ``means[i]``, ``stds[i]`` (1-D float64 tensors over calls; ``float(stats.means[i][k])``), ``hists[i]``
    ``(calls, bins)``, ``near_zero_fractions[i]``. The std is the unbiased one of ``torch.std``:
    :math:`\sqrt{\sum (x - \bar x)^2 / (n - 1)}` over all ``n`` elements of the output, computed in two passes
    (never :math:`E[x^2] - E[x]^2`).

    As a context manager the hooks are removed at the end of the ``with`` block. As a Learner callback they
    are (re-)registered at ``before_fit`` and removed at ``cleanup_fit``, which runs even if training fails.
    """

    def __init__(self, modules: nn.Module | Iterable[nn.Module], bins: int | None = None,
                 hist_range: tuple[float, float] = (0.0, 10.0), near_zero: float | None = None,
                 record_validation: bool = False) -> None:
        self.modules = [modules] if isinstance(modules, nn.Module) else list(modules)
        if not self.modules:
            raise ValueError("expected at least one module to record, got none")
        if len(set(map(id, self.modules))) != len(self.modules):
            raise ValueError(f"expected distinct modules, got {len(self.modules)} with repeats")
        if bins is not None and bins < 1:
            raise ValueError(f"expected bins >= 1 or None, got {bins}")
        if near_zero is not None and not near_zero > 0:
            raise ValueError(f"expected a positive near_zero threshold or None, got {near_zero}")
        if hist_range[0] >= hist_range[1]:
            raise ValueError(f"expected hist_range (low, high) with low < high, got {hist_range}")
        self.bins, self.hist_range, self.near_zero = bins, (float(hist_range[0]), float(hist_range[1])), near_zero
        self.record_validation, self.paused, self.hooks = record_validation, False, None
        self.reset()
        self.register()

    def reset(self) -> None:
        """Forget every record (the hooks stay as they are)."""
        self.records = {m: {"mean": [], "std": [], "hist": [], "near": []} for m in self.modules}

    def _record(self, hook: Hook, module: nn.Module, inputs, output) -> None:
        """The forward hook: 0-d tensors appended per call (no ``.item()``: the hook never waits for a device)."""
        if self.paused:
            return
        x, rec = (output if isinstance(output, Tensor) else output[0]).detach(), self.records[module]
        rec["mean"].append(x.mean())
        rec["std"].append(x.std())
        if self.bins:
            rec["hist"].append(torch.histc(x, self.bins, *self.hist_range))
        if self.near_zero is not None:
            rec["near"].append((x.abs() <= self.near_zero).float().mean())

    def register(self) -> None:
        """(Re-)register the hooks if they are not registered."""
        if self.hooks is None:
            self.hooks = Hooks(self.modules, self._record)

    def remove(self) -> None:
        """Remove the hooks; the records stay readable."""
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None

    def __enter__(self) -> "ActivationStats":
        self.register()
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    # --- Learner callback events -----------------------------------------------------------------------
    def before_fit(self, learn) -> None:
        self.register()

    def cleanup_fit(self, learn) -> None:
        self.remove()

    def before_validate(self, learn) -> None:
        self.paused = not self.record_validation

    def after_validate(self, learn) -> None:
        self.paused = False

    # --- reading ---------------------------------------------------------------------------------------
    def _read(self, name: str, shape: tuple[int, ...] = ()) -> list[Tensor]:
        """Records of ``name`` per module as float64 tensors ``(calls, *shape)``."""
        return [torch.stack(rec[name]).double() if rec[name] else torch.zeros(0, *shape, dtype=torch.float64)
                for rec in self.records.values()]

    @property
    def n_calls(self) -> list[int]:
        return [len(rec["mean"]) for rec in self.records.values()]

    @property
    def means(self) -> list[Tensor]:
        return self._read("mean")

    @property
    def stds(self) -> list[Tensor]:
        return self._read("std")

    @property
    def hists(self) -> list[Tensor]:
        if not self.bins:
            raise ValueError("expected ActivationStats(..., bins=<int>) to record histograms, got bins=None")
        return self._read("hist", (self.bins,))

    @property
    def bin_edges(self) -> Tensor:
        """``bins + 1`` edges of the histogram bins."""
        return torch.linspace(*self.hist_range, (self.bins or 0) + 1)

    @property
    def near_zero_fractions(self) -> list[Tensor]:
        if self.near_zero is None:
            raise ValueError("expected ActivationStats(..., near_zero=<threshold>) to record near-zero "
                             "fractions, got near_zero=None")
        return self._read("near")
