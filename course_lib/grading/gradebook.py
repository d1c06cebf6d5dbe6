"""The course's persistent nbgrader gradebook and the per-student totals, for ``course_lib.grading.autograde``.

Everything here runs in the grading (parent) process, never in a worker or a kernel:

* :func:`course_gradebook_url` -- which gradebook: ``--gradebook URL``, else ``<course>/gradebook.db`` if it exists;
* :func:`read_due_dates` -- each assignment's due date and each student's extension, as instructors set them with
  ``nbgrader db assignment add Q1 --duedate="2026-12-01 17:00:00 UTC"`` (or ``nbgrader db assignment import``);
  the pipeline writes them into each submission's throw-away gradebook, where nbgrader's ``AssignLatePenalties``
  and the course's ``LateSubmissionPlugin`` compute the penalty;
* :class:`CourseGradebook` -- records each graded submission (cell scores, late penalty, submission time) with
  nbgrader's Gradebook API, so that formgrader, ``nbgrader export`` and ``nbgrader release_feedback`` see it;
* :func:`assignment_max_scores`, :func:`write_totals` -- the LMS table: one row per student, one column per
  assignment (score after penalty), total and max_total.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import nbformat

__all__ = ["course_gradebook_url", "read_due_dates", "CourseGradebook", "assignment_max_scores", "write_totals",
           "write_gradebook_totals", "TOTALS_FIXED_COLUMNS"]

TOTALS_FIXED_COLUMNS = ["student_id", "total", "max_total"]  # the assignments' columns come between


def course_gradebook_url(course_dir: Path, url: str | None) -> str | None:
    """``url`` when given; else ``sqlite:///<course_dir>/gradebook.db`` when that file exists; else None."""
    if url:
        return url
    default = course_dir / "gradebook.db"
    return f"sqlite:///{default}" if default.is_file() else None


def read_due_dates(url: str, course_id: str, pairs: list[tuple[str, str]]) -> tuple[dict, dict]:
    """``({assignment: ISO due date or None}, {(student, assignment): extension in seconds})`` from the gradebook
    at ``url`` for the ``(student, assignment)`` pairs to grade (assignments not in the gradebook: no due date)."""
    from nbgrader.api import Gradebook, MissingEntry

    due, extensions = {}, {}
    with Gradebook(url, course_id) as gradebook:
        for student, assignment in pairs:
            if assignment not in due:
                try:
                    date = gradebook.find_assignment(assignment).duedate
                except MissingEntry:
                    date = None
                due[assignment] = date.isoformat() if date is not None else None
            try:
                extension = gradebook.find_submission(assignment, student).extension
            except MissingEntry:
                extension = None
            if extension:
                extensions[student, assignment] = extension.total_seconds()
    return due, extensions


class CourseGradebook:
    """The course's gradebook, open for one grading run; :meth:`record` writes one submission's result.

    An assignment the gradebook does not describe yet (only ``nbgrader db assignment add``, or nothing) gets its
    notebooks and cells copied from the run's template gradebook (what ``nbgrader generate_assignment`` records),
    so that each submission has a grade per test cell.
    """

    def __init__(self, url: str, course_id: str, template_url: str):
        from nbgrader.api import Gradebook

        self.url = url
        self._gradebook = Gradebook(url, course_id)
        self._template = Gradebook(template_url)

    def close(self) -> None:
        self._gradebook.close()
        self._template.close()

    def _ensure_structure(self, assignment: str, notebook: str) -> None:
        from nbgrader.api import MissingEntry

        gb = self._gradebook
        try:
            if gb.find_notebook(notebook, assignment).grade_cells:
                return
        except MissingEntry:
            pass
        source = self._template.find_notebook(notebook, assignment)
        gb.update_or_create_assignment(assignment)  # keeps a due date already set
        gb.update_or_create_notebook(notebook, assignment)
        for cell in source.grade_cells:
            gb.update_or_create_grade_cell(cell.name, notebook, assignment, max_score=cell.max_score,
                                           cell_type=cell.cell_type)
        for cell in source.solution_cells:
            gb.update_or_create_solution_cell(cell.name, notebook, assignment)
        for cell in source.task_cells:
            gb.update_or_create_task_cell(cell.name, notebook, assignment, max_score=cell.max_score,
                                          cell_type=cell.cell_type)
        for cell in source.source_cells:
            gb.update_or_create_source_cell(cell.name, notebook, assignment, source=cell.source,
                                            cell_type=cell.cell_type, locked=cell.locked, checksum=cell.checksum)

    def record(self, row: dict, record: dict) -> None:
        """Record one submission: the cell scores nbgrader gave (``record``, from the worker) or, for a submission
        that could not be graded (empty ``record``), 0 for every cell; the late penalty and submission time."""
        from nbgrader.api import MissingEntry

        gb = self._gradebook
        student, assignment, notebook = row["student_id"], row["assignment"], row["notebook"]
        try:
            self._template.find_notebook(notebook, assignment)
        except MissingEntry:  # unknown assignment, or a folder without a notebook: nothing nbgrader could hold
            return
        self._ensure_structure(assignment, notebook)
        gb.update_or_create_student(student)
        submission = gb.update_or_create_submission(assignment, student, timestamp=row["timestamp"] or None)
        try:
            submitted = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:  # the submission predates the notebook's structure: rebuild it
            extension = submission.extension
            gb.remove_submission(assignment, student)
            gb.add_submission(assignment, student, timestamp=row["timestamp"] or None, extension=extension)
            submitted = gb.find_submission_notebook(notebook, assignment, student)
        scores = {g["name"]: g for g in record.get("grades", [])}
        for grade in submitted.grades:
            given = scores.get(grade.name)
            grade.auto_score = given["auto_score"] if given else 0.0
            grade.needs_manual_grade = given["needs_manual_grade"] if given else False
        submitted.late_submission_penalty = record.get("late_penalty") or None
        gb.db.commit()


