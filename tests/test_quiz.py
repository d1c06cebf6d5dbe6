"""course_lib.quiz: feedback for self-check questions; the question bank loads and every answer is accepted."""
from __future__ import annotations

import pytest

from course_lib import quiz
from course_lib.quiz import Choice, Number


def test_number_and_choice_feedback(monkeypatch):
    monkeypatch.setattr(quiz, "QUESTIONS", {"T.1": Number(0.229, "think of (2-m)/m", rel_tol=0.01),
                                            "T.2": Choice("b", ("x", "y", "z"), "which is the new batch's weight?",
                                                          {"a": "That is the decay form."})})
    assert quiz.feedback("T.1", None)[0] is None
    assert quiz.feedback("T.1", 0.23)[0] is True
    correct, message = quiz.feedback("T.1", 0.5)
    assert correct is False and "Hint" in message and "0.229" not in message
    assert quiz.feedback("T.1", "abc") == (False, "T.1: expected a number, got str.")
    assert quiz.feedback("T.2", " B ")[0] is True
    monkeypatch.setitem(quiz.QUESTIONS, "T.3", Choice("bc", ("x", "y", "z"), "h"))
    for spelling in ("bc", "c, b", "b,c", "B C"):
        assert quiz.feedback("T.3", spelling)[0] is True, spelling
    correct, message = quiz.feedback("T.2", "a")
    assert correct is False and "decay form" in message
    assert "expected one of the letters 'abc'" in quiz.feedback("T.2", 3)[1]
    with pytest.raises(KeyError, match="unknown question"):
        quiz.feedback("T.9", 1)


def test_check_prints_feedback(capsys, monkeypatch):
    monkeypatch.setattr(quiz, "QUESTIONS", {"T.1": Number(2.0, "h")})
    assert quiz.check("T.1", 2) is True
    assert "correct" in capsys.readouterr().out


def test_question_bank_loads_and_accepts_its_own_answers():
    bank = quiz._load_questions()
    for question_id, question in bank.items():
        answer = question.value if isinstance(question, Number) else question.correct
        assert question.accepts(answer), question_id
        if isinstance(question, Choice):
            assert set(question.correct) <= {chr(ord("a") + i) for i in range(len(question.options))}, question_id
