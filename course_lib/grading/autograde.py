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
CSV or other submission, has no network, and everything it started dies with it; each worker forks its kernels
from one sandbox that has imported torch already (:mod:`course_lib.grading.forkserver`), each in new namespaces.
Without bubblewrap the command refuses to grade unless ``--no-sandbox`` is given.

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
import multiprocessing
import os
import sys
import tempfile
import time
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path

from course_lib.grading.release import build_course, find_assignments, load_course_config, nbgrader_environment
from course_lib.grading.job import CSV_COLUMNS, Job, error_row, grade_job, quiet_worker
from course_lib.grading.submissions import Submission, find_submissions

__all__ = ["Submission", "find_submissions", "grade_class", "main", "CSV_COLUMNS"]

_OLD_CSV_COLUMNS = ["student_id", "assignment", "notebook", "score", "max_score", "status", "reason", "seconds"]


def _worker(conn) -> None:
    """A grading worker: grades the jobs it receives one at a time until it receives None."""
    from course_lib.grading.forkserver import stop_fork_servers

    quiet_worker()
    try:
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(grade_job(job))
    finally:
        stop_fork_servers()


def _run_pool(jobs: list[Job], workers: int, emit) -> None:
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
                        emit(job, error_row(job, "the grading process died twice on this submission (exit code "
                                            f"{process.exitcode})"), "", {})
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
                dask: str | None = None, fork_server: bool = True, out=sys.stdout) -> list[dict]:
    """Grade every submission; write the CSV row by row (and the log next to it); return the rows.

    ``sandbox``: run the kernels in bubblewrap (raises ``course_lib.grading.sandbox.SandboxUnavailable`` when it is
    missing). ``resume``: keep the rows of an existing ``grades_csv`` and grade only the other submissions.
    ``gradebook``: URL of the course's nbgrader gradebook: due dates and extensions are read from it, and every
    result graded now is recorded in it (None: no course gradebook; see :func:`~course_lib.grading.gradebook.
    course_gradebook_url` for the command line's default). ``autograded_dir``: copy each autograded notebook (and
    timestamp.txt) to ``<autograded_dir>/<student>/<assignment>/``. ``totals``: write the per-student LMS table there.
    ``dask``: None (the local pool), ``"local"`` (a Dask LocalCluster of ``workers`` processes) or a scheduler
    address (``tcp://host:port``). ``fork_server``: each worker forks its sandboxed kernels from one warm sandbox
    (:mod:`course_lib.grading.forkserver`); False: a new sandbox, importing torch again, for every kernel.
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
        jobs = [Job(s, str(template), str(feedback_dir), timeout, notebook_timeout, str(course_dir), sandbox_lib,
                     limits, due.get(s.assignment), extensions.get((s.student_id, s.assignment)),
                     str(autograded_dir) if autograded_dir else None, fork_server) for s in todo]

        def emit(job: Job, row: dict, log: str, record: dict) -> None:
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

                run_dask(jobs, None if dask == "local" else dask, workers, emit, grade_job, error_row,
                         prepare_worker=quiet_worker)
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
    parser.add_argument("--no-fork-server", action="store_true",
                        help="start a new sandbox for every kernel (each imports torch again: slower); by default "
                             "each worker forks its kernels from one warm sandbox (course_lib.grading.forkserver)")
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
                    totals=args.totals.resolve() if args.totals else None, dask=args.dask,
                    fork_server=not args.no_fork_server)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"grading could not run: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
