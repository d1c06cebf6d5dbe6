"""Checks of a layer against its PyTorch twin over training steps and eval mode (see :mod:`course_lib.grading`)."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from course_lib.grading.checks import _describe, check_tensor
from course_lib.norms.base import reduce_dims_of
from course_lib.grading.from_scratch import NORMALIZATION, _Observation, watched

__all__ = ["check_layer", "check_buffers_detached", "check_state_dict_compatible", "normalization_mistakes",
           "BatchNormRunningMistakes", "StepResult", "forward_backward"]

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
                per_channel_affine: bool | None = None,
                grads: bool = True, rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0,
                extra_mistakes: Callable[[int, Tensor], Mapping[str, Mapping[str, Tensor]]] | None = None,
                from_scratch: bool = False) -> None:
    """``student`` behaves like ``reference``: one training step per tensor of ``inputs`` (outputs, input and
    parameter gradients, then the ``buffers``), then eval mode on ``eval_input``.

    ``buffers``/``param_names`` map the reference's names to the student's (default: same names, ``weight``
    and ``bias`` when the reference has them). ``stat_dims``: the axes the statistics reduce, used to name
    classic mistakes (with a weight of shape ``(C,)`` when ``per_channel_affine``, else shaped like the
    trailing axes as in LayerNorm); by default both come from the reference layer
    (:func:`course_lib.norms.reduce_dims_of`; none for GroupNorm). ``extra_mistakes(step, x)`` may add
    ``{"buffer name": {explanation: value}}``.
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
        mine = watched(what, observation, lambda: forward_backward(student, x, grad_output, param_names),
                       output_of=lambda step: step.output)
        theirs = forward_backward(reference, x, grad_output, {name: name for name in param_names})
        mistakes = {"output": {}, "grad_input": {}}
        dims = stat_dims if stat_dims is not None else reduce_dims_of(reference, x.dim())
        if dims is not None:
            per_channel = (1 not in dims) if per_channel_affine is None else per_channel_affine
            w, b = (_affine_view(getattr(reference, n, None), x, per_channel) for n in ("weight", "bias"))
            mistakes = normalization_mistakes(x, dims, getattr(reference, "eps", 1e-5), w, b, grad_output)
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
            mine = watched(what, observation, lambda: student(eval_input))
            theirs = reference(eval_input)
        mistakes = {}
        if stat_dims is not None or reduce_dims_of(reference, eval_input.dim()) is not None:
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


