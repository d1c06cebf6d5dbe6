"""The grading pipeline: a small class graded end to end by ``python -m course_lib.grading.autograde``, the correct
submission of every assignment at full marks, and the pieces (checks, repairs, submission layout) on their own.

The two class runs are single tests (not module fixtures), so that pytest-xdist never grades a class twice.
"""
from __future__ import annotations

import csv
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

import course_lib.norms as cn
from course_lib import grading
from course_lib.grading.autograde import CSV_COLUMNS, find_submissions
from course_lib.grading.steps import InvalidSubmission, bound_names, repair_submission
from course_lib.grading.release import find_assignments
from grading_fixtures import submissions as S

REPO = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 10  # seconds per cell: the interrupt-swallowing loop is killed after this + nbgrader's iopub_timeout
ASSIGNMENT = "Q3"


def sandbox_flag() -> list[str]:
    """``[]`` (grade in the sandbox) where bubblewrap works, else ``["--no-sandbox"]``; with
    ``SANDBOX_TEST_REQUIRED=1`` (CI) a missing sandbox fails instead."""
    from course_lib.grading import sandbox

    try:
        sandbox.require_bwrap()
        return []
    except sandbox.SandboxUnavailable:
        if os.environ.get("SANDBOX_TEST_REQUIRED") == "1":
            raise
        return ["--no-sandbox"]


