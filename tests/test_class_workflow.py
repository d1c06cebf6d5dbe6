"""The instructor's whole-class workflow around ``python -m course_lib.grading.autograde``: late submissions with
nbgrader's timestamp.txt, due dates in the course gradebook and its LateSubmissionPlugin; results recorded in that
gradebook; the per-student totals for the LMS; grading on Dask; LMS downloads through nbgrader's zip_collect.

The class runs are single slow tests (see tests/test_grading.py for why they are not fixtures).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from course_lib.grading import autograde
from course_lib.grading import job as grading_job
from course_lib.grading.autograde import CSV_COLUMNS, Submission, find_submissions
from course_lib.grading.job import Job
from course_lib.grading.gradebook import assignment_max_scores, write_totals
from course_lib.grading.release import find_assignments
from grading_fixtures import submissions as S
from test_grading import sandbox_flag

REPO = Path(__file__).resolve().parents[1]
DUE = "2026-12-01 17:00:00 UTC"
ON_TIME = "2026-12-01 16:59:00.000000 UTC"  # nbgrader's timestamp_format: "%Y-%m-%d %H:%M:%S.%f %Z"
LATE = "2026-12-01 19:30:00.000000 UTC"


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def make_course(root: Path, extra_config: str) -> Path:
    """A course folder: the repository's nbgrader_config.py plus ``extra_config``, and its masters."""
    root.mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text(encoding="utf-8")
                                             + "\n" + extra_config + "\n", encoding="utf-8")
    (root / "solutions").symlink_to(REPO / "solutions")
    return root


