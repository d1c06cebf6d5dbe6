"""The from-scratch gate: no points for an answer that is, wraps or calls a library implementation
(see :mod:`course_lib.grading`)."""
from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from sys import getprofile as _getprofile, setprofile as _setprofile  # bound here: the guard restores them

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

from course_lib.grading.checks import _describe

__all__ = ["check_own_layer", "check_own_function", "check_from_scratch", "Forbidden", "NORMALIZATION", "TRAINING"]

_COURSE_LIB = str(Path(__file__).resolve().parents[1]) + os.sep
_TORCH = Path(torch.__file__).resolve().parent
# course_lib files a student's code may run: the checks themselves and the seed knob
_COURSE_LIB_ALLOWED = tuple(os.path.join(_COURSE_LIB, *name.split("/")) for name in (
    "grading/__init__.py", "grading/checks.py", "grading/layers.py", "grading/from_scratch.py", "seed.py"))
_NORM_MODULE_FILES = tuple(str(_TORCH / "nn" / "modules" / f"{name}.py")
                           for name in ("batchnorm", "instancenorm", "normalization"))
_TRAINING_FILES = tuple(str(_TORCH / "optim" / f"{name}.py") for name in ("swa_utils", "lr_scheduler"))
_FUNCTIONAL_FILE = str(_TORCH / "nn" / "functional.py")
# names of normalization functions, builtins and aten kernels (vector_norm, F.normalize and var_mean are fine)
_NORM_NAME = re.compile(r"(batch|layer|group|instance|rms|local_response)_norm|_norm_backward|native_norm")
# autograd nodes of PyTorch's normalization kernels: NativeBatchNormBackward0, NativeLayerNormBackward0, ...
_NORM_NODE = re.compile(r"(Batch|Layer|Group|Instance|Rms|RMS)Norm\w*Backward")


@dataclass(frozen=True)
class Forbidden:
    """What the code of one kind of exercise may not use, and how to find out that it did.

    ``files``: Python files none of whose functions may run while the student's code runs (course_lib always;
    PyTorch's normalization modules for layers; ``torch.optim.swa_utils`` and ``lr_scheduler`` always).
    ``norm_ops``: also refuse PyTorch's normalization functions, builtins and aten kernels, and their backward
    nodes in the autograd graph of an output (off where the student's code legitimately runs ``nn.BatchNorm2d``
    layers of a given model, as in a recalibration).
    """

    goal: str
    files: tuple[str, ...]
    norm_ops: bool


NORMALIZATION = Forbidden("from tensor operations (mean, var, sqrt, ...), not from a library normalization or "
                          "course_lib's code",
                          _NORM_MODULE_FILES + _TRAINING_FILES, norm_ops=True)
TRAINING = Forbidden("written by you, not taken from course_lib or torch.optim (plain Python, math and tensor "
                     "operations; calling the given model and its layers' own methods is fine)",
                     _TRAINING_FILES, norm_ops=False)


def _in_forbidden_file(filename: str, forbidden: Forbidden) -> bool:
    if filename.startswith(_COURSE_LIB):
        return filename not in _COURSE_LIB_ALLOWED
    return filename in forbidden.files


def _qualified(module: str | None, name: str) -> str:
    return f"{module}.{name}" if module else name


def _library_origin(obj, forbidden: Forbidden) -> str | None:
    """The library thing ``obj`` is, or comes from (a class in its MRO, the function a partial or method wraps)."""
    seen = 0
    while seen < 10:  # unwrap partials, bound methods, static/class methods and functools.wraps chains
        seen += 1
        inner = getattr(obj, "func", None) if isinstance(obj, functools.partial) else \
            getattr(obj, "__func__", None) or getattr(obj, "__wrapped__", None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, type):
        for base in obj.__mro__:
            if base in (nn.Module, object) or not base.__module__.startswith(("torch", "course_lib")):
                continue
            return _qualified(base.__module__, base.__qualname__)
        return None
    code = getattr(obj, "__code__", None)
    if code is not None:
        if _in_forbidden_file(code.co_filename, forbidden) or \
                (forbidden.norm_ops and code.co_filename == _FUNCTIONAL_FILE and _NORM_NAME.search(code.co_name)):
            return _qualified(getattr(obj, "__module__", None), getattr(obj, "__qualname__", code.co_name))
        return None
    name = getattr(obj, "__name__", "")
    if callable(obj) and forbidden.norm_ops and isinstance(name, str) and _NORM_NAME.search(name):
        return _qualified(getattr(obj, "__module__", None) or "torch", name)  # a builtin such as torch.batch_norm
    return None


