"""Keep committed notebooks small and honest: strip outputs except the ones nbval compares.

    python tools/notebook_hygiene.py strip notebooks/*.ipynb     # rewrite in place
    python tools/notebook_hygiene.py check notebooks/*.ipynb     # exit 1 and list problems
    python tools/notebook_hygiene.py install-cell notebooks/*.ipynb   # write the install cell of each lecture

A committed notebook keeps outputs only in cells tagged ``nbval-check-output`` (small, deterministic prints that
nbval compares on every run); every other output, execution count and widget state is removed, and it must
carry the python3 kernelspec (otherwise JupyterLab opens a "Select Kernel" dialog). Error outputs are never
allowed.

A lecture notebook (one in ``notebooks/``) opens Colab, Binder or any bare Jupyter: its first code cell installs
course_lib when it is not importable, from the repository whose address is written once, in pyproject.toml's
``[project.urls] Repository``; ``COURSE_LIB_SOURCE`` names another pip source (a local checkout, a wheel).
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK_TAG = "nbval-check-output"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
MAX_KEPT_OUTPUT_CHARS = 2000


def repository_url() -> str:
    """The repository's address: pyproject.toml's ``[project.urls] Repository``, the one place it is written."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def install_cell_source(url: str | None = None) -> str:
    """The first code cell of every lecture notebook: install course_lib only where it is missing."""
    return f"""# Colab, Binder or a bare Jupyter: install the course's library (course_lib) only when it is missing.
# COURSE_LIB_SOURCE may name another pip source, e.g. the path of a local checkout.
import importlib, importlib.util, os, subprocess, sys
if importlib.util.find_spec("course_lib") is None:
    source = os.environ.get("COURSE_LIB_SOURCE", "git+{url or repository_url()}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()"""


def is_lecture(path: Path) -> bool:
    return path.resolve().parent.name == "notebooks"


def set_install_cell(nb: dict) -> dict:
    """Make the first code cell the install cell: replace it if it is one already, insert one before it if not."""
    source = install_cell_source()
    cell = {"cell_type": "code", "execution_count": None, "id": "install-course-lib", "metadata": {}, "outputs": [],
            "source": source}
    cells = nb["cells"]
    first = next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"), len(cells))
    if first < len(cells) and "".join(cells[first].get("source", "")).startswith(source.splitlines()[0]):
        cells[first] = {**cells[first], "source": source, "outputs": [], "execution_count": None}
    else:
        cells.insert(first, cell)
    return nb


def keeps_output(cell: dict) -> bool:
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def strip(nb: dict) -> dict:
    """Outputs only where nbval checks them (text only, with their execution count), no widget state."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        if keeps_output(cell):
            kept = []
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stdout":
                    kept.append({"output_type": "stream", "name": "stdout", "text": out["text"]})
            cell["outputs"] = kept
        else:
            cell["outputs"] = []
        if not cell["outputs"]:
            cell["execution_count"] = None  # nbval compares only cells with a count: kept outputs keep theirs
        cell.get("metadata", {}).pop("execution", None)
    metadata = nb.setdefault("metadata", {})
    metadata.pop("widgets", None)
    metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def problems(path: Path) -> list[str]:
    try:
        nb = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{path}: not readable JSON ({exc.__class__.__name__}: {exc})"]
    found = []
    if is_lecture(path):
        code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
        if not code or "".join(code[0].get("source", "")) != install_cell_source():
            found.append(f"{path}: the first code cell is not the install cell (run: python tools/notebook_hygiene.py "
                         "install-cell <notebook>)")
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        found.append(f"{path}: kernelspec is not python3")
    if "widgets" in nb.get("metadata", {}):
        found.append(f"{path}: saved widget state in metadata")
    for index, cell in enumerate(nb.get("cells", [])):
        outputs = cell.get("outputs", [])
        for out in outputs:
            if out.get("output_type") == "error":
                found.append(f"{path}: cell {index} has an error output ({out.get('ename')})")
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append(f"{path}: cell {index} has a stderr output")
        if outputs and not keeps_output(cell):
            found.append(f"{path}: cell {index} keeps outputs but is not tagged {CHECK_TAG}")
        text = "".join("".join(o.get("text", "")) for o in outputs)
        if len(text) > MAX_KEPT_OUTPUT_CHARS:
            found.append(f"{path}: cell {index} keeps {len(text)} characters of output (limit {MAX_KEPT_OUTPUT_CHARS})")
        if keeps_output(cell) and not outputs:
            found.append(f"{path}: cell {index} is tagged {CHECK_TAG} but has no stored output to compare")
        if outputs and cell.get("execution_count") is None:
            found.append(f"{path}: cell {index} keeps outputs but no execution_count (nbval fails with 'Unrun "
                         "reference cell has outputs')")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["strip", "check", "install-cell"])
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command in ("strip", "install-cell"):
        rewrite = strip if args.command == "strip" else set_install_cell
        for path in args.paths:
            nb = rewrite(json.loads(path.read_text()))
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        return 0
    found = [p for path in args.paths for p in problems(path)]
    print("\n".join(found) if found else f"{len(args.paths)} notebooks clean")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
