"""Self-check questions for the lecture notebooks: answer in a cell, get feedback at once.

A notebook asks::

    answer_q1_2 = None   # your number here
    check("Q1.2", answer_q1_2)

and ``check`` prints whether the answer is right, or a hint (never the answer). The questions with a definite
answer live in ``course_lib/questions/q<N>.py`` (one module per notebook, each defining ``QUESTIONS``); open
questions have a model answer in a collapsed block in the notebook instead. Graded exercises are a separate
thing (nbgrader, ``exercises/``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Number", "Choice", "check", "feedback"]


@dataclass(frozen=True)
class Number:
    """A numeric answer, right within ``rel_tol`` (relative) or ``abs_tol`` (absolute)."""

    value: float
    hint: str
    rel_tol: float = 0.02
    abs_tol: float = 0.0

    def accepts(self, answer) -> bool:
        try:
            number = float(answer)
        except (TypeError, ValueError):
            return False
        return math.isclose(number, self.value, rel_tol=self.rel_tol, abs_tol=self.abs_tol)

    def describe(self, answer) -> str:
        return f"expected a number, got {type(answer).__name__}"


@dataclass(frozen=True)
class Choice:
    """A multiple-choice answer: one letter (or several, as a string like "ac", order ignored)."""

    correct: str
    options: tuple[str, ...]
    hint: str
    explanations: dict = field(default_factory=dict)

    def accepts(self, answer) -> bool:
        return isinstance(answer, str) and _letters(answer) == sorted(self.correct)

    def describe(self, answer) -> str:
        letters = "".join(chr(ord("a") + i) for i in range(len(self.options)))
        return f"expected one of the letters {letters!r} (or several, e.g. 'ac'), got {answer!r}"


def _letters(answer: str) -> list[str]:
    """The answer's letters, sorted: "b, c", "c b" and "bc" are the same answer."""
    return sorted(ch for ch in answer.lower() if ch.isalpha())


def _load_questions() -> dict[str, Number | Choice]:
    """Every ``QUESTIONS`` dict of the modules in ``course_lib.questions``; ids must be unique."""
    import importlib
    import pkgutil

    from . import questions

    bank: dict[str, Number | Choice] = {}
    for info in sorted(pkgutil.iter_modules(questions.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{questions.__name__}.{info.name}")
        for question_id, question in getattr(module, "QUESTIONS", {}).items():
            if question_id in bank:
                raise ValueError(f"question {question_id!r} is defined twice (again in {info.name})")
            bank[question_id] = question
    return bank


QUESTIONS: dict[str, Number | Choice] = {}


def feedback(question_id: str, answer) -> tuple[bool | None, str]:
    """``(correct, message)``; ``correct`` is None when the question is not answered yet."""
    if not QUESTIONS:
        QUESTIONS.update(_load_questions())
    if question_id not in QUESTIONS:
        raise KeyError(f"unknown question {question_id!r}; known: {', '.join(sorted(QUESTIONS))}")
    question = QUESTIONS[question_id]
    if answer is None or answer is Ellipsis:
        return None, f"{question_id}: not answered yet - replace None with your answer and run the cell again."
    if isinstance(question, Choice) and isinstance(answer, str) and "".join(_letters(answer)) in question.explanations:
        extra = " " + question.explanations["".join(_letters(answer))]
    else:
        extra = ""
    if question.accepts(answer):
        return True, f"{question_id}: correct.{extra}"
    if isinstance(question, Number) and not isinstance(answer, (int, float)):
        try:
            float(answer)
        except (TypeError, ValueError):
            return False, f"{question_id}: {question.describe(answer)}."
    if isinstance(question, Choice) and not isinstance(answer, str):
        return False, f"{question_id}: {question.describe(answer)}."
    return False, f"{question_id}: not quite.{extra} Hint: {question.hint}"


def check(question_id: str, answer) -> bool | None:
    """Print feedback on ``answer``; return True/False, or None when not answered yet."""
    correct, message = feedback(question_id, answer)
    print(message)
    return correct
