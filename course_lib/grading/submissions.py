"""What a class hands in: ``<student_id>/<assignment>/<notebook>.ipynb`` folders (nbgrader's submitted layout),
each with nbgrader's ``timestamp.txt`` when there is one, read into :class:`Submission` rows; anything that does
not fit the layout still gets a row, so no student goes missing from the grades."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


__all__ = ["Submission", "find_submissions", "SUBMISSION_FILES"]

SUBMISSION_FILES = ("timestamp.txt", "submission_secret.txt")  # what nbgrader's submit/collect put next to notebooks


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