def grade(class_dir: Path, out_dir: Path) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """Run the command instructors run; return the process and the CSV rows by student_id."""
    grades = out_dir / "grades.csv"
    process = subprocess.run(
        [sys.executable, "-m", "course_lib.grading.autograde", str(class_dir), str(grades), "--workers", "2",
         "--timeout", str(CELL_TIMEOUT), "--feedback", str(out_dir / "feedback"), *sandbox_flag()],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, f"autograde exited with {process.returncode}:\n{process.stdout}\n{process.stderr}"
    with grades.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    return process, {f"{r['student_id']}/{r['assignment']}": r for r in rows}


def visible_text(html_file: Path) -> str:
    """The text a student reads in a feedback page (tags removed, entities decoded)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", html_file.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def hidden_test_lines(assignment: str) -> list[str]:
    """Distinctive lines of the master's hidden tests (long, and not also in the student version, not even as part
    of a visible line: a hidden `buffers={...},` is a prefix of a visible `buffers={...}, from_scratch=True)`)."""
    visible = "\n".join(line.strip() for cell in S.blank(assignment).cells for line in cell.source.splitlines())
    lines, hidden = [], False
    for cell in nbformat.read(S.notebook_path(S.SOLUTIONS, assignment), as_version=4).cells:
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line or "END HIDDEN TESTS" in line:
                hidden = "BEGIN" in line
            elif hidden and len(line.strip()) > 25 and line.strip() not in visible:
                lines.append(line.strip())
    return lines


A = ASSIGNMENT
CLASS = {  # student_id: submission for Q3
    "correct": lambda: S.correct(A),
    "blank": lambda: S.blank(A),
    "stub": lambda: S.stub(A),
    "biased_running_var": lambda: S.with_changes(S.correct(A), [("var * n / (n - 1)", "var")]),
    "detached_stats": lambda: S.with_changes(S.correct(A), [("mean = x.mean((0, 2, 3))",
                                                             "mean = x.mean((0, 2, 3)).detach()")]),
    "invalid_json": lambda: b'{"cells": [{"cell_type": "code", "source": "x = 1"',
    "kernel_dies": lambda: S.with_cell_after_setup(S.correct(A), S.KILL_KERNEL),
    "endless_loop": lambda: S.with_cell_after_setup(S.correct(A), S.SWALLOW_INTERRUPTS),
    "deleted_tests": lambda: S.without_test_cells(S.correct(A)),
    "edited_tests": lambda: S.with_edited_tests(S.stub(A)),
    "redefines_checks": lambda: S.with_cell_after_setup(S.stub(A), S.CHEAT),
    "ipython_transformers": lambda: S.with_cell_after_setup(S.stub(A), S.CHEAT_IPYTHON),
}


@pytest.mark.slow
def test_class_with_every_kind_of_submission(tmp_path):
    class_dir = tmp_path / "submitted"
    for student, build in CLASS.items():
        S.write_submission(class_dir, student, A, build())
    renamed = class_dir / "renamed" / A / "my copy of the exercise.ipynb"
    renamed.parent.mkdir(parents=True)
    renamed.write_text(nbformat.writes(S.correct(A)), encoding="utf-8")
    (class_dir / "lost" / "Q42").mkdir(parents=True)
    process, rows = grade(class_dir, tmp_path / "out")

    expected_keys = {f"{s}/{A}" for s in [*CLASS, "renamed"]} | {"lost/Q42"}
    assert set(rows) == expected_keys, f"one row per submission expected, got {sorted(rows)}"
    progress = [line for line in process.stdout.splitlines() if re.match(r"\[\s*\d+/\d+\] ", line)]
    assert len(progress) == len(expected_keys), process.stdout
    assert "could not be graded" in process.stdout.splitlines()[-1], process.stdout
    score = {key: float(row["score"]) for key, row in rows.items()}
    full = float(rows[f"correct/{A}"]["max_score"])
    status = {key: row["status"] for key, row in rows.items()}
    reason = {key: row["reason"] for key, row in rows.items()}
    assert full == 13.0

    assert (score[f"correct/{A}"], status[f"correct/{A}"]) == (full, "graded")
    assert reason[f"correct/{A}"] == "all tests passed; written answers (4 points) to grade by hand in formgrader"
    assert (score[f"blank/{A}"], status[f"blank/{A}"]) == (0.0, "blank") and "no answer" in reason[f"blank/{A}"]
    assert score[f"stub/{A}"] < full / 2, "a stub that returns its input earns at most partial credit"
    # eval mode is tested on its own (buffers set directly), so a wrong running_var costs the buffer cells only
    assert score[f"biased_running_var/{A}"] == full - 4, reason[f"biased_running_var/{A}"]
    for failed in ("test_bn_training", "test_bn_running_var"):
        assert failed in reason[f"biased_running_var/{A}"]
    assert "test_bn_eval" not in reason[f"biased_running_var/{A}"]
    assert "test_bn_gradients" in reason[f"detached_stats/{A}"] and score[f"detached_stats/{A}"] < full
    assert (score[f"invalid_json/{A}"], status[f"invalid_json/{A}"]) == (0.0, "invalid")
    assert "not valid JSON" in reason[f"invalid_json/{A}"]
    assert (score[f"kernel_dies/{A}"], status[f"kernel_dies/{A}"]) == (0.0, "kernel_died")
    assert (score[f"endless_loop/{A}"], status[f"endless_loop/{A}"]) == (0.0, "timeout")
    assert float(rows[f"endless_loop/{A}"]["seconds"]) < CELL_TIMEOUT + 40, "the looping kernel must be killed"
    assert score[f"deleted_tests/{A}"] == full
    assert "restored deleted read-only cells: setup, test_bn_structure" in reason[f"deleted_tests/{A}"]
    assert score[f"renamed/{A}"] == full and "graded my copy of the exercise.ipynb" in reason[f"renamed/{A}"]
    for cheat in ("edited_tests", "redefines_checks", "ipython_transformers"):
        assert score[f"{cheat}/{A}"] == score[f"stub/{A}"], f"{cheat}: no credit beyond the stub's: {reason}"
    assert "restored" in reason[f"redefines_checks/{A}"] and "torch.allclose" in reason[f"redefines_checks/{A}"]
    assert status["lost/Q42"] == "invalid" and "unknown assignment" in reason["lost/Q42"]

    feedback = tmp_path / "out" / "feedback"
    secret = hidden_test_lines(A)
    assert secret, "the master has hidden tests"
    for key in rows:
        student, assignment = key.split("/")
        pages = list((feedback / student / assignment).glob("*.html"))
        assert len(pages) == 1, f"one feedback page per submission expected for {key}, got {pages}"
        text = visible_text(pages[0])
        assert not [line for line in secret if line in text], f"hidden tests leak into {key}'s feedback"
    page = feedback / "correct" / A / f"{S.notebook_path(S.SOLUTIONS, A).stem}.html"
    assert "check_state_dict_compatible" in visible_text(page), "the visible tests are shown (tag stripping works)"


@pytest.mark.slow
def test_correct_submission_of_every_assignment_gets_full_marks(tmp_path):
    assignments = S.assignments()
    assert assignments == [f"Q{i}" for i in range(1, 10)]
    for assignment in assignments:
        S.write_submission(tmp_path / "submitted", "perfect", assignment, S.correct(assignment))
    _, rows = grade(tmp_path / "submitted", tmp_path / "out")
    not_full = {k: (r["score"], r["max_score"], r["reason"]) for k, r in rows.items() if r["score"] != r["max_score"]}
    assert len(rows) == 9 and not not_full, f"correct submissions without full marks: {not_full}"


# ------------------------------------------------------------------------------------- the pieces, fast

def test_find_submissions_reads_the_submitted_layout(tmp_path):
    masters = find_assignments(REPO / "solutions")
    name = masters["Q1"].name
    for path in (f"ann/Q1/{name}", "ann/Q2/a.ipynb", "ann/Q2/b.ipynb", "bob/Q1/anything.ipynb",
                 "bob/.ipynb_checkpoints/x.ipynb"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    (tmp_path / "bob" / "Q3").mkdir()
    (tmp_path / "bob" / "homework").mkdir()
    (tmp_path / "cid").mkdir()
    (tmp_path / "dee").mkdir()
    (tmp_path / "dee" / masters["Q5"].name).write_text("{}")
    (tmp_path / "dee" / "notes.ipynb").write_text("{}")
    found = {(s.student_id, s.assignment): s for s in find_submissions(tmp_path, masters)}
    assert set(found) == {("ann", "Q1"), ("ann", "Q2"), ("bob", "Q1"), ("bob", "Q3"), ("bob", "homework"),
                          ("cid", ""), ("dee", "Q5"), ("dee", "")}
    assert "empty folder" in found["cid", ""].problem and "outside an assignment folder" in found["dee", ""].problem
    assert found["dee", "Q5"].path.endswith(masters["Q5"].name) and "outside the folder Q5/" in found["dee", "Q5"].note
    assert found["ann", "Q1"].path.endswith(name) and found["ann", "Q1"].problem is None
    assert "several notebooks" in found["ann", "Q2"].problem
    assert found["bob", "Q1"].note == f"graded anything.ipynb as {name}"
    assert "no notebook" in found["bob", "Q3"].problem
    assert "unknown assignment" in found["bob", "homework"].problem


def test_repair_restores_deleted_read_only_cells_in_place():
    release = S.blank("Q3")
    damaged = S.without_test_cells(S.correct("Q3"))
    damaged.cells[1].metadata["nbgrader"] = {"grade": True, "grade_id": "made_up", "points": 5}
    repaired = repair_submission(nbformat.writes(damaged).encode(), release)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in repaired.notebook.cells]
    expected = [c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells]
    assert [i for i in ids if i] == [i for i in expected if i]
    assert "made_up" not in ids and any("unknown grade_id 'made_up'" in n for n in repaired.notes)
    assert not repaired.unchanged and repair_submission(nbformat.writes(release).encode(), release).unchanged


@pytest.mark.parametrize("raw, message", [
    (b"\x89PNG\r\n", "not UTF-8"), (b"{\"cells\": [", "not valid JSON"), (b"[1, 2]", "not a Jupyter notebook")])
def test_repair_refuses_what_is_not_a_notebook(raw, message):
    with pytest.raises(InvalidSubmission, match=message):
        repair_submission(raw, S.blank("Q1"))


def test_bound_names_lists_what_a_setup_cell_binds():
    source = ("import math\nimport torch.nn as tnn\nfrom course_lib import grading, norms as cn\n"
              "x, (y, z) = 1, (2, 3)\ndef f():\n    hidden = 1\nclass K: pass")
    assert bound_names(source) == ["math", "tnn", "grading", "cn", "x", "y", "z", "f", "K"]
    assert bound_names("%matplotlib inline") == []


def test_check_tensor_names_the_classic_mistake():
    expected, biased = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0])
    with pytest.raises(AssertionError, match=r"running_var: max abs difference .* Yours matches the biased one"):
        grading.check_tensor(biased, expected, "running_var", mistakes={"the biased one": biased})
    with pytest.raises(AssertionError, match="expected shape"):
        grading.check_tensor(torch.ones(3), expected, "x")
    grading.check_tensor(expected + 1e-7, expected, "x")


def test_check_tensor_refuses_tensor_subclasses():
    class AlwaysClose(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return torch.tensor(False) if func.__name__ in ("__gt__", "gt") else super().__torch_function__(
                func, types, args, kwargs)

    with pytest.raises(AssertionError, match="expected a torch.Tensor, got AlwaysClose"):
        grading.check_tensor(torch.zeros(2).as_subclass(AlwaysClose), torch.ones(2), "output")


def test_check_layer_accepts_a_correct_layer_and_explains_a_wrong_one():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 2, 2, generator=gen) for _ in range(2)]
    buffers = {"running_mean": "running_mean", "running_var": "running_var"}
    grading.check_layer(cn.BatchNorm2d(3), nn.BatchNorm2d(3), batches, "BatchNorm2d", buffers=buffers,
                        stat_dims=(0, 2, 3), eval_input=batches[0], extra_mistakes=grading.BatchNormRunningMistakes())

    class BiasedRunningVar(nn.BatchNorm2d):
        def forward(self, x):
            out = super().forward(x)
            if self.training:
                with torch.no_grad():  # undo the unbiased update, redo it with the biased variance
                    n = x.numel() // x.shape[1]
                    var = x.var((0, 2, 3), correction=0)
                    self.running_var.sub_(self.momentum * var * n / (n - 1)).add_(self.momentum * var)
            return out

    with pytest.raises(AssertionError, match=r"running_var.*biased\* batch variance"):
        grading.check_layer(BiasedRunningVar(3), nn.BatchNorm2d(3), batches, "BatchNorm2d", buffers=buffers,
                            grads=False, extra_mistakes=grading.BatchNormRunningMistakes())


def test_check_layer_explains_detached_statistics_and_identity_stubs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64)

    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(2))

        def forward(self, x):
            mean = x.mean((0, 2, 3), keepdim=True).detach()
            var = x.var((0, 2, 3), keepdim=True, correction=0).detach()
            return (x - mean) / torch.sqrt(var + 1e-5) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    reference = nn.BatchNorm2d(2, track_running_stats=False).double()
    with pytest.raises(AssertionError, match="gradients must flow through the mean and the variance"):
        grading.check_layer(Detached().double(), reference, [x], "BN", stat_dims=(0, 2, 3))
    identity = Detached().double()
    identity.forward = lambda x: x
    with pytest.raises(AssertionError, match="returns its input unchanged"):
        grading.check_layer(identity, reference, [x], "BN", stat_dims=(0, 2, 3), grads=False)


def test_check_from_scratch_catches_library_normalization():
    grading.check_from_scratch(lambda: (torch.randn(4) - 1).square().mean().sqrt(), "tensor operations")
    for layer in (nn.BatchNorm2d(2), cn.BatchNorm2d(2), nn.LayerNorm(3)):
        shape = (2, 2, 3) if isinstance(layer, nn.LayerNorm) else (2, 2, 3, 3)
        with pytest.raises(AssertionError, match="not from a library normalization"):
            grading.check_from_scratch(lambda: layer(torch.randn(*shape)), type(layer).__name__)
    assert nn.BatchNorm2d(2)(torch.randn(2, 2, 3, 3)).shape == (2, 2, 3, 3), "the library is restored afterwards"


def test_answer_checks():
    grading.check_option({"A", "c"}, "abcd", "q", several=True)
    grading.check_answer(["c", "a"], frozenset("ac"), "q", "why")
    with pytest.raises(AssertionError, match="exactly one of"):
        grading.check_option("e", "abcd", "q")
    with pytest.raises(AssertionError, match="not the right answer. because"):
        grading.check_answer("b", "a", "q", "because")
    grading.check_number(torch.tensor(0.0513), 0.0513, "q", rel_tol=0.01)
    for bad in (True, "19", float("nan"), None):
        with pytest.raises(AssertionError, match="expected a finite number"):
            grading.check_is_number(bad, "q")
    with pytest.raises(AssertionError, match="got 20, which is not the expected value"):
        grading.check_number(20, 19.0, "q")
    grading.check_raises(lambda: int("x"), ValueError, "int('x')", match="invalid literal")
    with pytest.raises(AssertionError, match="nothing was raised"):
        grading.check_raises(lambda: None, ValueError, "noop")
    with pytest.raises(AssertionError, match="expected no output"):
        grading.check_silent(lambda: print("dim(x_norm)"), "forward")


def test_gradebook_schema_revision_read_in_process_is_the_one_alembic_reports():
    """build_course reads the gradebook's schema revision from nbgrader's alembic scripts instead of asking an
    ``alembic heads`` subprocess (3 s); both must name the same revision, and nbgrader's function is put back."""
    import nbgrader.api

    from course_lib.grading.release import _schema_revision_in_process, nbgrader_environment

    nbgrader_environment()
    asked = nbgrader.api.get_alembic_version
    from_subprocess = asked()
    with _schema_revision_in_process():
        in_process = nbgrader.api.get_alembic_version()
    assert re.fullmatch(r"[0-9a-f]{12}", in_process), in_process
    assert in_process == from_subprocess
    assert nbgrader.api.get_alembic_version is asked