def nbgrader_cli(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, f"nbgrader {' '.join(args)} exited with {process.returncode}:\n" \
                                    f"{process.stdout}\n{process.stderr}"
    return process


def grade(course: Path, class_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    process = subprocess.run(
        [sys.executable, "-m", "course_lib.grading.autograde", str(class_dir), str(out / "grades.csv"),
         "--course-dir", str(course), "--workers", "2", "--timeout", "20", "--feedback", str(out / "feedback"),
         "--totals", str(out / "totals.csv"), *sandbox_flag(), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert process.returncode == 0, f"autograde exited with {process.returncode}:\n{process.stdout}\n{process.stderr}"
    return process


# ------------------------------------------------------------------------------------------------ fast

def test_find_submissions_reads_nbgraders_timestamp(tmp_path):
    masters = find_assignments(REPO / "solutions")
    for student, text in (("ann", ON_TIME), ("bob", "yesterday at noon"), ("cid", None)):
        folder = S.write_submission(tmp_path, student, "Q1", S.blank("Q1")).parent
        if text is not None:
            (folder / "timestamp.txt").write_text(text + "\n", encoding="utf-8")
    (tmp_path / "ann" / "Q1" / "submission_secret.txt").write_text("s3cret", encoding="utf-8")
    found = {s.student_id: s for s in find_submissions(tmp_path, masters)}
    assert found["ann"].timestamp == ON_TIME and set(found["ann"].extras) == {"timestamp.txt", "submission_secret.txt"}
    assert grading_job.iso_timestamp(found["ann"].timestamp) == "2026-12-01T16:59:00+00:00"
    assert found["bob"].timestamp is None and "timestamp.txt not understood" in found["bob"].note
    assert found["cid"].timestamp is None and found["cid"].extras == {}


def test_resume_refuses_a_csv_without_the_penalty_columns(tmp_path):
    old = tmp_path / "grades.csv"
    old.write_text("student_id,assignment,notebook,score,max_score,status,reason,seconds\n"
                   "ann,Q1,Q1_x,3,3,graded,all tests passed,4.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no columns late_penalty and timestamp.*without --resume"):
        autograde._read_rows(old)


def test_totals_give_every_student_every_assignment(tmp_path):
    rows = [{"student_id": "ann", "assignment": "Q1", "score": "2.5"},
            {"student_id": "ann", "assignment": "Q2", "score": 4},
            {"student_id": "bob", "assignment": "Q2", "score": "1"},
            {"student_id": "cid", "assignment": "Q42", "score": 0}]  # unknown assignment: a row, no column
    table = write_totals(tmp_path / "totals.csv", rows, {"Q1": 3.0, "Q2": 5.0, "Q3": 13.0})
    columns, written = read_csv(tmp_path / "totals.csv")
    assert columns == ["student_id", "Q1", "Q2", "total", "max_total"], columns
    assert written == [{"student_id": "ann", "Q1": "2.5", "Q2": "4", "total": "6.5", "max_total": "8"},
                       {"student_id": "bob", "Q1": "0", "Q2": "1", "total": "1", "max_total": "8"},
                       {"student_id": "cid", "Q1": "0", "Q2": "0", "total": "0", "max_total": "8"}], written
    assert table == written
    assert not list(tmp_path.glob(".*partial")), "the totals are written through a renamed temporary file"


def test_max_scores_are_the_masters_autograded_points():
    scores = assignment_max_scores(find_assignments(REPO / "solutions"))
    assert scores["Q3"] == 13.0 and len(scores) == 9
    assert sum(scores.values()) == 87.0, "README: 87 autograded points in all (and 36 for written answers)"


def _die_on_bob(job):
    """A grading function whose worker process dies on bob's submission (and grades the others instantly)."""
    if job.submission.student_id == "bob":
        os._exit(3)
    return grading_job.csv_row(job.submission, 1, 1, "graded", "fake", 0.0), "", {}


@pytest.mark.slow
def test_dask_worker_death_costs_only_its_job(tmp_path):
    import cloudpickle

    from course_lib.grading.dask_pool import run_dask

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    jobs = [Job(Submission(student, "Q1", "nb", "x"), "", "", 1, 1, "") for student in ("ann", "bob", "cid")]
    emitted = []
    run_dask(jobs, None, 2, lambda job, row, log, record: emitted.append(row), _die_on_bob, grading_job.error_row)
    by_student = {row["student_id"]: row for row in emitted}
    assert sorted(by_student) == ["ann", "bob", "cid"], emitted
    assert by_student["ann"]["status"] == by_student["cid"]["status"] == "graded"
    assert by_student["bob"]["status"] == "error" and "died twice" in by_student["bob"]["reason"], by_student["bob"]


# ------------------------------------------------------------------------------------------------ a class

CLASS = {  # (student, assignment): (submission, timestamp.txt or None)
    ("alice", "Q1"): ("correct", ON_TIME), ("alice", "Q2"): ("correct", ON_TIME),
    ("bob", "Q1"): ("stub", None), ("bob", "Q2"): ("correct", LATE),
    ("carol", "Q1"): ("correct", LATE),  # Q1 has no due date: not late; carol handed in no Q2
}


def write_class(class_dir: Path) -> None:
    for (student, assignment), (kind, timestamp) in CLASS.items():
        path = S.write_submission(class_dir, student, assignment, getattr(S, kind)(assignment))
        if timestamp:
            (path.parent / "timestamp.txt").write_text(timestamp, encoding="utf-8")
            (path.parent / "submission_secret.txt").write_text(f"secret-{student}", encoding="utf-8")


@pytest.mark.slow
def test_a_class_with_a_late_submission_locally_and_on_dask(tmp_path):
    course = make_course(tmp_path / "course", 'c.LateSubmissionPlugin.penalty_method = "zero"')
    nbgrader_cli(course, "db", "assignment", "add", "Q2", f"--duedate={DUE}")
    write_class(tmp_path / "submitted")

    started = time.monotonic()
    grade(course, tmp_path / "submitted", tmp_path / "local")
    local_seconds = time.monotonic() - started
    columns, rows = read_csv(tmp_path / "local" / "grades.csv")
    assert columns == CSV_COLUMNS
    by_key = {(r["student_id"], r["assignment"]): r for r in rows}
    assert set(by_key) == set(CLASS), sorted(by_key)
    full = {a: float(by_key["alice", a]["max_score"]) for a in ("Q1", "Q2")}
    hand = {a: float(by_key["alice", a]["hand_graded_points"]) for a in ("Q1", "Q2")}
    assert hand == {"Q1": 4.0, "Q2": 4.0}, "two written answers of 2 points each, graded by hand"
    assert "written answers (4 points) to grade by hand" in by_key["alice", "Q1"]["reason"]
    assert float(by_key["alice", "Q1"]["score"]) == full["Q1"] and float(by_key["alice", "Q2"]["score"]) == full["Q2"]
    assert by_key["alice", "Q2"]["timestamp"] == "2026-12-01T16:59:00+00:00"
    assert float(by_key["alice", "Q2"]["late_penalty"]) == 0.0
    late = by_key["bob", "Q2"]
    assert (float(late["score"]), float(late["late_penalty"])) == (0.0, full["Q2"]), late
    assert late["timestamp"] == "2026-12-01T19:30:00+00:00" and "late by 2 h 30 min" in late["reason"], late
    assert float(by_key["carol", "Q1"]["score"]) == full["Q1"] and by_key["carol", "Q1"]["late_penalty"] == "0.0"
    stub_score = float(by_key["bob", "Q1"]["score"])
    assert stub_score < full["Q1"] and by_key["bob", "Q1"]["timestamp"] == ""

    totals_columns, totals = read_csv(tmp_path / "local" / "totals.csv")
    assert totals_columns == ["student_id", "Q1", "Q2", "total", "max_total"]
    by_student = {t["student_id"]: t for t in totals}
    assert float(by_student["alice"]["total"]) == full["Q1"] + full["Q2"], "written answers not graded yet: 0"
    assert float(by_student["carol"]["Q2"]) == 0.0, "a missing submission counts 0"
    assert float(by_student["bob"]["total"]) == stub_score
    assert {float(t["max_total"]) for t in totals} == {full["Q1"] + full["Q2"] + hand["Q1"] + hand["Q2"]}

    # the course gradebook holds what nbgrader's formgrader and export read
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission("Q2", "bob")
        assert submission.total_seconds_late == 9000 and submission.late_submission_penalty == full["Q2"]
        assert submission.score == full["Q2"], "nbgrader keeps the raw score and the penalty apart"
        assert gb.find_submission("Q1", "alice").score == full["Q1"]
        assert gb.find_submission("Q1", "bob").score == stub_score
        assert {s.id for s in gb.students} == {"alice", "bob", "carol"}
    exported = tmp_path / "export.csv"
    nbgrader_cli(course, "export", f"--to={exported}")
    export_rows = {(r["student_id"], r["assignment"]): r for r in read_csv(exported)[1]}
    assert float(export_rows["bob", "Q2"]["score"]) == 0.0 and float(export_rows["alice", "Q2"]["score"]) == full["Q2"]
    notebook = S.notebook_path(S.SOLUTIONS, "Q2").stem
    for student in ("alice", "bob"):
        assert (course / "autograded" / student / "Q2" / f"{notebook}.ipynb").is_file()
    assert (tmp_path / "local" / "feedback" / "bob" / "Q2" / "submission_secret.txt").read_text() == "secret-bob"
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    nbgrader_cli(course, "release_feedback", "Q2", f"--Exchange.root={exchange}",
                 f"--CourseDirectory.feedback_directory={tmp_path / 'local' / 'feedback'}")
    from nbgrader.utils import notebook_hash

    released = sorted(p.name for p in (exchange / "normalization-course" / "feedback").glob("*.html"))
    assert released == sorted(f"{notebook_hash(secret=f'secret-{s}', notebook_id=notebook)}.html"
                              for s in ("alice", "bob")), released

    started = time.monotonic()
    distributed = grade(course, tmp_path / "submitted", tmp_path / "dask", "--dask")
    dask_seconds = time.monotonic() - started
    assert "on a Dask LocalCluster" in distributed.stdout.splitlines()[-1], distributed.stdout
    _, dask_rows = read_csv(tmp_path / "dask" / "grades.csv")
    drop = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert drop == [{k: v for k, v in r.items() if k != "seconds"} for r in dask_rows]
    assert (tmp_path / "dask" / "totals.csv").read_text() == (tmp_path / "local" / "totals.csv").read_text()
    per_notebook = {name: sum(float(r["seconds"]) for r in table) / len(table)
                    for name, table in (("local", rows), ("dask", dask_rows))}
    print(f"\nthroughput: local pool {local_seconds:.0f} s wall, {per_notebook['local']:.1f} s per notebook per worker;"
          f" Dask LocalCluster {dask_seconds:.0f} s wall, {per_notebook['dask']:.1f} s per notebook per worker")

    # --resume on a finished CSV grades nothing, rewrites the totals, and keeps every row
    (tmp_path / "local" / "totals.csv").unlink()
    resumed = grade(course, tmp_path / "submitted", tmp_path / "local", "--resume")
    assert f"{len(CLASS)} submission(s) already in" in resumed.stdout and read_csv(tmp_path / "local" / "grades.csv")[1]
    assert read_csv(tmp_path / "local" / "totals.csv")[1] == totals

    # a written answer graded by hand (what formgrader stores) reaches the totals of the next run
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grade_ids = [g.name for g in gb.find_submission_notebook(notebook, "Q2", "alice").grades]
        written = [g for g in grade_ids if g.startswith("written-")]
        assert len(written) == 2, grade_ids
        gb.find_grade(written[0], notebook, "Q2", "alice").manual_score = 1.5
        gb.db.commit()
    grade(course, tmp_path / "submitted", tmp_path / "local", "--resume")
    after = {t["student_id"]: t for t in read_csv(tmp_path / "local" / "totals.csv")[1]}
    assert float(after["alice"]["Q2"]) == full["Q2"] + 1.5, after["alice"]
    assert float(after["alice"]["total"]) == full["Q1"] + full["Q2"] + 1.5
    assert after["bob"] == by_student["bob"], "other students' totals do not move"


# ------------------------------------------------------------------------------------------------ LMS downloads

@pytest.mark.slow
def test_canvas_download_becomes_the_submitted_layout(tmp_path):
    import zipfile

    name = S.notebook_path(S.EXERCISES, "Q3").name
    download = tmp_path / "submissions.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr(f"alicesmith_1001_5001_{name}", "{}")
        archive.writestr(f"bobjones_late_1002_5002_{name}", "{}")
        archive.writestr("carolwu_1003_5003_notes.txt", "not a notebook")
    process = subprocess.run([sys.executable, "-m", "course_lib.grading.lms", str(download), "Q3", "--out",
                              str(tmp_path / "submitted")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, f"lms exited with {process.returncode}:\n{process.stdout}\n{process.stderr}"
    found = sorted(str(p.relative_to(tmp_path / "submitted")) for p in (tmp_path / "submitted").rglob("*")
                   if p.is_file())
    assert found == [f"alicesmith/Q3/{name}", f"bobjones/Q3/{name}"], found
    assert "2 student folder(s)" in process.stdout, process.stdout


@pytest.mark.slow
def test_download_with_times_in_the_names_gives_timestamp_files(tmp_path):
    from course_lib.grading.lms import collect

    name = S.notebook_path(S.EXERCISES, "Q3").name
    download = tmp_path / "download"
    download.mkdir()
    (download / f"ann_attempt_20261201T183000Z_{name}").write_text("{}")
    (download / f"ann_attempt_20261201T160000Z_{name}").write_text("{}")  # older duplicate: nbgrader drops it
    regex = r".*/(?P<student_id>[a-z]+)_attempt_(?P<timestamp>[0-9TZ]+)_(?P<file_id>[^/]+\.ipynb)$"
    found = collect(download, "Q3", tmp_path / "submitted", regex, REPO)
    assert found == {"ann": sorted([name, "timestamp.txt"])}, found
    masters = find_assignments(REPO / "solutions")
    (submission,) = find_submissions(tmp_path / "submitted", masters)
    assert grading_job.iso_timestamp(submission.timestamp) == "2026-12-01T18:30:00+00:00", submission
