"""Checks of one value against the expected one, and of an answer's form (see :mod:`course_lib.grading`)."""
from __future__ import annotations

import contextlib
import io
import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["check_tensor", "check_number", "check_is_number", "check_option", "check_answer", "check_raises",
           "check_silent"]

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