def assignment_max_scores(masters: dict[str, Path]) -> dict[str, float]:
    """``{assignment: points}``: the sum of the ``points`` of the master's *autograded* cells (graded code cells;
    the written answers, graded markdown cells, are scored by hand and reach only the course gradebook)."""
    scores = {}
    for assignment, path in masters.items():
        cells = nbformat.read(path, as_version=4).cells
        scores[assignment] = float(sum(float(c.metadata.get("nbgrader", {}).get("points", 0) or 0) for c in cells
                                       if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"))
    return scores


def _number(value: float) -> str:
    return f"{round(float(value), 4):g}"


def write_totals(path: Path, rows: list[dict], max_scores: dict[str, float]) -> list[dict]:
    """Write the LMS table from the grades CSV's ``rows`` and return its rows: ``student_id``, one column per
    assignment that has at least one row in ``rows`` (the sum of its notebooks' autograded scores, after penalty; 0
    when the student has no submission for it), ``total`` and ``max_total`` (the sum of those assignments'
    autograded points: without a course gradebook, written answers are not in the totals)."""
    assignments = sorted({r["assignment"] for r in rows if r["assignment"] in max_scores})
    students = sorted({r["student_id"] for r in rows})
    scores = {(s, a): 0.0 for s in students for a in assignments}
    for row in rows:
        if row["assignment"] in max_scores:
            scores[row["student_id"], row["assignment"]] += float(row["score"])
    return _write_table(path, students, assignments, scores, {a: max_scores[a] for a in assignments})


def write_gradebook_totals(path: Path, url: str, course_id: str, rows: list[dict]) -> list[dict]:
    """The LMS table from the course gradebook, for the students and assignments of ``rows``: each score as
    ``nbgrader export`` computes it -- autograded and hand-graded cells (formgrader), minus the late penalty, at
    least 0; 0 without a submission -- and ``max_total`` with the written answers' points."""
    from nbgrader.api import Gradebook, MissingEntry

    students = sorted({r["student_id"] for r in rows})
    scores, max_scores = {}, {}
    with Gradebook(url, course_id) as gradebook:
        for assignment in sorted({r["assignment"] for r in rows}):
            try:
                max_scores[assignment] = float(gradebook.find_assignment(assignment).max_score)
            except MissingEntry:  # an unknown assignment folder: nothing to count
                continue
            for student in students:
                try:
                    submission = gradebook.find_submission(assignment, student)
                except MissingEntry:
                    scores[student, assignment] = 0.0
                else:
                    penalty = submission.late_submission_penalty or 0.0
                    scores[student, assignment] = max(0.0, float(submission.score) - penalty)
    return _write_table(path, students, sorted(max_scores), scores, max_scores)


def _write_table(path: Path, students: list[str], assignments: list[str], scores: dict, max_scores: dict) -> list:
    max_total = sum(max_scores[a] for a in assignments)
    table = []
    for student in students:
        entry = {"student_id": student, **{a: _number(scores[student, a]) for a in assignments}}
        entry["total"] = _number(sum(scores[student, a] for a in assignments))
        entry["max_total"] = _number(max_total)
        table.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["student_id", *assignments, "total", "max_total"])
        writer.writeheader()
        writer.writerows(table)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return table
