"""``make student-dist``: the bundle students receive holds what they need and no answer, no hidden test."""
from __future__ import annotations

import zipfile
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.student_dist import INSTRUCTOR_MODULES, NAME, build_student_dist
from grading_fixtures import submissions as S

REPO = Path(__file__).resolve().parents[1]


def regions(source: str, begin: str, end: str) -> list[str]:
    """The lines between ``begin`` and ``end`` markers of a cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            lines.append(line.strip())
    return lines


def secret_regions() -> list[tuple[str, str, list[str]]]:
    """``(assignment, kind, lines)`` for every solution and hidden-test region of the masters: its lines that the
    student version does not show (comments and blank lines left out)."""
    found = []
    for assignment in S.assignments():
        released = {line.strip() for cell in S.blank(assignment).cells for line in cell.source.splitlines()}
        for cell in nbformat.read(S.notebook_path(S.SOLUTIONS, assignment), as_version=4).cells:
            if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("solution"):
                # a written answer: the whole cell (model answer and rubric) is the instructor's
                found.append((assignment, "WRITTEN ANSWER", [line.strip() for line in cell.source.splitlines()
                                                             if line.strip() and line.strip() not in released]))
                continue
            for kind in ("SOLUTION", "HIDDEN TESTS"):
                lines = [line for line in regions(cell.source, f"BEGIN {kind}", f"END {kind}")
                         if line and not line.startswith("#") and line not in released]
                if lines:
                    found.append((assignment, kind, lines))
    return found


# The lectures teach the code the exercises ask for, so single lines (``mean = x.mean((0, 2, 3))``) recur; a
# region counts as shipped when one file holds this share of its lines (the largest share today is 0.5, a
# two-line region; 0.45 for longer ones).
SHIPPED_SHARE = 0.6


def readable_text(path: Path) -> str:
    """A file's text; for a notebook its cells' sources and text outputs (unescaped, unlike its JSON)."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8", errors="replace")
    parts = []
    for cell in nbformat.read(path, as_version=4).cells:
        parts.append(cell.source)
        for output in cell.get("outputs", []):
            parts += [str(output.get("text", "")), *map(str, output.get("data", {}).values())]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_student_dist(REPO, tmp_path_factory.mktemp("dist"))


def test_bundle_holds_what_students_need(bundle):
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for assignment in S.assignments():
        assert f"exercises/{assignment}/{S.notebook_path(S.EXERCISES, assignment).name}" in names
    assert {"README.md", "requirements-torch.lock", "requirements.lock", "pyproject.toml", "LICENSE",
            "course_lib/__init__.py", "course_lib/grading/checks.py", "course_lib/quiz.py",
            "course_lib/questions/q1.py"} <= names
    assert len([n for n in names if n.startswith("notebooks/Q") and n.endswith(".ipynb")]) == 9
    with zipfile.ZipFile(bundle.parent / f"{NAME}.zip") as archive:
        assert {n.removeprefix(f"{NAME}/") for n in archive.namelist()} == names


def test_bundle_holds_no_answer_no_hidden_test_no_grading_material(bundle):
    files = [p for p in bundle.rglob("*") if p.is_file()]
    forbidden = [p for p in files if p.suffix in (".db", ".csv") or {"solutions", "tests", "grading_fixtures",
                                                                     "source", "autograded", "feedback"} &
                 set(p.relative_to(bundle).parts) or
                 p.relative_to(bundle).as_posix().removeprefix("course_lib/") in INSTRUCTOR_MODULES]
    assert not forbidden, f"grading material in the student bundle: {forbidden}"
    texts = {p.relative_to(bundle).as_posix(): readable_text(p) for p in files}
    shipped = []
    for assignment, kind, lines in secret_regions():
        share, name = max((sum(line in text for line in lines) / len(lines), name) for name, text in texts.items())
        if share >= SHIPPED_SHARE:
            shipped.append(f"{assignment} {kind} ({len(lines)} lines, {share:.0%} in {name}): {lines[:3]}")
    assert len(secret_regions()) > 40, "the masters' regions were found (else this test checks nothing)"
    assert not shipped, "solution or hidden-test code in the student bundle:\n" + "\n".join(shipped)
    markers = [name for name, text in texts.items() if "BEGIN SOLUTION" in text or "BEGIN HIDDEN TESTS" in text]
    assert not markers, f"nbgrader markers (unreleased masters?) in {markers}"


def test_the_bundle_installs_as_a_package_with_its_questions_and_without_the_grading_tools(bundle, tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(bundle)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"course_lib/questions/q1.py", "course_lib/seed.py", "course_lib/norms/batchnorm.py",
            "course_lib/grading/checks.py", "course_lib/grading/guard.py"} <= names
    assert not {f"course_lib/{m}" for m in INSTRUCTOR_MODULES} & names
