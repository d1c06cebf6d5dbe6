r"""Look inside a network while it runs: forward hooks that always clean up, and per-layer activation statistics.

A forward hook ``fn(module, input, output)`` registered on a module runs after each of its forward calls.
Hooks that are never removed keep running (and keep whatever they store alive), so :class:`Hook` and
:class:`Hooks` are context managers that remove their hooks when the ``with`` block ends, also when an
exception leaves it.

:class:`ActivationStats` records, for each given module and each forward call ``k``, the mean and standard
deviation of the module's output (``stats.means[i][k]``, ``stats.stds[i][k]``), and optionally a histogram
over fixed bins (``torch.histc``) and the fraction of near-zero outputs. It writes into preallocated tensors
instead of calling ``.item()`` per call, and it is also a :class:`course_lib.training.Callback` (taught in Q3;
plots in :mod:`course_lib.plots`; cost measured by ``benchmarks/hooks.py``).
"""
from __future__ import annotations

import functools
from array import array
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .training import Callback

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
        modules: a module or an iterable of modules (e.g. ``find_modules(model, ConvLayer)``); hooks are
            registered at construction.
        bins: number of histogram bins over ``hist_range`` (``None``: no histogram). Values outside the range
            are not counted (``torch.histc``).
        near_zero: record the fraction of outputs with ``|x| <= near_zero`` (``None``: do not).
        record_validation: as a Learner callback, also record during validation passes (default: training only).

    Read: ``means[i]``, ``stds[i]`` (1-D tensors over calls; ``float(stats.means[i][k])``), ``hists[i]``
    ``(calls, bins)``, ``near_zero_fractions[i]``. The std is the unbiased one of ``torch.std``:
    :math:`\sqrt{\sum (x - \bar x)^2 / (n - 1)}` over all ``n`` elements of the output, computed in two passes.

    As a context manager the hooks are removed at the end of the ``with`` block. As a Learner callback they
    are (re-)registered at ``before_fit`` and removed at ``after_fit``, which runs even if training fails.
    """

    def __init__(self, modules: nn.Module | Iterable[nn.Module], bins: int | None = None,
                 hist_range: tuple[float, float] = (0.0, 10.0), near_zero: float | None = None,
                 record_validation: bool = False) -> None:
        self.modules = [modules] if isinstance(modules, nn.Module) else list(modules)
        if not self.modules:
            raise ValueError("expected at least one module to record, got none")
        if bins is not None and bins < 1:
            raise ValueError(f"expected bins >= 1 or None, got {bins}")
        if near_zero is not None and not near_zero > 0:
            raise ValueError(f"expected a positive near_zero threshold or None, got {near_zero}")
        if hist_range[0] >= hist_range[1]:
            raise ValueError(f"expected hist_range (low, high) with low < high, got {hist_range}")
        self.bins, self.hist_range, self.near_zero = bins, (float(hist_range[0]), float(hist_range[1])), near_zero
        self.record_validation, self.paused = record_validation, False
        self.hooks: list[Hook] | None = None
        self.reset()
        self.register()

    # --- recording -------------------------------------------------------------------------------------
    # A hook runs inside the forward pass, where every tensor operation costs microseconds of dispatch.
    # A call does: mean, x - mean into a reusable buffer, square and sum it (two passes, never
    # E[x^2] - E[x]^2), each result written with out= straight into preallocated storage: no .item(), no
    # synchronization, no fresh output-sized temporary and no small tensor kept alive per call (those
    # fragment the heap and cost page faults in every later step).
    INITIAL_CAPACITY = 256  # calls per module; doubled when full

    def reset(self) -> None:
        """Forget every record (the hooks stay as they are)."""
        registered = getattr(self, "hooks", None) is not None
        self.remove()
        n = len(self.modules)
        self._store = [self._new_store(self.INITIAL_CAPACITY, torch.float32) for _ in range(n)]
        self._sizes = [array("q") for _ in range(n)]  # elements per call (raw int64s, no Python objects)
        self._scratch: list[dict] = [{} for _ in range(n)]  # per output shape: x - mean buffer, reduced dims
        if registered:
            self.register()

    def _new_store(self, capacity: int, dtype: torch.dtype) -> dict[str, Tensor]:
        store = {"mean": torch.zeros(capacity, dtype=dtype), "m2": torch.zeros(capacity, dtype=dtype)}
        if self.bins:
            store["hist"] = torch.zeros(capacity, self.bins, dtype=dtype)
        if self.near_zero is not None:
            store["near"] = torch.zeros(capacity, dtype=dtype)
        return store

    def _resize_store(self, i: int, dtype: torch.dtype) -> None:
        """Double the storage of module ``i`` when full, or convert it to the dtype of a new output, in place."""
        store, calls = self._store[i], len(self._sizes[i])
        capacity = 2 * len(store["mean"]) if calls == len(store["mean"]) else len(store["mean"])
        for name, new in self._new_store(capacity, dtype).items():
            new[:calls] = store[name][:calls]
            store[name] = new

    def _recorder(self, i: int) -> Callable:
        """The hook of module ``i``: everything it needs is bound once, so a call does little Python work."""
        store, sizes, scratch = self._store[i], self._sizes[i], self._scratch[i]
        bins, (low, high), near_zero = self.bins, self.hist_range, self.near_zero

        def record(hook: Hook, module: nn.Module, inputs, output) -> None:
            if self.paused:
                return
            x = (output if isinstance(output, Tensor) else output[0]).detach()
            key = (x.shape, x.dtype)
            if key not in scratch:  # first output of this shape: a reusable buffer, storage of its dtype
                scratch[key] = (torch.empty_like(x, memory_format=torch.contiguous_format), tuple(range(x.dim())))
                if x.dtype != store["mean"].dtype:
                    self._resize_store(i, x.dtype)
            deviation, dims = scratch[key]
            k = len(sizes)
            if k == len(store["mean"]):
                self._resize_store(i, x.dtype)
            mean = store["mean"][k]
            torch.mean(x, dims, out=mean)
            torch.sum(torch.sub(x, mean, out=deviation).square_(), dims, out=store["m2"][k])
            if bins:
                torch.histc(x, bins, low, high, out=store["hist"][k])
            if near_zero is not None:  # number of |x| <= near_zero, as a one-bin histogram of |x|
                torch.histc(torch.abs(x, out=deviation), 1, 0.0, near_zero, out=store["near"][k:k + 1])
            sizes.append(x.numel())
        return record

    def _recorded(self, name: str, i: int) -> Tensor:
        """Records of ``name`` for module ``i`` as float64, one entry per call."""
        return self._store[i][name][:len(self._sizes[i])].double()

    def _count(self, i: int) -> Tensor:
        return torch.tensor(self._sizes[i].tolist(), dtype=torch.float64)

    def register(self) -> None:
        """(Re-)register the hooks if they are not registered."""
        if self.hooks is None:
            hooks: list[Hook] = []
            try:
                for i, module in enumerate(self.modules):
                    hooks.append(Hook(module, self._recorder(i)))
            except BaseException:
                for hook in hooks:
                    hook.remove()
                raise
            self.hooks = hooks

    def remove(self) -> None:
        """Remove the hooks; the records stay readable."""
        if getattr(self, "hooks", None) is not None:
            for hook in self.hooks:
                hook.remove()
            self.hooks = None

    def __enter__(self) -> "ActivationStats":
        self.register()
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    # --- Learner callback events -----------------------------------------------------------------------
    def before_fit(self) -> None:
        self.register()

    def after_fit(self) -> None:
        self.remove()

    def before_validate(self) -> None:
        self.paused = not self.record_validation

    def after_validate(self) -> None:
        self.paused = False

    # --- reading ---------------------------------------------------------------------------------------
    @property
    def n_calls(self) -> list[int]:
        return [len(s) for s in self._sizes]

    @property
    def means(self) -> list[Tensor]:
        return [self._recorded("mean", i) for i in range(len(self.modules))]

    @property
    def stds(self) -> list[Tensor]:
        return [(self._recorded("m2", i) / (self._count(i) - 1)).sqrt() for i in range(len(self.modules))]

    @property
    def hists(self) -> list[Tensor]:
        if not self.bins:
            raise ValueError("expected ActivationStats(..., bins=<int>) to record histograms, got bins=None")
        return [self._recorded("hist", i) for i in range(len(self.modules))]

    @property
    def bin_edges(self) -> Tensor:
        """``bins + 1`` edges of the histogram bins."""
        return torch.linspace(*self.hist_range, (self.bins or 0) + 1)

    @property
    def near_zero_fractions(self) -> list[Tensor]:
        if self.near_zero is None:
            raise ValueError("expected ActivationStats(..., near_zero=<threshold>) to record near-zero "
                             "fractions, got near_zero=None")
        return [self._recorded("near", i) / self._count(i) for i in range(len(self.modules))]
