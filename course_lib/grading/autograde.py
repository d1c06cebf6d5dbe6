"""Grade a whole class with one command, offline: ``python -m course_lib.grading.autograde SUBMISSIONS GRADES.csv``.

``SUBMISSIONS/<student_id>/<assignment>/<notebook>.ipynb`` is nbgrader's submitted layout (what
``nbgrader collect`` or a download from the LMS gives, one folder per student). The result:

* ``GRADES.csv``: one row per submission -- ``student_id, assignment, notebook, score, max_score, status, reason,
  seconds`` (status: graded, blank, invalid, kernel_died, timeout, error; the reason says why points are missing);
* per-student feedback, ``FEEDBACK/<student_id>/<assignment>/<notebook>.html``, without the hidden tests;
* ``GRADES.log``: nbgrader's log for submissions that could not be graded.

Each submission is graded by nbgrader's Python API in a worker process (2 by default, ``--workers``), in its own
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

CSV_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "status", "reason", "seconds"]
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


def _row(sub: Submission, score: float, max_score: float, status: str, reason: str, seconds: float) -> dict:
    return {"student_id": sub.student_id, "assignment": sub.assignment, "notebook": sub.notebook,
            "score": round(score, 4), "max_score": round(max_score, 4), "status": status, "reason": reason,
            "seconds": round(seconds, 1)}


def _write_failure_feedback(job: _Job, reason: str) -> None:
    sub = job.submission
    target = Path(job.feedback_dir) / sub.student_id / sub.assignment / f"{sub.notebook or 'submission'}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(sub.assignment)}"
                      f"</title></head><body><h1>{html.escape(sub.assignment)}: not graded (score 0)</h1>"
                      f"<p>{html.escape(reason)}</p><p>Fix this, run <em>Kernel &rarr; Restart &amp; Run All</em> "
                      "and check that every cell runs, then hand in again if your course allows it.</p>"
                      "</body></html>\n", encoding="utf-8")


def _cell_scores(gradebook, assignment: str, notebook: str) -> tuple[float, float, list[str]]:
    """Score, max score, and the failed test cells (``"grade_id (0/2)"``) of the graded notebook."""
    nb = gradebook.find_submission_notebook(notebook, assignment, _INTERNAL_STUDENT)
    failed = [f"{g.name} ({g.score:g}/{g.max_score:g})" for g in nb.grades if (g.score or 0) < g.max_score]
    return float(nb.score or 0.0), float(nb.max_score), failed


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


def _grade_in_course(job: _Job, root: Path, log_lines: list[str]) -> dict:
    """Repair, autograde and write feedback for ``job`` in the course copy ``root``; returns the CSV row."""
    import nbformat
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from course_lib.grading.steps import GuardedExecute, InvalidSubmission, repair_submission

    sub, started = job.submission, time.monotonic()
    config = _course_config(job, root)
    with Gradebook(config.CourseDirectory.db_url) as gradebook:
        max_score = float(gradebook.find_notebook(sub.notebook, sub.assignment).max_score)
    release = nbformat.read(root / "release" / sub.assignment / f"{sub.notebook}.ipynb", as_version=4)
    try:
        repaired = repair_submission(Path(sub.path).read_bytes(), release)
    except InvalidSubmission as error:
        return _row(sub, 0, max_score, "invalid", f"not gradable: {error}", time.monotonic() - started)
    target = root / "submitted" / _INTERNAL_STUDENT / sub.assignment / f"{sub.notebook}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(repaired.notebook, target)

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
                    time.monotonic() - started)

    with Gradebook(config.CourseDirectory.db_url) as gradebook:
        score, max_score, failed = _cell_scores(gradebook, sub.assignment, sub.notebook)
    if repaired.unchanged and score == 0:
        status, reason = "blank", "no answer: every solution cell is as released"
    else:
        status, reason = "graded", ("all tests passed" if not failed else f"failed: {', '.join(failed)}")
    feedback = api.generate_feedback(sub.assignment, _INTERNAL_STUDENT, force=True)
    page = root / "feedback" / _INTERNAL_STUDENT / sub.assignment / f"{sub.notebook}.html"
    if feedback["success"] and page.is_file():
        destination = Path(job.feedback_dir) / sub.student_id / sub.assignment / page.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, destination)
    else:
        notes.append("feedback could not be generated")
        log_lines += [feedback.get("log", ""), feedback.get("error", "")]
    return _row(sub, score, max_score, status, "; ".join([reason] + notes), time.monotonic() - started)


def _quiet_worker() -> None:
    """Worker start: its stderr (SQLAlchemy warnings of nbgrader, kernels' start-up chatter) goes to /dev/null;
    what matters is captured by nbgrader's log and returned with each row."""
    import os
    import warnings

    warnings.filterwarnings("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _grade_job(job: _Job) -> tuple[dict, str]:
    """Worker: grade one submission; never raises (the row says what went wrong). Returns (row, log)."""
    sub, started, log_lines = job.submission, time.monotonic(), []
    if sub.path is None:
        _write_failure_feedback(job, sub.problem or "no notebook")
        return _row(sub, 0, 0, "invalid", sub.problem or "no notebook", 0.0), ""
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            root = Path(tmp) / "course"
            shutil.copytree(job.template, root, ignore=shutil.ignore_patterns("submitted", "autograded", "feedback"))
            row = _grade_in_course(job, root, log_lines)
    except Exception as error:  # noqa: BLE001 - a grader bug must cost one row, not the batch
        import traceback

        log_lines.append(traceback.format_exc())
        row = _row(sub, 0, 0, "error", f"the grader failed on this submission: {type(error).__name__}: {error}",
                   time.monotonic() - started)
    if row["status"] not in ("graded", "blank"):
        _write_failure_feedback(job, row["reason"])
    return row, "\n".join(line for line in log_lines if line)


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
    """Grade ``jobs`` on ``workers`` processes, calling ``emit(job, row, log)`` in this process as each finishes.

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
                    row, log = conn.recv()
                except (EOFError, OSError):  # the worker died with this job
                    del busy[conn]
                    conn.close()
                    process.join()
                    tries[id(job)] = tries.get(id(job), 0) + 1
                    if tries[id(job)] < 2:
                        pending.appendleft(job)
                    else:
                        emit(job, _row(job.submission, 0, 0, "error", "the grading process died twice on this "
                                       f"submission (exit code {process.exitcode})", 0.0), "")
                    idle.append(start_worker())
                    continue
                del busy[conn]
                idle.append((process, conn))
                emit(job, row, log)
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
                out=sys.stdout) -> list[dict]:
    """Grade every submission; write the CSV row by row (and the log next to it); return the rows.

    ``sandbox``: run the kernels in bubblewrap (raises ``course_lib.grading.sandbox.SandboxUnavailable`` when it is
    missing). ``resume``: keep the rows of an existing ``grades_csv`` and grade only the other submissions.
    """
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
    log_path = grades_csv.with_suffix(".log")
    logs: list[str] = []
    started = time.monotonic()
    _write_csv(grades_csv, rows)  # a clean file (a cut-off last line dropped) to append to
    with tempfile.TemporaryDirectory(prefix="grade-class-") as tmp, \
            grades_csv.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        template = build_course(course_dir, needed, Path(tmp) / "template") if needed else Path(tmp)
        sandbox_lib, limits = None, {}
        if sandbox:
            from course_lib.grading.sandbox import copy_student_course_lib

            sandbox_lib = str(copy_student_course_lib(Path(tmp) / "kernel-lib"))
            limits = {"cpu_seconds": notebook_timeout + 60}
        jobs = [_Job(s, str(template), str(feedback_dir), timeout, notebook_timeout, str(course_dir), sandbox_lib,
                     limits) for s in todo]

        def emit(job: _Job, row: dict, log: str) -> None:
            rows.append(row)
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
            if log:
                logs.append(f"==== {row['student_id']}/{row['assignment']}: {row['status']}\n{log}\n")
            print(f"[{len(rows):>{len(str(len(found)))}}/{len(found)}] {row['student_id']}/{row['assignment']}: "
                  f"{row['score']:g}/{row['max_score']:g} {row['status']} ({row['seconds']:.1f} s) {row['reason']}",
                  file=out, flush=True)

        if jobs:
            _run_pool(jobs, workers, emit)
    rows.sort(key=lambda r: (r["student_id"], r["assignment"], r["notebook"]))
    _write_csv(grades_csv, rows)
    if logs:
        with log_path.open("a" if resume else "w", encoding="utf-8") as handle:
            handle.write("\n".join(logs))
    problems = sum(r["status"] not in ("graded", "blank") for r in rows)
    elapsed = time.monotonic() - started
    graded_now = [r for r in rows if _row_key(r) not in done]
    mean = sum(float(r["seconds"]) for r in graded_now) / max(len(graded_now), 1)
    print(f"graded {len(graded_now)} submission(s) in {elapsed:.0f} s with {workers} worker(s) "
          f"({mean:.1f} s per notebook on average){' in the sandbox' if sandbox else ', NOT sandboxed'}; "
          + (f"{problems} could not be graded (score 0, see the reason column"
             + (f" and {log_path}" if logs else "") + ")" if problems else "all could be graded")
          + f". Grades: {grades_csv}; feedback: {feedback_dir}", file=out, flush=True)
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
    try:
        grade_class(course_dir, args.submissions.resolve(), args.grades.resolve(), feedback.resolve(),
                    workers=args.workers, timeout=timeout, notebook_timeout=notebook_timeout,
                    sandbox=not args.no_sandbox, resume=args.resume)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"grading could not run: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
