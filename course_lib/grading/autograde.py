"""Grade a whole class with one command, offline: ``python -m course_lib.grading.autograde SUBMISSIONS GRADES.csv``.

``SUBMISSIONS/<student_id>/<assignment>/<notebook>.ipynb`` is nbgrader's submitted layout (what
``nbgrader collect`` or a download from the LMS gives, one folder per student). The result:

* ``GRADES.csv``: one row per submission -- ``student_id, assignment, notebook, score, max_score, late_penalty,
  timestamp, status, reason, seconds`` (score after the late penalty; timestamp: the submission time from nbgrader's
  ``timestamp.txt``, ISO in UTC, or empty; status: graded, blank, invalid, kernel_died, timeout, error; the reason
  says why points are missing);
* with ``--totals``: one row per student for the LMS (:func:`course_lib.grading.gradebook.write_totals`);
* with a course gradebook (``--gradebook URL``, default ``<course-dir>/gradebook.db`` when it exists): due dates and
  extensions are read from it -- each submission's throw-away gradebook gets them and its ``timestamp.txt``, so
  nbgrader's ``AssignLatePenalties`` applies the course's ``LateSubmissionPlugin`` -- and every result is recorded
  in it (:class:`course_lib.grading.gradebook.CourseGradebook`), the autograded notebooks copied to
  ``--autograded`` (default ``<course-dir>/autograded``);
* per-student feedback, ``FEEDBACK/<student_id>/<assignment>/<notebook>.html``, without the hidden tests;
* ``GRADES.log``: nbgrader's log for submissions that could not be graded.

Each submission is graded by nbgrader's Python API in a worker process (2 by default, ``--workers``; or Dask
workers with ``--dask [tcp://host:port]``, :mod:`course_lib.grading.dask_pool`), in its own
temporary copy of the course (masters + a gradebook built once per run), so one bad submission never stops the
batch; ``course_lib.grading.steps`` repairs what students hand in and guards the test cells. The student's code
runs in a kernel inside a bubblewrap sandbox (:mod:`course_lib.grading.sandbox`): it sees no course folder, gradebook,
CSV or other submission, has no network, and everything it started dies with it. Without bubblewrap the command
refuses to grade unless ``--no-sandbox`` is given.

Grader state lives in this process only: the CSV gains a row (flushed to disk) as each submission finishes, so an
interrupted run loses nothing graded; ``--resume`` skips the submissions that already have a row. A worker that
dies costs only the submission it was grading, which is retried once in a fresh worker; the pool stays at full
width. At the end the CSV is rewritten sorted. The command prints one line per submission and a summary, and
exits with 0 when every submission got a row (even with a score of 0), non-zero only when grading could not run
at all.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import html
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from course_lib.grading.release import build_course, find_assignments, load_course_config, nbgrader_environment

__all__ = ["Submission", "find_submissions", "grade_class", "main", "CSV_COLUMNS"]

CSV_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "hand_graded_points", "late_penalty",
               "timestamp", "status", "reason", "seconds"]
_OLD_CSV_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "status", "reason", "seconds"]
SUBMISSION_FILES = ("timestamp.txt", "submission_secret.txt")  # what nbgrader's submit/collect put next to notebooks
_INTERNAL_STUDENT = "student"  # every submission is graded alone, under this id, in its own course copy


@dataclass
class Submission:
    """One ``<student_id>/<assignment>`` folder; ``path`` is None when it holds no usable notebook."""

    student_id: str
    assignment: str
    notebook: str
    path: str | None
    problem: str | None = None
    note: str | None = None
    timestamp: str | None = None  # the text of nbgrader's timestamp.txt (submission time), when there is one
    extras: dict[str, str] = field(default_factory=dict)  # {file name: path} of SUBMISSION_FILES in the folder


def _submission_files(folder: Path, entry: Submission) -> None:
    """Read nbgrader's ``timestamp.txt`` and ``submission_secret.txt`` of a submission folder into ``entry``.

    A timestamp nbgrader cannot parse would stop nbgrader's autograde; it is left out, and the reason says so."""
    from nbgrader.utils import parse_utc

    for name in SUBMISSION_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            entry.extras[name] = str(path)
    if "timestamp.txt" not in entry.extras:
        return
    text = Path(entry.extras["timestamp.txt"]).read_text(encoding="utf-8", errors="replace").strip()
    try:
        if parse_utc(text) is None or not text:
            raise ValueError("empty")
        entry.timestamp = text
    except (ValueError, OverflowError, TypeError):
        del entry.extras["timestamp.txt"]
        note = (f"timestamp.txt not understood ({text[:40]!r}, expected e.g. '2026-12-01 17:00:00.000000 UTC'): "
                "graded as on time")
        entry.note = f"{entry.note}; {note}" if entry.note else note


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def _loose_notebooks(student: Path, masters: dict[str, Path]) -> list[Submission]:
    """Notebooks saved directly in a student's folder, outside ``<assignment>/``: graded when the name says which."""
    by_name = {path.name: assignment for assignment, path in masters.items()}
    found = []
    for path in sorted(p for p in student.glob("*.ipynb") if _visible(p)):
        if path.name in by_name and not (student / by_name[path.name]).is_dir():
            found.append(Submission(student.name, by_name[path.name], path.stem, str(path),
                                    note=f"found {path.name} outside the folder {by_name[path.name]}/"))
        else:
            found.append(Submission(student.name, "", path.stem, None, f"notebook {path.name} is outside an "
                                    "assignment folder (expected <student_id>/<assignment>/<notebook>.ipynb)"))
    return found


