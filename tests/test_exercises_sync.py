"""exercises/ is exactly what `make release` generates from solutions/, and the masters follow the grading rules.

The rules come from nbgrader's behaviour (DESIGN.md section 5): a test cell that displays a value or writes to
stderr is scored by that, so test cells only assert; every graded cell needs a stable, unique grade_id.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from course_lib.release import find_assignments, release_notebooks

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
