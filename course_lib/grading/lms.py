r"""Submissions downloaded from an LMS into nbgrader's submitted layout, with nbgrader's ``zip_collect``.

``python -m course_lib.grading.lms DOWNLOAD.zip ASSIGNMENT --out SUBMISSIONS [--lms canvas|moodle] [--regex RE]``
(``make collect-lms ZIP=download.zip ASSIGNMENT=Q3 SUBMISSIONS=submitted``) puts each notebook of the download
(a zip, or a folder of files) at ``SUBMISSIONS/<student_id>/ASSIGNMENT/<notebook>.ipynb``, ready for
``make grade``. It runs ``nbgrader zip_collect`` in a temporary folder (extraction by nbgrader's
``ExtractorPlugin``, file names read by its ``FileNameCollectorPlugin`` with the regular expression below), so
nbgrader's rules apply: the newest of duplicated files when the names carry a time, a warning for a notebook name
that is not the released one (``make grade`` grades the single notebook of a folder whatever its name).

File names understood (``--regex`` replaces them; it needs the groups ``student_id`` and ``file_id``, and may have
``timestamp``, which becomes nbgrader's ``timestamp.txt`` and so the late penalty):

* Canvas: ``<student>_<user id>_<submission id>_<file>.ipynb``, late ones ``<student>_late_<ids>_<file>.ipynb``
  (Canvas gives no submission time in the name: set due-date extensions or penalties in the gradebook yourself);
* Moodle: ``<Full Name>_<id>_assignsubmission_file_<file>.ipynb``, also in one folder per student.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["LMS_PATTERNS", "collect", "main"]

LMS_PATTERNS = {
    "canvas": r".*/(?P<student_id>[^/_]+)_(?:late_)?\d+_\d+_(?P<file_id>[^/]+\.ipynb)$",
    "moodle": r".*/(?P<student_id>[^/_]+)_\d+_assignsubmission_file_/?(?P<file_id>[^/]+\.ipynb)$",
}


def collect(download: Path, assignment: str, out: Path, regex: str, course_dir: Path) -> dict[str, list[str]]:
    """Run ``nbgrader zip_collect`` on ``download`` (a zip or a folder); returns ``{student_id: [files]}`` of
    ``out/<student_id>/<assignment>/``. Raises ``RuntimeError`` with nbgrader's log when it fails."""
    from course_lib.grading.release import load_course_config, nbgrader_environment

    nbgrader_environment()
    config = load_course_config(course_dir)
    release = course_dir / config.CourseDirectory.get("release_directory", "exercises")
    with tempfile.TemporaryDirectory(prefix="lms-collect-") as tmp:
        archive = Path(tmp) / "downloaded" / assignment / "archive"
        if download.is_dir():
            shutil.copytree(download, archive)
        else:
            archive.mkdir(parents=True)
            shutil.copyfile(download, archive / download.name)
        out.mkdir(parents=True, exist_ok=True)
        process = subprocess.run(
            [sys.executable, "-m", "nbgrader", "zip_collect", assignment, f"--CourseDirectory.root={tmp}",
             f"--CourseDirectory.release_directory={release}", f"--CourseDirectory.submitted_directory={out}",
             f"--CourseDirectory.db_url=sqlite:///{Path(tmp) / 'gradebook.db'}",
             f"--FileNameCollectorPlugin.named_regexp={regex}", "--force"],
            cwd=tmp, capture_output=True, text=True, timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"nbgrader zip_collect exited with {process.returncode}:\n{process.stdout}\n"
                               f"{process.stderr}")
        skipped = [line for line in process.stderr.splitlines() if "Skipped" in line or "did not match" in line]
        for line in skipped:
            print(line, file=sys.stderr)
    return {student.name: sorted(p.name for p in (student / assignment).iterdir())
            for student in sorted(out.iterdir()) if (student / assignment).is_dir()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LMS download (zip) into <student_id>/<assignment>/<notebook>.ipynb "
                                                 "with nbgrader zip_collect.")
    parser.add_argument("download", type=Path, help="the zip downloaded from the LMS (or a folder of its files)")
    parser.add_argument("assignment", help="the assignment the download holds, e.g. Q3")
    parser.add_argument("--out", type=Path, default=Path("submitted"), help="submissions folder (default: submitted)")
    parser.add_argument("--lms", choices=sorted(LMS_PATTERNS), default="canvas", help="file names (default: canvas)")
    parser.add_argument("--regex", default=None, help="nbgrader's FileNameCollectorPlugin.named_regexp, matched "
                        "against the extracted file's absolute path (groups student_id, file_id, optional timestamp)")
    parser.add_argument("--course-dir", type=Path, default=Path.cwd(), help="folder with nbgrader_config.py")
    args = parser.parse_args(argv)
    if not args.download.exists():
        parser.error(f"expected a zip file or a folder, got {str(args.download)!r} (not found)")
    try:
        found = collect(args.download.resolve(), args.assignment, args.out.resolve(),
                        args.regex or LMS_PATTERNS[args.lms], args.course_dir.resolve())
    except (RuntimeError, OSError) as error:
        print(f"collecting could not run: {error}", file=sys.stderr)
        return 2
    for student, files in found.items():
        print(f"{student}/{args.assignment}: {', '.join(files)}")
    print(f"{len(found)} student folder(s) in {args.out}{os.sep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