def find_submissions(submissions: Path, masters: dict[str, Path]) -> list[Submission]:
    """Every ``<student_id>/<assignment>`` folder of ``submissions``, sorted, with the notebook to grade; also a
    row for what does not fit that layout, so that no student goes missing from the grades."""
    found = []
    for student in sorted(p for p in submissions.iterdir() if p.is_dir() and _visible(p)):
        folders = sorted(p for p in student.iterdir() if p.is_dir() and _visible(p))
        loose = _loose_notebooks(student, masters)
        if not folders and not loose:
            found.append(Submission(student.name, "", "", None, "empty folder: no assignment folder, no notebook"))
        found += loose
        for folder in folders:
            if folder.name not in masters:
                found.append(Submission(student.name, folder.name, "", None,
                                        f"unknown assignment {folder.name!r} (expected one of {sorted(masters)})"))
                continue
            expected = masters[folder.name].name
            notebooks = sorted(p for p in folder.glob("*.ipynb") if _visible(p))
            named = [p for p in notebooks if p.name == expected]
            entry = Submission(student.name, folder.name, expected[:-len(".ipynb")], None)
            if any(p.is_symlink() for p in named or notebooks):
                entry.problem = "the notebook is a symbolic link, not a file: hand in the notebook itself"
            elif named:
                entry.path = str(named[0])
            elif len(notebooks) == 1:
                entry.path = str(notebooks[0])
                entry.note = f"graded {notebooks[0].name} as {expected}"
            elif notebooks:
                entry.problem = f"several notebooks and none named {expected}: {[p.name for p in notebooks]}"
            else:
                entry.problem = f"no notebook in the folder (expected {expected})"
            if entry.problem is None:
                _submission_files(folder, entry)
            found.append(entry)
    return found


# ------------------------------------------------------------------------------------------------ worker

@dataclass
class _Job:
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


def _row(sub: Submission, score: float, max_score: float, status: str, reason: str, seconds: float, *,
         late_penalty: float = 0.0, timestamp: str = "", hand_graded: float = 0.0) -> dict:
    """A CSV row; ``score`` and ``max_score`` count the autograded cells, ``score`` after the late penalty
    (nbgrader's ``score - late_submission_penalty``); ``hand_graded_points``: the points of the written answers,
    graded by hand in formgrader (they reach the course gradebook and the totals, not this row)."""
    return {"student_id": sub.student_id, "assignment": sub.assignment, "notebook": sub.notebook,
            "score": round(score, 4), "max_score": round(max_score, 4), "hand_graded_points": round(hand_graded, 4),
            "late_penalty": round(late_penalty, 4),
            "timestamp": timestamp, "status": status, "reason": reason, "seconds": round(seconds, 1)}


