r"""Checks for the exercise test cells (``solutions/``, ``exercises/``): the student's code against PyTorch.

Every check returns ``None`` when the code is right and raises ``AssertionError`` with a message that says what
was expected, what came, and -- when the wrong value matches a classic mistake -- which mistake it is::

    BatchNorm2d(2) on a batch of two 1x1 maps (training step 1): running_var: max abs difference 0.4 at index
    (1,): expected 1.7, got 1.3 (tolerance atol=1e-05, rtol=0.0001). Yours matches the moving average of the
    *biased* batch variance: running_var tracks the unbiased variance var * n/(n-1) (n = 2 values per
    channel), while normalizing uses the biased one.

The checks print nothing and silence nothing: a test cell is ``grading.check_...(...)`` calls and ``assert``
statements, never a bare expression (nbgrader would take a displayed value as the cell's score).

* :func:`check_tensor`, :func:`check_number`, :func:`check_answer`, :func:`check_raises` -- one value against
  the expected one; :func:`check_is_number`, :func:`check_option` -- an answer is well-formed (visible tests);
* :func:`check_layer` -- a layer against its PyTorch / ``course_lib.norms`` twin over several training steps
  and in eval mode: outputs, input and parameter gradients, running buffers;
* :func:`check_own_layer`, :func:`check_own_function` -- the gate that opens each test cell of an
  implementation exercise: the answer is not, does not subclass, hold, wrap or call torch's or course_lib's
  implementation (class MRO and submodules; library functions seen by ``sys.setprofile``; PyTorch
  normalization kernels seen by a ``TorchDispatchMode``; library backward nodes in the output's autograd
  graph), else the cell fails with what was found; :func:`check_from_scratch` -- the runtime part alone;
* :func:`check_buffers_detached` -- no autograd graph was stored in a buffer;
* :func:`normalization_mistakes` -- the outputs of the classic wrong normalizations, for messages.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from sys import getprofile as _getprofile, setprofile as _setprofile  # bound here: the guard restores them

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

__all__ = [
    "check_tensor", "check_number", "check_is_number", "check_option", "check_answer", "check_raises", "check_silent",
    "check_layer", "check_from_scratch", "check_own_layer", "check_own_function", "NORMALIZATION", "TRAINING",
    "Forbidden", "check_buffers_detached", "check_state_dict_compatible",
    "normalization_mistakes", "BatchNormRunningMistakes", "StepResult", "forward_backward",
]

_ACCEPTED_TENSOR_TYPES = (Tensor, nn.Parameter)


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_plain_tensor(value, what: str) -> Tensor:
    """The value as a detached float64 tensor; only exact ``torch.Tensor``/``nn.Parameter`` are accepted.

    A subclass could override the comparisons (``__torch_function__``), so it is refused.
    """
    if type(value) not in _ACCEPTED_TENSOR_TYPES:
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(value).__name__} ({_describe(value)})")
    return value.detach().to(torch.float64)


def _mismatch(actual: Tensor, expected: Tensor, rtol: float, atol: float) -> str | None:
    """``None`` when close (NaN only where expected is NaN), else a sentence locating the worst element."""
    nan_a, nan_e = torch.isnan(actual), torch.isnan(expected)
    if bool((nan_a & ~nan_e).any()):
        where = tuple(int(i) for i in torch.nonzero(nan_a & ~nan_e)[0])
        return f"got NaN at index {where} (expected {expected[where].item():.4g})"
    finite = ~(nan_a | nan_e)
    diff = torch.where(finite, (actual - expected).abs(), torch.zeros_like(actual))
    allowed = atol + rtol * expected.abs()
    bad = diff > torch.where(finite, allowed, torch.full_like(allowed, math.inf))
    if not bool(bad.any()):
        return None
    excess = torch.where(bad, diff, torch.zeros_like(diff))
    where = tuple(int(i) for i in torch.nonzero(excess == excess.max())[0]) if excess.dim() else ()
    return (f"max abs difference {diff.max().item():.4g} at index {where}: expected {expected[where].item():.6g}, "
            f"got {actual[where].item():.6g} (tolerance atol={atol:g}, rtol={rtol:g})")


def check_tensor(actual, expected: Tensor, what: str, *, rtol: float = 1e-4, atol: float = 1e-5,
                 mistakes: Mapping[str, Tensor] | None = None) -> None:
    """``actual`` is a tensor shaped like ``expected`` and close to it elementwise.

    ``mistakes`` maps an explanation to the value a classic mistake produces; when ``actual`` matches one of
    them, the message names it.
    """
    got = _as_plain_tensor(actual, what)
    want = expected.detach().to(torch.float64)
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: expected shape {tuple(want.shape)}, got shape {tuple(got.shape)}")
    problem = _mismatch(got, want, rtol, atol)
    if problem is None:
        return
    message = f"{what}: {problem}."
    for explanation, value in (mistakes or {}).items():
        value = value.detach().to(torch.float64)
        if tuple(value.shape) == tuple(got.shape) and _mismatch(got, value, rtol, atol) is None:
            message += f" Yours matches {explanation}."
            break
    raise AssertionError(message)


def _as_finite_number(actual, what: str) -> float:
    if isinstance(actual, Tensor) and type(actual) in _ACCEPTED_TENSOR_TYPES and actual.numel() == 1:
        actual = actual.item()
    if isinstance(actual, bool) or not isinstance(actual, numbers.Real) or not math.isfinite(actual):
        raise AssertionError(f"{what}: expected a finite number, got {type(actual).__name__} ({_describe(actual)})")
    return float(actual)


def check_number(actual, expected: float, what: str, *, rel_tol: float = 0.01, abs_tol: float = 0.0,
                 why: str = "") -> None:
    """``actual`` is a real number within ``rel_tol`` (relative) or ``abs_tol`` of ``expected``."""
    value = _as_finite_number(actual, what)
    if not math.isclose(value, expected, rel_tol=rel_tol, abs_tol=abs_tol):
        tolerance = f"{rel_tol:.2g} relative" if rel_tol else f"{abs_tol:.2g} absolute"
        raise AssertionError(f"{what}: got {value:.6g}, which is not the expected value (tolerance {tolerance}). "
                             f"{why}".rstrip())


def check_is_number(actual, what: str) -> None:
    """The answer is a finite real number (whether it is right is :func:`check_number`, in the hidden tests)."""
    _as_finite_number(actual, what)


def _normalize_choice(actual, what: str) -> str | frozenset:
    if isinstance(actual, str):
        return actual.strip().lower()
    if isinstance(actual, (set, frozenset, list, tuple)) and all(isinstance(a, str) for a in actual):
        return frozenset(a.strip().lower() for a in actual)
    raise AssertionError(f"{what}: expected a letter such as 'b' (or a set of letters such as {{'a', 'c'}}), "
                         f"got {type(actual).__name__} ({_describe(actual)})")


def check_option(actual, options: Sequence[str], what: str, *, several: bool = False) -> None:
    """The answer is well-formed: one of ``options`` (or, with ``several``, a set of them). Says nothing on
    whether it is right (that is :func:`check_answer`, in the hidden tests)."""
    choice = _normalize_choice(actual, what)
    allowed = ", ".join(repr(o) for o in options)
    if several:
        chosen = choice if isinstance(choice, frozenset) else frozenset([choice])
        unknown = sorted(chosen - set(options))
        if not chosen or unknown:
            raise AssertionError(f"{what}: expected a non-empty set of letters among {allowed}, got {actual!r}")
    elif not isinstance(choice, str) or choice not in options:
        raise AssertionError(f"{what}: expected exactly one of {allowed}, got {actual!r}")


def check_answer(actual, expected: str | frozenset, what: str, why: str) -> None:
    """The (well-formed) answer is the right one; ``why`` teaches the point when it is not."""
    choice = _normalize_choice(actual, what)
    if isinstance(expected, frozenset) and isinstance(choice, str):
        choice = frozenset([choice])
    if choice != expected:
        raise AssertionError(f"{what}: {actual!r} is not the right answer. {why}")


def check_raises(fn: Callable[[], object], exception: type[BaseException], what: str, *,
                 match: str | None = None) -> None:
    """``fn()`` raises ``exception`` (whose message contains ``match``, if given)."""
    try:
        fn()
    except exception as error:
        if match is not None and match.lower() not in str(error).lower():
            raise AssertionError(f"{what}: raised {type(error).__name__} as expected, but its message "
                                 f"{str(error)!r} does not mention {match!r}") from None
        return
    except Exception as error:  # noqa: BLE001 - the student's code may raise anything
        raise AssertionError(f"{what}: expected {exception.__name__}, got {type(error).__name__}: {error}") from None
    raise AssertionError(f"{what}: expected {exception.__name__} to be raised, but nothing was raised")


def check_silent(fn: Callable[[], object], what: str):
    """``fn()`` writes nothing to stdout/stderr (e.g. no leftover ``print`` in ``forward``); returns its result."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        result = fn()
    if sink.getvalue():
        raise AssertionError(f"{what}: expected no output, got {sink.getvalue()[:80]!r} "
                             "(a leftover print in forward slows training and floods the logs)")
    return result