def test_feedback_exporter_compiles_once_and_renders_what_nbconvert_renders(tmp_path):
    """The feedback exporter only keeps compiled templates: its HTML equals nbconvert's HTMLExporter's, the second
    notebook is rendered from the cache, and an edited template is compiled again."""
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config

    from course_lib.grading.steps import FeedbackExporter

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Feedback"),
                                               nbformat.v4.new_code_cell("x = 1\nx")])
    config = Config()
    config.HTMLExporter.embed_images = False
    first, _ = FeedbackExporter(config=config).from_notebook_node(notebook)
    cached = len(FeedbackExporter._templates._code)
    second, _ = FeedbackExporter(config=config).from_notebook_node(notebook)
    plain, _ = HTMLExporter(config=config).from_notebook_node(notebook)
    strip_ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # uuid4() in the page
    assert strip_ids.sub("", first) == strip_ids.sub("", second) == strip_ids.sub("", plain)
    assert cached > 0 and len(FeedbackExporter._templates._code) == cached

    template = tmp_path / "page.j2"
    template.write_text("one {{ nb.cells | length }}", encoding="utf-8")
    edited = Config()
    edited.HTMLExporter.template_file = str(template)
    assert FeedbackExporter(config=edited).from_notebook_node(notebook)[0] == "one 2"
    template.write_text("two {{ nb.cells | length }}", encoding="utf-8")
    assert FeedbackExporter(config=edited).from_notebook_node(notebook)[0] == "two 2"
