"""The ``Example:`` sections of course_lib.norms and course_lib.functional run, and every public class has one."""
from __future__ import annotations

import doctest
import inspect

import pytest
import torch
from torch import nn

import course_lib.functional
import course_lib.norms


@pytest.mark.parametrize("module", [course_lib.norms, course_lib.functional], ids=lambda m: m.__name__)
def test_examples_run(module):
    # the examples assume `torch`, `nn` and the module's own names in scope, as PyTorch's documentation does
    result = doctest.testmod(module, verbose=False, report=True, extraglobs={"torch": torch, "nn": nn})
    assert result.attempted > 0, f"{module.__name__} has no doctest"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module.__name__} failed"


CLASSES = [n for n in course_lib.norms.__all__ if isinstance(getattr(course_lib.norms, n), type)]


@pytest.mark.parametrize("name", CLASSES)
def test_every_public_class_documents_shape_and_example(name):
    doc = inspect.getdoc(getattr(course_lib.norms, name)) or ""
    assert "Shape:" in doc and "Example:" in doc and ">>> " in doc, f"{name}: missing Shape:/Example: section"