# --------------------------------------------------------------------------------------------- layers

@dataclass
class StepResult:
    """Output, input gradient and parameter gradients (by name) of one forward + backward step."""

    output: object
    grad_input: Tensor | None
    grad_params: dict[str, Tensor | None]


def forward_backward(module: nn.Module, x: Tensor, grad_output: Tensor | None,
                     param_names: Mapping[str, str]) -> StepResult:
    """Run ``module`` on a fresh leaf copy of ``x``; backpropagate ``grad_output`` when given."""
    x = x.detach().clone().requires_grad_(grad_output is not None)
    params = {ours: getattr(module, theirs, None) for ours, theirs in param_names.items()}
    for p in params.values():
        if isinstance(p, Tensor):
            p.grad = None
    with torch.enable_grad():
        y = module(x)
        if grad_output is not None and isinstance(y, Tensor) and y.requires_grad:
            y.backward(grad_output.reshape(y.shape) if y.numel() == grad_output.numel() else grad_output)
    grads = {name: (p.grad if isinstance(p, Tensor) else None) for name, p in params.items()}
    return StepResult(y, x.grad if grad_output is not None else None, grads)


def normalization_mistakes(x: Tensor, dims: tuple[int, ...], eps: float, weight: Tensor | None = None,
                           bias: Tensor | None = None, grad_output: Tensor | None = None) -> dict[str, dict]:
    """What classic wrong normalizations over ``dims`` produce: ``{"output": {...}, "grad_input": {...}}``.

    ``weight``/``bias`` are already shaped to broadcast against ``x``. The explanations become part of the
    messages of :func:`check_tensor`.
    """
    x = x.detach().to(torch.float64).requires_grad_(True)
    w = None if weight is None else weight.detach().to(torch.float64)
    b = None if bias is None else bias.detach().to(torch.float64)

    def affine(y):
        y = y if w is None else y * w
        return y if b is None else y + b

    mean = x.mean(dims, keepdim=True)
    biased = ((x - mean) ** 2).mean(dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    unbiased = biased * n / max(n - 1, 1)
    outputs = {
        "the input itself (the layer returns its input unchanged)": x,
        "all zeros": torch.zeros_like(x),
        "the normalized input without the affine weight and bias": (x - mean) / torch.sqrt(biased + eps),
        "normalizing with the unbiased variance (torch's x.var() divides by n-1 by default; normalization uses "
        "the biased variance, x.var(..., correction=0))": affine((x - mean) / torch.sqrt(unbiased + eps)),
        "normalizing without eps inside the square root": affine((x - mean) / torch.sqrt(biased)),
    }
    found = {"output": {k: v.detach() for k, v in outputs.items()}, "grad_input": {}}
    if grad_output is not None:
        detached = affine((x - mean.detach()) / torch.sqrt(biased.detach() + eps))
        (grad,) = torch.autograd.grad(detached, x, grad_output.to(torch.float64))
        found["grad_input"]["the gradient with detached batch statistics (mean and variance treated as "
                            "constants): gradients must flow through the mean and the variance"] = grad
    return found


def _set_same_parameters(student: nn.Module, reference: nn.Module, param_names: Mapping[str, str],
                         what: str, seed: int) -> None:
    """Give both layers the same non-trivial weight and bias (so a forgotten affine shows)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ours, theirs in param_names.items():
            ref_p = getattr(reference, ours, None)
            if ref_p is None:
                continue
            mine = getattr(student, theirs, None)
            if not isinstance(mine, nn.Parameter):
                raise AssertionError(f"{what}: expected a learnable nn.Parameter named {theirs!r} "
                                     f"(shape {tuple(ref_p.shape)}), got {type(mine).__name__}")
            if mine.numel() != ref_p.numel():
                raise AssertionError(f"{what}.{theirs}: expected {ref_p.numel()} values "
                                     f"(shape {tuple(ref_p.shape)}), got shape {tuple(mine.shape)}")
            value = 1.0 + 0.5 * torch.randn(ref_p.shape, generator=gen) if ours == "weight" else \
                0.5 * torch.randn(ref_p.shape, generator=gen)
            ref_p.copy_(value)
            mine.copy_(value.reshape(mine.shape))


def _switch_mode(module: nn.Module, training: bool, what: str) -> None:
    name = "train()" if training else "eval()"
    try:
        module.train(training)
    except TypeError as error:
        raise AssertionError(f"{what}.{name} failed ({error}): did the layer store a bool in self.train? "
                             "That shadows nn.Module.train(); keep the mode in self.training") from None
    if module.training is not training:
        raise AssertionError(f"{what}.{name}: expected self.training to be {training}, got {module.training}")


def _affine_view(param: Tensor | None, x: Tensor, per_channel: bool) -> Tensor | None:
    if param is None or not per_channel:
        return param
    return param.view([1, -1] + [1] * (x.dim() - 2))


def check_layer(student: nn.Module, reference: nn.Module, inputs: Sequence[Tensor], what: str, *,
                eval_input: Tensor | None = None, buffers: Mapping[str, str] | None = None,
                param_names: Mapping[str, str] | None = None, stat_dims: tuple[int, ...] | None = None,
                per_channel_affine: bool = True,
                grads: bool = True, rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0,
                extra_mistakes: Callable[[int, Tensor], Mapping[str, Mapping[str, Tensor]]] | None = None,
                from_scratch: bool = False) -> None:
    """``student`` behaves like ``reference``: one training step per tensor of ``inputs`` (outputs, input and
    parameter gradients, then the ``buffers``), then eval mode on ``eval_input``.

    ``buffers``/``param_names`` map the reference's names to the student's (default: same names, ``weight``
    and ``bias`` when the reference has them). ``stat_dims``: the axes the statistics reduce, used to name
    classic mistakes (with a weight of shape ``(C,)`` when ``per_channel_affine``, else shaped like the
    trailing axes as in LayerNorm). ``extra_mistakes(step, x)`` may add ``{"buffer name": {explanation: value}}``.
    ``from_scratch``: every call of the student's layer is watched as by :func:`check_own_layer` (library calls,
    normalization kernels, library nodes in its output's graph), so a layer that uses the library only on some
    inputs, or only when it is not watched by the gate, earns nothing either.
    """
    if param_names is None:
        param_names = {n: n for n in ("weight", "bias") if getattr(reference, n, None) is not None}
    buffers = dict(buffers or {})
    _set_same_parameters(student, reference, param_names, what, seed)
    observation = _Observation(NORMALIZATION) if from_scratch else None
    gen = torch.Generator().manual_seed(seed + 1)
    _switch_mode(student, True, what)
    reference.train()
    for step, x in enumerate(inputs, start=1):
        label = f"{what} (training step {step})"
        grad_output = torch.randn(x.shape, generator=gen, dtype=x.dtype) if grads else None
        mine = _watched(what, observation, lambda: forward_backward(student, x, grad_output, param_names))
        theirs = forward_backward(reference, x, grad_output, {name: name for name in param_names})
        mistakes = {"output": {}, "grad_input": {}}
        if stat_dims is not None:
            w, b = (_affine_view(getattr(reference, n, None), x, per_channel_affine) for n in ("weight", "bias"))
            mistakes = normalization_mistakes(x, stat_dims, getattr(reference, "eps", 1e-5), w, b, grad_output)
        check_tensor(mine.output, theirs.output, f"{label}: output", rtol=rtol, atol=atol,
                     mistakes=mistakes["output"])
        if grads:
            if mine.grad_input is None:
                raise AssertionError(f"{label}: x.grad is None after backward: is the output computed from x "
                                     "with differentiable tensor operations (no .detach(), no torch.no_grad())?")
            check_tensor(mine.grad_input, theirs.grad_input, f"{label}: gradient of the input (x.grad)",
                         rtol=rtol * 10, atol=atol * 10, mistakes=mistakes["grad_input"])
            for name, grad in theirs.grad_params.items():
                if grad is None:
                    continue
                got = mine.grad_params.get(name)
                if got is None:
                    raise AssertionError(f"{label}: {param_names[name]}.grad is None: is the parameter used "
                                         "in the output?")
                check_tensor(got.reshape(grad.shape), grad, f"{label}: gradient of {param_names[name]}",
                             rtol=rtol * 10, atol=atol * 10)
        extra = extra_mistakes(step, x) if extra_mistakes is not None else {}
        for ref_name, my_name in buffers.items():
            expected = getattr(reference, ref_name)
            got = getattr(student, my_name, None)
            if not isinstance(got, Tensor):
                raise AssertionError(f"{label}: expected a buffer named {my_name!r}, got {_describe(got)}")
            check_tensor(got.reshape(expected.shape) if got.numel() == expected.numel() else got, expected,
                         f"{label}: {my_name}", rtol=rtol, atol=atol, mistakes=extra.get(ref_name))
    if eval_input is not None:
        _switch_mode(student, False, what)
        reference.eval()
        with torch.no_grad():
            mine = _watched(what, observation, lambda: student(eval_input))
            theirs = reference(eval_input)
        mistakes = {}
        if stat_dims is not None:
            with torch.no_grad():
                training_output = copy.deepcopy(reference).train()(eval_input)
            mistakes = {"the output of training mode: in eval mode the layer must use its running "
                        "statistics (self.training is False)": training_output}
        check_tensor(mine, theirs, f"{what} (eval mode): output", rtol=rtol, atol=atol, mistakes=mistakes)
        for ref_name, my_name in buffers.items():
            expected = getattr(reference, ref_name)
            got = getattr(student, my_name)
            check_tensor(got.reshape(expected.shape) if got.numel() == expected.numel() else got, expected,
                         f"{what} (eval mode): {my_name} must not change in eval mode", rtol=rtol, atol=atol)


def _watched(what: str, observation, fn: Callable[[], object]):
    """``fn()`` (a call of the student's layer), watched by ``observation`` when there is one."""
    if observation is None:
        return fn()
    result = observation.run(fn)
    output = result.output if isinstance(result, StepResult) else result
    observation.nodes += [n for n in _library_nodes(_tensors_in(output)) if n not in observation.nodes]
    _refuse(what, observation.findings("your layer"), NORMALIZATION)
    return result


class BatchNormRunningMistakes:
    """``extra_mistakes`` for :func:`check_layer`: the running buffers a BatchNorm with a classic bug would hold.

    Follows the same batches as the layer under test (call order = training steps) and offers, per buffer:
    the EMA of the *biased* variance, the Keras/TensorFlow momentum convention, never updated, last batch only.
    """

    def __init__(self, momentum: float = 0.1, dims: tuple[int, ...] = (0, 2, 3)):
        self.momentum, self.dims = momentum, dims
        self.state: dict[str, Tensor] = {}

    def _ema(self, key: str, new: Tensor, weight_of_new: float) -> Tensor:
        old = self.state.get(key)
        if old is None:
            old = torch.ones_like(new) if key.endswith("var") else torch.zeros_like(new)
        self.state[key] = (1 - weight_of_new) * old + weight_of_new * new
        return self.state[key]

    def __call__(self, step: int, x: Tensor) -> dict[str, dict[str, Tensor]]:
        x = x.detach().to(torch.float64)
        n = math.prod(x.shape[d] for d in self.dims)
        mean = x.mean(self.dims)
        biased = ((x - mean.view([1, -1] + [1] * (x.dim() - 2))) ** 2).mean(self.dims)
        unbiased = biased * n / max(n - 1, 1)
        m = self.momentum
        keras = f"the Keras/TensorFlow momentum convention (running = {m:g} * running + {1 - m:g} * batch): " \
                f"PyTorch's momentum={m:g} is the weight of the *new* batch"
        return {
            "running_mean": {
                keras: self._ema("keras_mean", mean, 1 - m),
                "the initial value: running_mean was never updated in training mode": torch.zeros_like(mean),
                "the last batch's mean: the running buffers are a moving average, not the last batch": mean,
            },
            "running_var": {
                f"the moving average of the *biased* batch variance: running_var tracks the unbiased variance "
                f"var * n/(n-1) (n = {n} values per channel), while normalizing uses the biased one":
                    self._ema("biased_var", biased, m),
                keras: self._ema("keras_var", unbiased, 1 - m),
                "the initial value: running_var was never updated in training mode": torch.ones_like(mean),
                "the last batch's variance: the running buffers are a moving average, not the last batch": unbiased,
            },
        }


def check_state_dict_compatible(student: nn.Module, reference: nn.Module, what: str) -> None:
    """The reference's ``state_dict`` loads into the student's layer with ``strict=True`` (same names and shapes)."""
    try:
        student.load_state_dict(reference.state_dict(), strict=True)
    except RuntimeError as error:
        raise AssertionError(f"{what}: expected to load {type(reference).__name__}'s state_dict "
                             f"(same parameter and buffer names and shapes), got: {error}") from None


def check_buffers_detached(module: nn.Module, what: str) -> None:
    """No buffer holds an autograd graph (running statistics are updated under ``torch.no_grad()``)."""
    for name, buf in module.named_buffers():
        if buf is not None and (buf.requires_grad or buf.grad_fn is not None):
            raise AssertionError(
                f"{what}: buffer {name!r} has grad_fn={type(buf.grad_fn).__name__ if buf.grad_fn else None} and "
                f"requires_grad={buf.requires_grad}: it keeps the autograd graph of every past step alive (a "
                "memory leak). Update running statistics in place under torch.no_grad() (or from .detach()ed "
                "statistics)")


# ------------------------------------------------------------------------------------- from scratch

_COURSE_LIB = str(Path(__file__).resolve().parent) + os.sep
_TORCH = Path(torch.__file__).resolve().parent
# course_lib files a student's code may run: the checks themselves and the seed knob
_COURSE_LIB_ALLOWED = tuple(_COURSE_LIB + name for name in ("grading.py", "seed.py"))
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
