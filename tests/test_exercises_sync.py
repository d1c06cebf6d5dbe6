"""exercises/ is exactly what `make release` generates from solutions/, and the masters follow the grading rules.

The rules come from nbgrader's behaviour (docs/DESIGN.md section 5): a test cell that displays a value or writes to
stderr is scored by that, so test cells only assert; every graded cell needs a stable, unique grade_id.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.release import find_assignments, release_notebooks

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"
MASTERS = find_assignments(SOLUTIONS)


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _test_cells(nb):
    return [c for c in nb.cells if _nbgrader(c).get("grade") and not _nbgrader(c).get("solution")]


def test_exercises_are_generated_from_solutions():
    generated = release_notebooks(REPO)
    committed = {p.relative_to(EXERCISES).as_posix() for p in EXERCISES.glob("*/*") if p.is_file()}
    assert committed == set(generated), (
        f"exercises/ should hold exactly {sorted(generated)}, got {sorted(committed)}: run `make release`")
    stale = [rel for rel, nb in generated.items() if nbformat.read(EXERCISES / rel, as_version=4) != nb]
    assert not stale, f"exercises/ is out of sync with solutions/ for {stale}: run `make release` and commit exercises/"


def test_one_master_per_question():
    assert sorted(MASTERS) == [f"Q{i}" for i in range(1, 10)]
    for assignment, path in MASTERS.items():
        assert path.name.startswith(f"{assignment}_"), f"{path}: expected a name starting with {assignment}_"


@pytest.mark.parametrize("assignment", sorted(MASTERS))
def test_master_follows_the_grading_rules(assignment):
    nb = nbformat.read(MASTERS[assignment], as_version=4)
    ids = [_nbgrader(c)["grade_id"] for c in nb.cells if "grade_id" in _nbgrader(c)]
    assert len(ids) == len(set(ids)), f"{assignment}: duplicated grade_id in {ids}"
    assert all(c.get("id") == _nbgrader(c)["grade_id"] for c in nb.cells if "grade_id" in _nbgrader(c)), (
        f"{assignment}: each graded cell's nbformat id should equal its grade_id (stable ids)")
    setup = [c for c in nb.cells if _nbgrader(c).get("grade_id") == "setup"]
    assert len(setup) == 1 and _nbgrader(setup[0]).get("locked"), f"{assignment}: expected one read-only setup cell"
    tests = _test_cells(nb)
    assert sum(_nbgrader(c)["points"] for c in tests) > 0
    assert any("### BEGIN HIDDEN TESTS" in c.source for c in tests), f"{assignment}: expected hidden tests"
    assert any(_nbgrader(c).get("solution") for c in nb.cells), f"{assignment}: expected solution cells"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            f"{assignment}: masters are committed without outputs ({_nbgrader(cell).get('grade_id', cell.get('id'))})")
        if cell in tests:
            grade_id = _nbgrader(cell)["grade_id"]
            body = ast.parse(cell.source).body
            assert body, f"{assignment}/{grade_id}: empty test cell"
            last = body[-1]
            assert not (isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call)), (
                f"{assignment}/{grade_id}: a test cell must not end on a bare expression (nbgrader would take the "
                "displayed value as the score)")
            assert "print(" not in cell.source, f"{assignment}/{grade_id}: test cells print nothing"
            assert "### BEGIN SOLUTION" not in cell.source
        elif "### BEGIN HIDDEN TESTS" in cell.source:
            pytest.fail(f"{assignment}: hidden tests outside a test cell ({cell.get('id')})")


# Implementation exercises without a library twin to copy (nothing in torch or course_lib does what they ask).
NO_LIBRARY_TWIN = {"batch_dependence", "freeze_batchnorm"}
GATES = ("check_own_layer", "check_own_function")


def _defined_names(source: str) -> set[str]:
    return {n.name for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def _visible_part(source: str) -> str:
    return source.split("### BEGIN HIDDEN TESTS")[0]


@pytest.mark.parametrize("assignment", sorted(MASTERS))
def test_every_implementation_test_cell_opens_with_the_from_scratch_gate(assignment):
    """A library answer must lose *all* points of its exercise: each of its test cells runs the gate first."""
    nb = nbformat.read(MASTERS[assignment], as_version=4)
    defined: set[str] = set()
    gated = 0
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("solution") and cell.cell_type == "code":  # (written answers are markdown)
            defined = _defined_names(cell.source) - NO_LIBRARY_TWIN
        elif cell in _test_cells(nb) and defined:
            first = ast.parse(cell.source).body[0]
            call = first.value if isinstance(first, ast.Expr) and isinstance(first.value, ast.Call) else None
            gate = call is not None and isinstance(call.func, ast.Attribute) and call.func.attr in GATES
            assert gate and isinstance(call.args[0], ast.Name) and call.args[0].id in defined, (
                f"{assignment}/{meta['grade_id']}: expected to open with grading.check_own_layer/check_own_function "
                f"on one of {sorted(defined)}, got {ast.get_source_segment(cell.source, first)!r}")
            gated += 1
    assert gated or assignment == "Q2", f"{assignment}: expected gated test cells"


@pytest.mark.parametrize("assignment", sorted(MASTERS))
def test_every_test_cell_checks_something_visible(assignment):
    """A cell whose tests are all hidden would 'pass' when the student runs it (README: a clean run earns points)."""
    for cell in _test_cells(nbformat.read(MASTERS[assignment], as_version=4)):
        assert ast.parse(_visible_part(cell.source)).body, (
            f"{assignment}/{_nbgrader(cell)['grade_id']}: the visible part of the test cell checks nothing")
