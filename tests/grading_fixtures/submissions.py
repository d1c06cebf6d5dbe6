"""The notebooks a real class hands in, built from solutions/ (masters) and exercises/ (student versions).

Each builder returns a notebook (or raw bytes) for one assignment; :func:`write_submission` puts it at
``<class>/<student_id>/<assignment>/<notebook>.ipynb``, nbgrader's submitted layout. Used by
``tests/test_grading.py`` and to measure the grading throughput.
"""
from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"

# Redefines what the tests rely on (numpy, torch, course_lib.grading, the setup cell's names, IPython).
CHEAT = '''\
import numpy, torch, course_lib.grading
from torch import nn
torch.allclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
numpy.allclose = lambda *args, **kwargs: True
for _name in dir(course_lib.grading):
    if _name.startswith("check"):
        setattr(course_lib.grading, _name, lambda *args, **kwargs: None)
course_lib.grading.check_tensor.__code__ = (lambda *args, **kwargs: None).__code__
class _AnyGrading:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None
grading = _AnyGrading()
nn.BatchNorm2d.forward = lambda self, x: x
'''

# Rewrites every later cell: asserts and calls disappear before they run.
CHEAT_IPYTHON = '''\
import ast
class _DropEverything(ast.NodeTransformer):
    def visit_Module(self, node):
        node.body = [ast.Pass()]
        return node
get_ipython().ast_transformers.append(_DropEverything())
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
'''

KILL_KERNEL = "import os\nos._exit(1)"

# Swallows the interrupt nbclient sends after the cell timeout, so only killing the kernel stops it.
SWALLOW_INTERRUPTS = '''\
import time
while True:
    try:
        while True:
            time.sleep(0.01)
    except BaseException:
        pass
'''


def notebook_path(root: Path, assignment: str) -> Path:
    (path,) = sorted((root / assignment).glob("*.ipynb"))
    return path


def assignments() -> list[str]:
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and list(p.glob("*.ipynb")))


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _is_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def blank(assignment: str) -> nbformat.NotebookNode:
    """The released exercise, untouched."""
    return nbformat.read(notebook_path(EXERCISES, assignment), as_version=4)


def correct(assignment: str) -> nbformat.NotebookNode:
    """The released exercise with every answer cell filled in from the master (what a perfect student hands in)."""
    master = nbformat.read(notebook_path(SOLUTIONS, assignment), as_version=4)
    answers = {_grade_id(c): c.source for c in master.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = blank(assignment)
    for cell in nb.cells:
        if _grade_id(cell) in answers:
            lines = answers[_grade_id(cell)].splitlines()
            markers = ("### BEGIN SOLUTION", "### END SOLUTION")
            cell.source = "\n".join(line for line in lines if line.strip() not in markers)
    return nb


def _stub_line(source: str, lineno: int) -> str:
    """What a lazy student writes instead of ``raise NotImplementedError()`` on line ``lineno``."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.lineno <= lineno <= (node.end_lineno or node.lineno):
            args = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            if node.name != "__init__" and args:
                return f"return {args[0]}"
    return "pass"


def stub(assignment: str) -> nbformat.NotebookNode:
    """Every ``raise NotImplementedError()`` replaced by "return the first argument" (or ``pass``)."""
    nb = blank(assignment)
    for cell in nb.cells:
        if cell.cell_type != "code" or "raise NotImplementedError()" not in cell.source:
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "raise NotImplementedError()":
                indent = line[: len(line) - len(line.lstrip())]
                lines[i] = indent + _stub_line(cell.source, i + 1)
        cell.source = "\n".join(lines)
    return nb


def with_cell_after_setup(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` with a student code cell inserted right after the read-only setup cell."""
    nb = copy.deepcopy(nb)
    at = next(i for i, c in enumerate(nb.cells) if _grade_id(c) == "setup") + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(source))
    return nb


def without_test_cells(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy without its test cells and without the setup cell (deleted by the student)."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if not _is_test(c) and _grade_id(c) != "setup"]
    return nb


def with_edited_tests(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy whose test cells pass trivially, claim 100 points and are marked as answers; one id renamed."""
    nb = copy.deepcopy(nb)
    tests = [c for c in nb.cells if _is_test(c)]
    for cell in tests:
        cell.source = "pass"
        cell.metadata["nbgrader"]["points"] = 100
        cell.metadata["nbgrader"]["locked"] = False
    tests[0].metadata["nbgrader"]["grade_id"] += "_renamed"
    return nb


def with_changes(nb: nbformat.NotebookNode, replacements: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A copy with text replaced in the answer cells (a plausible bug); each old text must occur."""
    nb = copy.deepcopy(nb)
    for old, new in replacements:
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source and not _is_test(c)]
        if not hits:
            raise ValueError(f"expected {old!r} in an answer cell, got none")
        for cell in hits:
            cell.source = cell.source.replace(old, new)
    return nb


def write_submission(root: Path, student_id: str, assignment: str, content) -> Path:
    """Write a notebook (or raw bytes) as ``<root>/<student_id>/<assignment>/<master's notebook name>``."""
    path = root / student_id / assignment / notebook_path(SOLUTIONS, assignment).name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content, indent=1), encoding="utf-8")
    return path