class _NormOpRecorder(TorchDispatchMode):
    """Records the aten normalization kernels dispatched while it is active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No torch.compile runs here: without this, the first use imports torch._dynamo (15 s on a busy CPU,
        past a test cell's timeout)."""
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if _NORM_NAME.search(name) and name not in self.ops:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


class _CallRecorder:
    """A ``sys.setprofile`` function: the library functions (Python and builtin) called while it is set."""

    def __init__(self, forbidden: Forbidden):
        self.forbidden, self.calls = forbidden, []

    def __call__(self, frame, event, arg):
        found = None
        if event == "call":
            code = frame.f_code
            if _in_forbidden_file(code.co_filename, self.forbidden) or (
                    self.forbidden.norm_ops and code.co_filename == _FUNCTIONAL_FILE
                    and _NORM_NAME.search(code.co_name)):
                found = _qualified(frame.f_globals.get("__name__"), getattr(code, "co_qualname", code.co_name))
        elif event == "c_call" and self.forbidden.norm_ops:
            name = getattr(arg, "__name__", "")
            if isinstance(name, str) and _NORM_NAME.search(name):
                found = _qualified(getattr(arg, "__module__", None) or "torch", name)
        if found is not None and found not in self.calls:
            self.calls.append(found)


def _library_nodes(outputs) -> list[str]:
    """Backward nodes of library normalizations in the autograd graphs of the tensors in ``outputs``."""
    stack = [t.grad_fn for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
    seen, found = set(), []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        forward_cls = getattr(node, "_forward_cls", None)
        if _NORM_NODE.search(name) or (forward_cls is not None and
                                        getattr(forward_cls, "__module__", "").startswith("course_lib")):
            found.append(name)
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def _tensors_in(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors_in(v)]
    return []


def _library_modules(module: nn.Module, forbidden: Forbidden) -> list[str]:
    """Submodules of ``module`` that are (or subclass) a library class, as ``"self.bn (torch....BatchNorm2d)"``."""
    found = []
    for name, sub in module.named_modules():
        origin = _library_origin(type(sub), forbidden) if name else None
        if origin is not None:
            found.append(f"self.{name} ({origin})")
    return found


class _Observation:
    """What one run of the student's code used: library calls, aten normalization kernels, graph nodes."""

    def __init__(self, forbidden: Forbidden):
        self.forbidden = forbidden
        self.calls = _CallRecorder(forbidden)
        self.ops = _NormOpRecorder() if forbidden.norm_ops else None
        self.nodes: list[str] = []
        self.tampered: list[str] = []

    def run(self, fn: Callable[[], object]):
        """``fn()`` with the recorders on; its result. Exceptions propagate (after the recorders are off)."""
        previous = _getprofile()
        with self.ops if self.ops is not None else contextlib.nullcontext():
            _setprofile(self.calls)
            try:
                result = fn()
            finally:
                if _getprofile() is not self.calls:
                    self.tampered.append("sys.setprofile was changed")
                _setprofile(previous)
                if self.ops is not None and _get_current_dispatch_mode() is not self.ops:
                    self.tampered.append("the torch dispatch mode stack was changed")
        if self.forbidden.norm_ops:
            self.nodes += [n for n in _library_nodes(_tensors_in(result)) if n not in self.nodes]
        return result

    def findings(self, subject: str) -> list[str]:
        """Sentences saying what was found, e.g. "your X's output was computed by ... (Node in its graph)"."""
        found = []
        if self.nodes:
            found.append(f"{subject}'s output was computed by a library normalization ({', '.join(self.nodes)} "
                         "in its autograd graph)")
        if self.ops is not None and self.ops.ops:
            found.append(f"PyTorch's normalization kernel {', '.join(self.ops.ops)} ran inside {subject}")
        if self.calls.calls:
            found.append(f"{subject} called {', '.join(self.calls.calls[:4])}")
        if self.tampered:
            found.append(f"while {subject} ran, {' and '.join(self.tampered)} (the check could not watch it)")
        return found


def _refuse(what: str, findings: Sequence[str], forbidden: Forbidden) -> None:
    if findings:
        raise AssertionError(f"{what} is not your own code, so this exercise earns no points: {'; '.join(findings)}. "
                             f"The exercise asks for it {forbidden.goal}")


def _run_student(what: str, fn: Callable[[], object], observation: _Observation):
    try:
        return observation.run(fn)
    except Exception as error:  # noqa: BLE001 - the student's code may raise anything
        _refuse(what, observation.findings(f"your {what}"), observation.forbidden)
        raise AssertionError(f"{what}: raised {type(error).__name__} ({error}) while it was checked for library "
                             "calls, so the check could not tell whether it is your own code: it must run on "
                             "this ordinary input") from None


def check_own_layer(layer_class, what: str, make: Callable[[], nn.Module], x: Tensor) -> None:
    """The gate of a layer exercise (run first in each of its test cells): no points for a library layer.

    Fails when ``layer_class`` is, or subclasses, a torch.nn or course_lib class; when the layer ``make()``
    builds holds one as a submodule; or when building it, a training step (forward and backward on ``x``) or an
    eval-mode forward runs library normalization code (a torch.nn / course_lib function, a PyTorch
    normalization kernel, or a library backward node in the output's graph). Only ``nn.Module`` and
    ``nn.Parameter`` and plain tensor operations are allowed. A layer whose mode cannot be switched (a bug
    the other tests report) is checked in the mode it has.
    """
    subject = f"your {what}"
    origin = _library_origin(layer_class, NORMALIZATION)
    if origin is not None:
        _refuse(what, [f"{subject} is {origin} (or a subclass of it)"], NORMALIZATION)
    observation = _Observation(NORMALIZATION)
    layer = _run_student(what, make, observation)
    if not isinstance(layer, nn.Module):
        raise AssertionError(f"{what}: expected an nn.Module, got {_describe(layer)}")
    origin = _library_origin(type(layer), NORMALIZATION)
    found = [f"{subject} builds a {origin}"] if origin is not None else []
    found += [f"{subject} holds a library layer: {m}" for m in _library_modules(layer, NORMALIZATION)]
    _refuse(what, found, NORMALIZATION)

    def step():
        y = layer(x.detach().clone().requires_grad_(True))
        if isinstance(y, Tensor) and y.requires_grad:
            y.sum().backward()
        return y

    for training in (True, False):
        try:
            layer.train(training)
        except Exception:  # noqa: BLE001 - a shadowed train(): test cells report it
            continue
        if layer.training is not training:
            continue
        _run_student(what, step, observation)
    _refuse(what, observation.findings(subject), NORMALIZATION)


def check_own_function(fn, what: str, run: Callable[[], object], *, forbidden: Forbidden = NORMALIZATION) -> None:
    """The gate of a function exercise (run first in each of its test cells): no points for library code.

    Fails when ``fn`` is (or wraps) a course_lib / torch.nn / torch.optim function, or when ``run()`` (which
    calls ``fn``) runs such code: see :class:`Forbidden` (``NORMALIZATION`` for statistics and layers,
    ``TRAINING`` where the student's code drives a given model). Returns nothing; ``run()``'s result is
    checked for library graph nodes with ``NORMALIZATION``.
    """
    if not callable(fn):
        raise AssertionError(f"{what}: expected a function, got {_describe(fn)}")
    origin = _library_origin(fn, forbidden)
    if origin is not None:
        _refuse(what, [f"your {what} is {origin}"], forbidden)
    observation = _Observation(forbidden)
    _run_student(what, run, observation)
    _refuse(what, observation.findings(f"your {what}"), forbidden)


def check_from_scratch(fn: Callable[[], object], what: str) -> None:
    """``fn()`` (e.g. a forward and backward pass) runs without PyTorch's or course_lib's normalizations."""
    observation = _Observation(NORMALIZATION)
    observation.run(fn)
    _refuse(what, observation.findings("the layer"), NORMALIZATION)


def watched(what: str, observation: _Observation | None, fn: Callable[[], object],
            output_of: Callable[[object], object] = lambda result: result):
    """``fn()`` (a call of the student's layer), watched by ``observation`` when there is one: refused when it ran
    library normalization code or ``output_of(result)`` has a library node in its autograd graph."""
    if observation is None:
        return fn()
    result = observation.run(fn)
    output = output_of(result)
    observation.nodes += [n for n in _library_nodes(_tensors_in(output)) if n not in observation.nodes]
    _refuse(what, observation.findings("your layer"), NORMALIZATION)
    return result