def _error_row(job: _Job, reason: str) -> dict:
    """The row of a submission that could not be graded at all (its grading process died)."""
    return _row(job.submission, 0, 0, "error", reason, 0.0)


def _write_failure_feedback(job: _Job, reason: str) -> None:
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


def _set_due_date(job: _Job, db_url: str) -> None:
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


def _course_config(job: _Job, root: Path):
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


def _grade_in_course(job: _Job, root: Path, log_lines: list[str], record: dict) -> dict:
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
        return _row(sub, 0, max_score, "invalid", f"not gradable: {error}", time.monotonic() - started,
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
        return _row(sub, 0, max_score, report.status or "error", "; ".join([reason] + notes),
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
    return _row(sub, score - penalty, max_score, status, "; ".join([reason] + notes), time.monotonic() - started,
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


def _quiet_worker() -> None:
    """Worker start: its stderr (SQLAlchemy warnings of nbgrader, kernels' start-up chatter) goes to /dev/null;
    what matters is captured by nbgrader's log and returned with each row."""
    import os
    import warnings

    warnings.filterwarnings("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _grade_job(job: _Job) -> tuple[dict, str, dict]:
    """Worker (a process of the pool or a Dask worker): grade one submission; never raises (the row says what
    went wrong). Returns (row, log, record); ``record`` is empty unless nbgrader graded the notebook."""
    sub, started, log_lines, record = job.submission, time.monotonic(), [], {}
    if sub.path is None:
        _write_failure_feedback(job, sub.problem or "no notebook")
        return _row(sub, 0, 0, "invalid", sub.problem or "no notebook", 0.0), "", record
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            root = Path(tmp) / "course"
            shutil.copytree(job.template, root, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
            row = _grade_in_course(job, root, log_lines, record)
    except Exception as error:  # noqa: BLE001 - a grader bug must cost one row, not the batch
        import traceback

        log_lines.append(traceback.format_exc())
        record.clear()
        row = _row(sub, 0, 0, "error", f"the grader failed on this submission: {type(error).__name__}: {error}",
                   time.monotonic() - started, timestamp=_safe_iso(sub.timestamp))
    if row["status"] not in ("graded", "blank"):
        _write_failure_feedback(job, row["reason"])
    return row, "\n".join(line for line in log_lines if line), record


def _safe_iso(text: str | None) -> str:
    try:
        return iso_timestamp(text)
    except Exception:  # noqa: BLE001 - only for an error row
        return ""


# ----------------------------------------------------------------------------------------------- the batch

def _worker(conn) -> None:
    """A grading worker: grades the jobs it receives one at a time until it receives None."""
    _quiet_worker()
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(_grade_job(job))


def _run_pool(jobs: list[_Job], workers: int, emit) -> None:
    """Grade ``jobs`` on ``workers`` processes, calling ``emit(job, row, log, record)`` in this process as each
    finishes.

    A worker that dies (out of memory, killed) costs only the job it was grading: that job is retried once in a
    fresh worker, then gets an error row; a new worker takes the dead one's place, so the pool keeps its width.
    """
    context = multiprocessing.get_context("spawn")
    pending, tries, busy, idle = deque(jobs), {}, {}, []

    def start_worker():
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        return process, parent

    idle += [start_worker() for _ in range(max(1, min(workers, len(jobs))))]
    try:
        while pending or busy:
            while idle and pending:
                process, conn = idle.pop()
                job = pending.popleft()
                conn.send(job)
                busy[conn] = (process, job)
            ready = wait([*busy, *(process.sentinel for process, _ in busy.values())])
            for conn, (process, job) in list(busy.items()):
                if conn not in ready and process.sentinel not in ready:
                    continue
                try:
                    row, log, record = conn.recv()
                except (EOFError, OSError):  # the worker died with this job
                    del busy[conn]
                    conn.close()
                    process.join()
                    tries[id(job)] = tries.get(id(job), 0) + 1
                    if tries[id(job)] < 2:
                        pending.appendleft(job)
                    else:
                        emit(job, _row(job.submission, 0, 0, "error", "the grading process died twice on this "
                                       f"submission (exit code {process.exitcode})", 0.0), "", {})
                    idle.append(start_worker())
                    continue
                del busy[conn]
                idle.append((process, conn))
                emit(job, row, log, record)
    finally:  # idle workers are told to stop; busy ones (only after an exception, e.g. Ctrl-C) are killed
        for process, conn in idle:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process, _ in busy.values():
            process.kill()
        for process in [p for p, _ in idle] + [p for p, _ in busy.values()]:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _row_key(row: dict) -> tuple[str, str, str]:
    return row["student_id"], row["assignment"], row["notebook"]


def _sub_key(sub: Submission) -> tuple[str, str, str]:
    return sub.student_id, sub.assignment, sub.notebook


def _read_rows(grades_csv: Path) -> list[dict]:
    """The complete rows of an existing CSV (a row cut short by a kill is dropped: it is graded again)."""
    if not grades_csv.is_file():
        return []
    with grades_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames == _OLD_CSV_COLUMNS:
            raise ValueError(f"{grades_csv} was written before late penalties were graded: it has no columns "
                             f"late_penalty and timestamp (expected {CSV_COLUMNS}); its rows are not after penalty, "
                             "so they cannot be resumed -- grade again into a new CSV (without --resume)")
        if reader.fieldnames != CSV_COLUMNS:
            raise ValueError(f"{grades_csv} is not a grades CSV of this course (columns {reader.fieldnames}, "
                             f"expected {CSV_COLUMNS}); not resuming from it")
        return [row for row in reader if None not in row.values() and None not in row]


def _write_csv(grades_csv: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``grades_csv`` atomically (a temporary file renamed over it)."""
    grades_csv.parent.mkdir(parents=True, exist_ok=True)
    partial = grades_csv.with_name(f".{grades_csv.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, grades_csv)


def grade_class(course_dir: Path, submissions: Path, grades_csv: Path, feedback_dir: Path, *, workers: int = 2,
                timeout: int = 30, notebook_timeout: int = 300, sandbox: bool = True, resume: bool = False,
                gradebook: str | None = None, autograded_dir: Path | None = None, totals: Path | None = None,
                dask: str | None = None, out=sys.stdout) -> list[dict]:
    """Grade every submission; write the CSV row by row (and the log next to it); return the rows.

    ``sandbox``: run the kernels in bubblewrap (raises ``course_lib.grading.sandbox.SandboxUnavailable`` when it is
    missing). ``resume``: keep the rows of an existing ``grades_csv`` and grade only the other submissions.
    ``gradebook``: URL of the course's nbgrader gradebook: due dates and extensions are read from it, and every
    result graded now is recorded in it (None: no course gradebook; see :func:`~course_lib.grading.gradebook.
    course_gradebook_url` for the command line's default). ``autograded_dir``: copy each autograded notebook (and
    timestamp.txt) to ``<autograded_dir>/<student>/<assignment>/``. ``totals``: write the per-student LMS table there.
    ``dask``: None (the local pool), ``"local"`` (a Dask LocalCluster of ``workers`` processes) or a scheduler
    address (``tcp://host:port``).
    """
    from course_lib.grading import gradebook as course_gradebook

    nbgrader_environment()
    if sandbox:
        from course_lib.grading.sandbox import require_bwrap

        require_bwrap()
    config = load_course_config(course_dir)
    masters = find_assignments(course_dir / config.CourseDirectory.get("source_directory", "solutions"))
    found = find_submissions(submissions, masters)
    rows: list[dict] = _read_rows(grades_csv) if resume else []
    done = {_row_key(r) for r in rows}
    todo = [s for s in found if _sub_key(s) not in done]
    if resume:
        print(f"resuming: {len(found) - len(todo)} submission(s) already in {grades_csv}, {len(todo)} to grade",
              file=out, flush=True)
    needed = sorted({s.assignment for s in todo if s.path is not None})
    course_id = config.CourseDirectory.get("course_id", "default_course")
    due, extensions = ({}, {}) if not gradebook else course_gradebook.read_due_dates(
        gradebook, course_id, sorted({(s.student_id, s.assignment) for s in todo if s.path is not None}))
    log_path = grades_csv.with_suffix(".log")
    logs: list[str] = []
    started = time.monotonic()
    _write_csv(grades_csv, rows)  # a clean file (a cut-off last line dropped) to append to
    # with an external Dask scheduler, the workers find the run's files next to the CSV (a shared file system)
    work_dir = str(grades_csv.parent) if dask not in (None, "local") else None
    book = None
    with tempfile.TemporaryDirectory(prefix=".grade-class-", dir=work_dir) as tmp, \
            grades_csv.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        template = build_course(course_dir, needed, Path(tmp) / "template") if needed else Path(tmp)
        if gradebook and needed:
            book = course_gradebook.CourseGradebook(gradebook, course_id, f"sqlite:///{template / 'gradebook.db'}")
        sandbox_lib, limits = None, {}
        if sandbox:
            from course_lib.grading.sandbox import copy_student_course_lib

            sandbox_lib = str(copy_student_course_lib(Path(tmp) / "kernel-lib"))
            limits = {"cpu_seconds": notebook_timeout + 60}
        jobs = [_Job(s, str(template), str(feedback_dir), timeout, notebook_timeout, str(course_dir), sandbox_lib,
                     limits, due.get(s.assignment), extensions.get((s.student_id, s.assignment)),
                     str(autograded_dir) if autograded_dir else None) for s in todo]

        def emit(job: _Job, row: dict, log: str, record: dict) -> None:
            rows.append(row)
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
            if book is not None:
                try:
                    book.record(row, record)
                except Exception as error:  # noqa: BLE001 - the CSV row stands; say that the gradebook lacks it
                    logs.append(f"==== {row['student_id']}/{row['assignment']}: not recorded in {book.url}: "
                                f"{type(error).__name__}: {error}\n")
                    print(f"WARNING: {row['student_id']}/{row['assignment']} not recorded in the gradebook: "
                          f"{error}", file=out, flush=True)
            if log:
                logs.append(f"==== {row['student_id']}/{row['assignment']}: {row['status']}\n{log}\n")
            print(f"[{len(rows):>{len(str(len(found)))}}/{len(found)}] {row['student_id']}/{row['assignment']}: "
                  f"{row['score']:g}/{row['max_score']:g} {row['status']} ({row['seconds']:.1f} s) {row['reason']}",
                  file=out, flush=True)

        try:
            if jobs and dask is None:
                _run_pool(jobs, workers, emit)
            elif jobs:
                from course_lib.grading.dask_pool import run_dask

                run_dask(jobs, None if dask == "local" else dask, workers, emit, _grade_job, _error_row,
                         prepare_worker=_quiet_worker)
        finally:
            if book is not None:
                book.close()
    rows.sort(key=lambda r: (r["student_id"], r["assignment"], r["notebook"]))
    _write_csv(grades_csv, rows)
    if totals is not None:
        if gradebook:  # the written answers graded by hand live there, beside the autograded scores
            course_gradebook.write_gradebook_totals(totals, gradebook, course_id, rows)
        else:
            course_gradebook.write_totals(totals, rows, course_gradebook.assignment_max_scores(masters))
    if logs:
        with log_path.open("a" if resume else "w", encoding="utf-8") as handle:
            handle.write("\n".join(logs))
    problems = sum(r["status"] not in ("graded", "blank") for r in rows)
    elapsed = time.monotonic() - started
    graded_now = [r for r in rows if _row_key(r) not in done]
    mean = sum(float(r["seconds"]) for r in graded_now) / max(len(graded_now), 1)
    where = "" if dask is None else (" on a Dask LocalCluster" if dask == "local" else f" on Dask at {dask}")
    print(f"graded {len(graded_now)} submission(s) in {elapsed:.0f} s with {workers} worker(s){where} "
          f"({mean:.1f} s per notebook on average){' in the sandbox' if sandbox else ', NOT sandboxed'}; "
          + (f"{problems} could not be graded (score 0, see the reason column"
             + (f" and {log_path}" if logs else "") + ")" if problems else "all could be graded")
          + f". Grades: {grades_csv}; feedback: {feedback_dir}"
          + (f"; totals: {totals}" if totals else "") + (f"; recorded in {gradebook}" if gradebook else ""),
          file=out, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Autograde a class of submitted notebooks into a CSV.")
    parser.add_argument("submissions", type=Path, help="folder with <student_id>/<assignment>/<notebook>.ipynb")
    parser.add_argument("grades", type=Path, help="CSV file to write")
    parser.add_argument("--feedback", type=Path, default=None,
                        help="folder for the feedback HTML (default: 'feedback' next to the CSV)")
    parser.add_argument("--course-dir", type=Path, default=Path.cwd(),
                        help="folder with nbgrader_config.py and solutions/ (default: current folder)")
    parser.add_argument("--workers", type=int, default=2, help="parallel grading processes (default 2)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py)")
    parser.add_argument("--notebook-timeout", type=int, default=None, help="seconds per notebook in total")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in GRADES and grade only the submissions without one")
    parser.add_argument("--gradebook", default=None, metavar="URL",
                        help="the course's nbgrader gradebook: due dates and extensions come from it, results are "
                             "recorded in it (default: sqlite:///<course-dir>/gradebook.db if that file exists)")
    parser.add_argument("--autograded", type=Path, default=None, metavar="DIR",
                        help="copy each autograded notebook to DIR/<student>/<assignment>/ (nbgrader's autograded/; "
                             "default: <course-dir>/autograded when a course gradebook is used)")
    parser.add_argument("--totals", type=Path, default=None, metavar="TOTALS.csv",
                        help="also write one row per student for the LMS: one column per assignment, total, max_total")
    parser.add_argument("--dask", nargs="?", const="local", default=None, metavar="tcp://HOST:PORT",
                        help="grade on Dask: alone, a LocalCluster of --workers processes; with an address, an "
                             "existing scheduler whose workers share this file system")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run the students' code unconfined, with your rights (only for a class you trust; "
                             "for machines without bubblewrap)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"expected a folder of submissions, got {str(args.submissions)!r}")
    course_dir = args.course_dir.resolve()
    config = load_course_config(course_dir)
    timeout = args.timeout or int(config.Execute.get("timeout", 30))
    notebook_timeout = args.notebook_timeout or int(config.GuardedExecute.get("notebook_timeout", 300))
    feedback = args.feedback or args.grades.resolve().parent / "feedback"
    from course_lib.grading.gradebook import course_gradebook_url

    gradebook = course_gradebook_url(course_dir, args.gradebook)
    autograded = args.autograded or (course_dir / config.CourseDirectory.get("autograded_directory", "autograded")
                                     if gradebook else None)
    if args.dask not in (None, "local") and "://" not in args.dask:
        parser.error(f"expected --dask alone or a scheduler address such as tcp://host:8786, got {args.dask!r}")
    try:
        grade_class(course_dir, args.submissions.resolve(), args.grades.resolve(), feedback.resolve(),
                    workers=args.workers, timeout=timeout, notebook_timeout=notebook_timeout,
                    sandbox=not args.no_sandbox, resume=args.resume, gradebook=gradebook,
                    autograded_dir=autograded.resolve() if autograded else None,
                    totals=args.totals.resolve() if args.totals else None, dask=args.dask)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"grading could not run: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
