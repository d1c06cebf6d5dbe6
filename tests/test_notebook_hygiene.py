"""Committed notebooks are clean: valid JSON, python3 kernel, no error output, outputs only where nbval checks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_hygiene  # noqa: E402

LECTURES = sorted((ROOT / "notebooks").glob("*.ipynb"))
ALL_COMMITTED = [ROOT / p for p in subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True,
                                                  text=True, check=True).stdout.split()]


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_lecture_notebook_is_clean(path):
    assert notebook_hygiene.problems(path) == []


@pytest.mark.parametrize("path", ALL_COMMITTED, ids=[str(p.relative_to(ROOT)) for p in ALL_COMMITTED])
def test_no_committed_notebook_has_an_error_output(path):
    nb = json.loads(path.read_text())
    errors = [i for i, c in enumerate(nb["cells"]) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == [], f"{path}: error outputs in cells {errors}"


def test_hygiene_check_catches_problems(tmp_path):
    dirty = {"cells": [{"cell_type": "code", "metadata": {}, "source": "1/0", "execution_count": 3,
                        "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "",
                                     "traceback": []}]}],
             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(dirty))
    found = notebook_hygiene.problems(path)
    assert any("error output" in p for p in found) and any("kernelspec" in p for p in found)
    path.write_text(json.dumps(notebook_hygiene.strip(dirty)))
    assert notebook_hygiene.problems(path) == []


def test_strip_keeps_the_execution_count_of_checked_outputs(tmp_path):
    # nbval skips comparing (and fails with "Unrun reference cell has outputs") when a kept output has no count
    checked = {"cell_type": "code", "metadata": {"tags": [notebook_hygiene.CHECK_TAG]}, "source": "print(1)",
               "execution_count": 4, "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}
    plain = {"cell_type": "code", "metadata": {}, "source": "x = 1", "execution_count": 5, "outputs": []}
    nb = notebook_hygiene.strip({"cells": [checked, plain], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    assert [c["execution_count"] for c in nb["cells"]] == [4, None]
    path = tmp_path / "checked.ipynb"
    path.write_text(json.dumps(nb))
    assert notebook_hygiene.problems(path) == []
    nb["cells"][0]["execution_count"] = None
    path.write_text(json.dumps(nb))
    assert any("no execution_count" in p for p in notebook_hygiene.problems(path))
