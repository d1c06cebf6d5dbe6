"""One submission on its way through nbgrader, in a worker process: a throw-away course copy with the due date,
the repaired notebook and its timestamp; nbgrader's autograde with the sandboxed, guarded kernel; the CSV row,
the cell scores for the course gradebook, the feedback page (see :mod:`course_lib.grading.autograde`)."""
from __future__ import annotations

import html
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.grading.release import load_course_config
from course_lib.grading.submissions import SUBMISSION_FILES, Submission

__all__ = ["CSV_COLUMNS", "Job", "csv_row", "error_row", "grade_job", "quiet_worker", "iso_timestamp"]

CSV_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "hand_graded_points", "late_penalty",
               "timestamp", "status", "reason", "seconds"]
_INTERNAL_STUDENT = "student"  # every submission is graded alone, under this id, in its own course copy




@dataclass
class Job:
    submission: Submission
    template: str  # course folder with source/, release/ and gradebook.db
    feedback_dir: str
    timeout: int
    notebook_timeout: int
    course_dir: str
    sandbox_lib: str | None = None  # the copy of course_lib for sandboxed kernels; None: --no-sandbox
    limits: dict = field(default_factory=dict)  # course_lib.grading.sandbox.Limits fields
    duedate: str | None = None  # ISO date (UTC) of the assignment in the course's gradebook
    extension_seconds: float | None = None  # this student's extension in the course's gradebook
    autograded_dir: str | None = None  # where to copy the autograded notebook (<dir>/<student>/<assignment>/)
    fork_server: bool = True  # kernels forked from a warm sandbox per worker (course_lib.grading.forkserver)


def csv_row(sub: Submission, score: float, max_score: float, status: str, reason: str, seconds: float, *,
         late_penalty: float = 0.0, timestamp: str = "", hand_graded: float = 0.0) -> dict:
    """A CSV row; ``score`` and ``max_score`` count the autograded cells, ``score`` after the late penalty
    (nbgrader's ``score - late_submission_penalty``); ``hand_graded_points``: the points of the written answers,
    graded by hand in formgrader (they reach the course gradebook and the totals, not this row)."""
    return {"student_id": sub.student_id, "assignment": sub.assignment, "notebook": sub.notebook,
            "score": round(score, 4), "max_score": round(max_score, 4), "hand_graded_points": round(hand_graded, 4),
            "late_penalty": round(late_penalty, 4),
            "timestamp": timestamp, "status": status, "reason": reason, "seconds": round(seconds, 1)}


def error_row(job: Job, reason: str) -> dict:
    """The row of a submission that could not be graded at all (its grading process died)."""
    return csv_row(job.submission, 0, 0, "error", reason, 0.0)


def _write_failure_feedback(job: Job, reason: str) -> None:
    sub = job.submission
    target = Path(job.feedback_dir) / sub.student_id / sub.assignment / f"{sub.notebook or 'submission'}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(sub.assignment)}"
                      f"</title></head><body><h1>{html.escape(sub.assignment)}: not graded (score 0)</h1>"
                      f"<p>{html.escape(reason)}</p><p>Fix this, run <em>Kernel &rarr; Restart &amp; Run All</em> "
                      "and check that every cell runs, then hand in again if your course allows it.</p>"
                      "</body></html>\n", encoding="utf-8")


