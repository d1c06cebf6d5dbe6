"""``make release``: regenerate the student notebooks in ``exercises/`` from the masters in ``solutions/``.

Runs nbgrader's ``generate_assignment`` in a temporary course folder with a temporary gradebook (nothing is left
in the repository but ``exercises/<assignment>/<notebook>.ipynb``; stale assignment folders and files are
removed), and writes each notebook in nbformat's canonical JSON so that the committed files can be compared
byte for byte (``tests/test_exercises_sync.py``). :func:`build_course` is also how ``course_lib.grading.autograde``
builds the gradebook it grades against.

Usage: ``python -m course_lib.grading.release [--course-dir DIR]`` (``make release``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

__all__ = ["nbgrader_environment", "load_course_config", "find_assignments", "build_course", "release_notebooks",
           "write_exercises"]

CONFIG_FILE = "nbgrader_config.py"


def nbgrader_environment() -> None:
    """Put this interpreter's ``bin`` first on PATH: nbgrader runs ``alembic`` from PATH when it creates a
    gradebook, and without it leaves a half-made database behind (docs/DESIGN.md section 5)."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextlib.contextmanager
def _schema_revision_in_process():
    """While a gradebook is created: nbgrader asks a subprocess (``alembic heads``, ~3.2 s here, a third of
    ``build_course`` for all nine assignments) for its schema's revision; read the same id from nbgrader's alembic
    scripts in this process (milliseconds). tests/test_grading.py checks that both give the same id."""
    import nbgrader
    import nbgrader.api
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")).get_current_head()
    asked = nbgrader.api.get_alembic_version
    nbgrader.api.get_alembic_version = lambda: revision
    try:
        yield
    finally:
        nbgrader.api.get_alembic_version = asked


def load_course_config(course_dir: Path):
    """The course's ``nbgrader_config.py`` as a traitlets ``Config`` (empty if the file is missing)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if not (course_dir / CONFIG_FILE).is_file():
        return Config()
    return PyFileConfigLoader(CONFIG_FILE, path=str(course_dir)).load_config()


def find_assignments(source_dir: Path) -> dict[str, Path]:
    """``{assignment: master notebook}`` for every ``<source_dir>/<assignment>/<notebook>.ipynb``.

    Raises ``ValueError`` when an assignment folder holds no notebook or several (one notebook per assignment).
    """
    found = {}
    for folder in sorted(p for p in source_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        notebooks = sorted(folder.glob("*.ipynb"))
        if len(notebooks) != 1:
            raise ValueError(f"expected one notebook in {folder}, got {len(notebooks)}: "
                             f"{[n.name for n in notebooks]}")
        found[folder.name] = notebooks[0]
    if not found:
        raise ValueError(f"expected assignment folders <assignment>/<notebook>.ipynb in {source_dir}, got none")
    return found


def build_course(course_dir: Path, assignments: list[str], root: Path) -> Path:
    """A throw-away nbgrader course in ``root``: masters copied to ``root/source``, student versions generated
    in ``root/release`` and recorded in ``root/gradebook.db``. Returns ``root``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    nbgrader_environment()
    config = load_course_config(course_dir)
    masters = find_assignments(course_dir / config.CourseDirectory.get("source_directory", "solutions"))
    root.mkdir(parents=True, exist_ok=True)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.release_directory = "release"
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.NbGraderAPI.log_level = "ERROR"
    for assignment in assignments:
        if assignment not in masters:
            raise ValueError(f"expected an assignment among {sorted(masters)}, got {assignment!r}")
        shutil.copytree(masters[assignment].parent, root / "source" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    with _schema_revision_in_process():
        for assignment in assignments:
            result = api.generate_assignment(assignment, force=True, create=True)
            if not result["success"]:
                raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n"
                                   f"{result.get('log', '')}\n{result.get('error', '')}")
    return root


def release_notebooks(course_dir: Path) -> dict[str, nbformat.NotebookNode]:
    """``{"<assignment>/<notebook>.ipynb": student version}`` generated from every master."""
    config = load_course_config(course_dir)
    assignments = find_assignments(course_dir / config.CourseDirectory.get("source_directory", "solutions"))
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp:
        root = build_course(course_dir, list(assignments), Path(tmp))
        return {f"{a}/{m.name}": nbformat.read(root / "release" / a / m.name, as_version=4)
                for a, m in assignments.items()}


def write_exercises(course_dir: Path) -> list[Path]:
    """Regenerate ``exercises/`` (the release directory) and remove what no master produces any more."""
    config = load_course_config(course_dir)
    exercises = course_dir / config.CourseDirectory.get("release_directory", "exercises")
    notebooks = release_notebooks(course_dir)
    wanted = {exercises / rel for rel in notebooks}
    if exercises.is_dir():
        for folder in (p for p in exercises.iterdir() if p.is_dir()):
            for path in folder.rglob("*"):
                if path.is_file() and path not in wanted:
                    path.unlink()
            if folder not in {w.parent for w in wanted}:
                shutil.rmtree(folder)
    written = []
    for rel, notebook in notebooks.items():
        path = exercises / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--course-dir", type=Path, default=Path.cwd(),
                        help="folder holding nbgrader_config.py and solutions/ (default: current folder)")
    args = parser.parse_args(argv)
    for path in write_exercises(args.course_dir.resolve()):
        print(f"wrote {path.relative_to(args.course_dir.resolve())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
