"""How long ``make grade`` takes for a class: seconds per submission-notebook, and the whole batch.

Run with ``python benchmarks/grading.py [--students 12] [--workers 2] [--no-sandbox]``. It writes a class into a
temporary
folder in nbgrader's submitted layout, ``<student_id>/<assignment>/<notebook>.ipynb``, one notebook per
assignment Q1-Q9 for every student (12 students = 108 submission-notebooks), built the way the grading tests
build them (tests/grading_fixtures): most students hand in the correct solution, every fourth one a mix of
untouched exercises and stubs that return their input. Then it runs the instructors' command,
``python -m course_lib.grading.autograde``, and prints the wall time, the time per submission-notebook, and whether
every correct submission got full marks and every other one less. Kernels run in the bubblewrap sandbox
(course_lib.grading.sandbox) unless ``--no-sandbox`` is given, forked from one warm sandbox per worker
(course_lib.grading.forkserver) unless ``--no-fork-server`` is given.
Goal (issue 14): 100 submission-notebooks in <= 3 minutes on the 2-core course machine, sandbox on.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from grading_fixtures import submissions as S  # noqa: E402  (the same builders as the grading tests)

GOAL_SECONDS_PER_100 = 180.0


def write_class(root: Path, students: int) -> dict[str, bool]:
    """Write the class; return ``{"student/assignment": expected_full_marks}``."""
    expected = {}
    for number in range(students):
        student = f"student{number:03d}"
        for index, assignment in enumerate(S.assignments()):
            weak = number % 4 == 3
            content = (S.blank if index % 2 else S.stub)(assignment) if weak else S.correct(assignment)
            S.write_submission(root, student, assignment, content)
            expected[f"{student}/{assignment}"] = not weak
    return expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=12, help="students in the class (9 notebooks each)")
    parser.add_argument("--workers", type=int, default=2, help="parallel grading processes")
    parser.add_argument("--no-sandbox", action="store_true", help="grade without the bubblewrap sandbox")
    parser.add_argument("--no-fork-server", action="store_true",
                        help="a new sandbox per kernel instead of forking kernels from a warm one per worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        class_dir, grades = Path(tmp) / "submitted", Path(tmp) / "grades.csv"
        expected = write_class(class_dir, args.students)
        start = time.perf_counter()
        process = subprocess.run([sys.executable, "-m", "course_lib.grading.autograde", str(class_dir), str(grades),
                                  "--workers", str(args.workers), "--feedback", str(Path(tmp) / "feedback"),
                                  *(["--no-sandbox"] if args.no_sandbox else []),
                                  *(["--no-fork-server"] if args.no_fork_server else [])],
                                 cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            print(process.stdout[-3000:], process.stderr[-3000:], sep="\n")
            print(f"autograde exited with {process.returncode}")
            return 1
        with grades.open(newline="", encoding="utf-8") as handle:
            rows = {f"{r['student_id']}/{r['assignment']}": r for r in csv.DictReader(handle)}
    wrong = [key for key, full in expected.items()
             if key not in rows or (rows[key]["score"] == rows[key]["max_score"]) != full]
    count = len(expected)
    per_100 = seconds / count * 100
    sandbox = ("no sandbox" if args.no_sandbox else
               "sandboxed, a sandbox per kernel" if args.no_fork_server else "sandboxed, kernels forked")
    print(f"{count} submission-notebooks ({args.students} students x 9 assignments), {args.workers} workers, "
          f"{sandbox}: "
          f"{seconds:.0f} s wall, {seconds / count:.2f} s per notebook, {per_100:.0f} s per 100 "
          f"(goal <= {GOAL_SECONDS_PER_100:.0f} s{'' if per_100 <= GOAL_SECONDS_PER_100 else ', MISSED'})")
    cpu = [float(r["seconds"]) for r in rows.values() if r.get("seconds")]
    if cpu:
        print(f"per-notebook grading time inside a worker: median {sorted(cpu)[len(cpu) // 2]:.1f} s, "
              f"max {max(cpu):.1f} s")
    print("scores as expected (correct = full marks, blank/stub = less)" if not wrong
          else f"UNEXPECTED scores for {len(wrong)} submissions, e.g. {wrong[:5]}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