def iso_timestamp(value) -> str:
    """A submission time (nbgrader's timestamp text, or the gradebook's naive UTC datetime) as ISO 8601 in UTC."""
    import datetime

    from nbgrader.utils import parse_utc

    if value is None or value == "":
        return ""
    moment = parse_utc(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat()


def _is_hand_graded(grade_cell) -> bool:
    """A written answer: a graded markdown cell, which nbgrader never scores (formgrader does, by hand)."""
    return grade_cell.cell_type == "markdown"


def _max_scores(notebook) -> tuple[float, float]:
    """``(autograded points, hand-graded points)`` of a gradebook notebook."""
    hand = sum(float(c.max_score) for c in notebook.grade_cells if _is_hand_graded(c))
    return float(notebook.max_score) - hand, hand


def _graded_result(gradebook, assignment: str, notebook: str) -> dict:
    """What nbgrader recorded for the graded notebook: autograded score and max score (written answers apart, as
    ``hand_graded``), late penalty, submission time, failed test cells (``"grade_id (0/2)"``), and each cell's
    grade for the course's gradebook."""
    nb = gradebook.find_submission_notebook(notebook, assignment, _INTERNAL_STUDENT)
    auto = [g for g in nb.grades if not _is_hand_graded(g.cell)]
    failed = [f"{g.name} ({g.score:g}/{g.max_score:g})" for g in auto if (g.score or 0) < g.max_score]
    grades = [{"name": g.name, "auto_score": g.auto_score, "needs_manual_grade": bool(g.needs_manual_grade)}
              for g in nb.grades]
    max_score, hand_graded = _max_scores(nb.notebook)
    return {"score": float(sum(g.score or 0.0 for g in auto)), "max_score": max_score, "hand_graded": hand_graded,
            "failed": failed, "grades": grades,
            "late_penalty": float(nb.late_submission_penalty or 0.0),
            "timestamp": iso_timestamp(nb.assignment.timestamp), "seconds_late": nb.assignment.total_seconds_late}


def _set_due_date(job: Job, db_url: str) -> None:
    """Put the course gradebook's due date (and this student's extension) into the copy's gradebook, where
    nbgrader's autograde and ``AssignLatePenalties`` look for them."""
    import datetime

    from nbgrader.api import Gradebook

    if job.duedate is None:
        return
    with Gradebook(db_url) as gradebook:
        gradebook.update_or_create_assignment(job.submission.assignment, duedate=job.duedate)
        if job.extension_seconds:
            gradebook.update_or_create_student(_INTERNAL_STUDENT)
            gradebook.update_or_create_submission(job.submission.assignment, _INTERNAL_STUDENT,
                                                  extension=datetime.timedelta(seconds=job.extension_seconds))


def _course_config(job: Job, root: Path):
    """The course's nbgrader configuration, pointed at the temporary course ``root`` and its gradebook."""
    config = load_course_config(Path(job.course_dir))
    for trait, folder in (("source_directory", "source"), ("release_directory", "release"),
                          ("submitted_directory", "submitted"), ("autograded_directory", "autograded"),
                          ("feedback_directory", "feedback")):
        setattr(config.CourseDirectory, trait, folder)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.NbGraderAPI.log_level = "ERROR"
    config.Execute.timeout = job.timeout
    config.GuardedExecute.notebook_timeout = job.notebook_timeout
    config.GuardedExecute.sandbox = bool(job.sandbox_lib)
    config.GenerateFeedback.exporter_class = "course_lib.grading.steps.FeedbackExporter"
    if job.sandbox_lib:
        config.SandboxedKernelManager.lib_dir = job.sandbox_lib
        config.SandboxedKernelManager.state_dir = str(root.parent)  # the job's temporary folder (short path)
        config.SandboxedKernelManager.limits = job.limits
        config.SandboxedKernelManager.fork_server = job.fork_server
    return config


def _execution_notes(report, timeout: int) -> list[str]:
    """What the guarded execution did that the instructor should know (see autograde_steps.ExecutionReport)."""
    notes = []
    if report.restored:
        shown = sorted(set(report.restored))
        notes.append(f"restored {len(shown)} redefined name(s) before the tests: {', '.join(shown)}")
    if report.refused_cells:
        notes.append(f"tests not run because the grading machinery was changed: {', '.join(report.refused_cells)}")
    if report.interrupted_cells:
        notes.append(f"interrupted after {timeout} s: {', '.join(report.interrupted_cells)}")
    return notes


def _grade_in_course(job: Job, root: Path, log_lines: list[str], record: dict) -> dict:
    """Repair, autograde and write feedback for ``job`` in the course copy ``root``; returns the CSV row and fills
    ``record`` with what nbgrader recorded (see :func:`_graded_result`) when the notebook could be graded."""
    import nbformat
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from course_lib.grading.steps import GuardedExecute, InvalidSubmission, repair_submission

    sub, started = job.submission, time.monotonic()
    config = _course_config(job, root)
    _set_due_date(job, config.CourseDirectory.db_url)
    with Gradebook(config.CourseDirectory.db_url) as gradebook:
        max_score, hand_graded = _max_scores(gradebook.find_notebook(sub.notebook, sub.assignment))
    release = nbformat.read(root / "release" / sub.assignment / f"{sub.notebook}.ipynb", as_version=4)
    try:
        repaired = repair_submission(Path(sub.path).read_bytes(), release)
    except InvalidSubmission as error:
        return csv_row(sub, 0, max_score, "invalid", f"not gradable: {error}", time.monotonic() - started,
                    timestamp=iso_timestamp(sub.timestamp), hand_graded=hand_graded)
    target = root / "submitted" / _INTERNAL_STUDENT / sub.assignment / f"{sub.notebook}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(repaired.notebook, target)
    for name, path in sub.extras.items():  # nbgrader reads timestamp.txt itself and carries both to the feedback
        shutil.copyfile(path, target.parent / name)

    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    result = api.autograde(sub.assignment, _INTERNAL_STUDENT, force=True, create=True)
    report = GuardedExecute.last_report
    notes = ([sub.note] if sub.note else []) + repaired.notes + _execution_notes(report, job.timeout)
    if not result["success"]:
        log_lines += [result.get("log", ""), result.get("error", "")]
        reason = report.failure
        if reason is None:
            last = (result.get("error") or "").strip().splitlines()
            reason = f"nbgrader could not grade it: {last[-1] if last else 'unknown error'}"
        return csv_row(sub, 0, max_score, report.status or "error", "; ".join([reason] + notes),
                    time.monotonic() - started, timestamp=iso_timestamp(sub.timestamp), hand_graded=hand_graded)

    with Gradebook(config.CourseDirectory.db_url) as gradebook:
        result = _graded_result(gradebook, sub.assignment, sub.notebook)
    score, max_score, failed, penalty = result["score"], result["max_score"], result["failed"], result["late_penalty"]
    if repaired.unchanged and score == 0:
        status, reason = "blank", "no answer: every solution cell is as released"
    else:
        status, reason = "graded", ("all tests passed" if not failed else f"failed: {', '.join(failed)}")
    if result["hand_graded"]:
        notes.append(f"written answers ({result['hand_graded']:g} points) to grade by hand in formgrader")
    if result["seconds_late"] > 0:
        notes.append(f"late by {_duration(result['seconds_late'])}: penalty {penalty:g} (of {score:g})")
    feedback = api.generate_feedback(sub.assignment, _INTERNAL_STUDENT, force=True)
    page = root / "feedback" / _INTERNAL_STUDENT / sub.assignment / f"{sub.notebook}.html"
    if feedback["success"] and page.is_file():
        _copy_files(page.parent, Path(job.feedback_dir) / sub.student_id / sub.assignment,
                    [page.name, *SUBMISSION_FILES])
    else:
        notes.append("feedback could not be generated")
        log_lines += [feedback.get("log", ""), feedback.get("error", "")]
    if job.autograded_dir:
        _copy_files(root / "autograded" / _INTERNAL_STUDENT / sub.assignment,
                    Path(job.autograded_dir) / sub.student_id / sub.assignment,
                    [f"{sub.notebook}.ipynb", *SUBMISSION_FILES])
    record.update(result)
    return csv_row(sub, score - penalty, max_score, status, "; ".join([reason] + notes), time.monotonic() - started,
                late_penalty=penalty, timestamp=result["timestamp"], hand_graded=result["hand_graded"])


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _copy_files(source: Path, destination: Path, names: list[str]) -> None:
    """Copy the files ``names`` that exist in ``source`` into ``destination`` (created)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)


def quiet_worker() -> None:
    """Worker start: its stderr (SQLAlchemy warnings of nbgrader, kernels' start-up chatter) goes to /dev/null;
    what matters is captured by nbgrader's log and returned with each row."""
    import warnings

    warnings.filterwarnings("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def grade_job(job: Job) -> tuple[dict, str, dict]:
    """Worker (a process of the pool or a Dask worker): grade one submission; never raises (the row says what
    went wrong). Returns (row, log, record); ``record`` is empty unless nbgrader graded the notebook."""
    sub, started, log_lines, record = job.submission, time.monotonic(), [], {}
    if sub.path is None:
        _write_failure_feedback(job, sub.problem or "no notebook")
        return csv_row(sub, 0, 0, "invalid", sub.problem or "no notebook", 0.0), "", record
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            root = Path(tmp) / "course"
            shutil.copytree(job.template, root, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
            row = _grade_in_course(job, root, log_lines, record)
    except Exception as error:  # noqa: BLE001 - a grader bug must cost one row, not the batch
        import traceback

        log_lines.append(traceback.format_exc())
        record.clear()
        row = csv_row(sub, 0, 0, "error", f"the grader failed on this submission: {type(error).__name__}: {error}",
                   time.monotonic() - started, timestamp=_safe_iso(sub.timestamp))
    if row["status"] not in ("graded", "blank"):
        _write_failure_feedback(job, row["reason"])
    return row, "\n".join(line for line in log_lines if line), record


def _safe_iso(text: str | None) -> str:
    try:
        return iso_timestamp(text)
    except Exception:  # noqa: BLE001 - only for an error row
        return ""
