"""course_lib as a student on Colab or a bare Jupyter gets it: built, installed from git beside a host's own torch.

One host environment, made the way a notebook host is (its own torch, ipykernel, ipywidgets, matplotlib), then:
a lecture notebook copied alone into an empty folder runs top to bottom, its first cell installing course_lib with
`pip install git+file://<this checkout>` (COURSE_LIB_SOURCE, the offline stand-in for the repository's address);
every module imports; the wheel's [grading] extra brings the grading modules; the host's torch is never replaced.
Versions come from the lock files, so pip takes them from its cache or the package index, never a CUDA torch.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
HOST_PACKAGES = ["torch", "ipykernel", "ipywidgets", "matplotlib"]
GRADING_EXTRA = {"nbgrader", "nbclient", "nbconvert", "nbformat", "traitlets"}
pytestmark = pytest.mark.slow


def locked_versions() -> dict[str, str]:
    pins = {}
    for lock in ("requirements-torch.lock", "requirements.lock"):
        for line in (ROOT / lock).read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*(.*?))?\s*\\?$", line)
            if m and (m.group(3) is None or "linux" not in m.group(3) or sys.platform == "linux"
                      and "!=" not in m.group(3)):
                pins[m.group(1).lower()] = m.group(2)
    return pins


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("cwd", "/")  # never the checkout: its course_lib/ would shadow the installed one
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def torch_identity(python: Path) -> dict:
    code = ("import json, os, torch; print(json.dumps({'version': torch.__version__, 'file': torch.__file__, "
            "'mtime': os.path.getmtime(torch.__file__)}))")
    return json.loads(run(python, "-c", code).stdout)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A venv holding what a notebook host has before the course: torch, ipykernel, ipywidgets, matplotlib."""
    venv = tmp_path_factory.mktemp("host") / "venv"
    run(sys.executable, "-m", "venv", venv)
    constraints = venv.parent / "constraints.txt"
    pins = locked_versions()
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "-c", constraints, *HOST_PACKAGES)
    return python, constraints


def test_wheel_and_sdist_hold_every_subpackage_the_license_and_a_torch_lower_bound(built):
    wheel, sdist = built
    names = zipfile.ZipFile(wheel).namelist()
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "course_lib").rglob("*.py")}
    assert sources <= set(names), f"missing from the wheel: {sorted(sources - set(names))}"
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    import course_lib
    assert f"Version: {course_lib.__version__}" in metadata
    torch_req = re.search(r"^Requires-Dist: torch(.*)$", metadata, re.M).group(1)
    assert ">=" in torch_req and "==" not in torch_req, torch_req
    assert "extra == \"grading\"" in metadata
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "LICENSE", "course_lib/questions/q1.py"} <= members


def test_a_lecture_notebook_alone_installs_course_lib_from_git_and_runs_without_touching_the_hosts_torch(
        host, built, tmp_path, monkeypatch):
    python, constraints = host
    torch_before = torch_identity(python)
    assert run(python, "-c", "import importlib.util as u; print(u.find_spec('course_lib'))").stdout.strip() == "None"

    folder = tmp_path / "empty"
    folder.mkdir()
    notebook = folder / "Q1_running_statistics.ipynb"
    notebook.write_bytes((ROOT / "notebooks" / notebook.name).read_bytes())
    kernels = tmp_path / "jupyter" / "kernels" / "host"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "notebook host", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("COURSE_LIB_SOURCE", f"git+file://{ROOT}")
    monkeypatch.setenv("PIP_CONSTRAINT", str(constraints))  # the lock's versions for course_lib's dependencies
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, kernel_name="host", timeout=600, resources={"metadata": {"path": str(folder)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no figure"
    assert torch_identity(python) == torch_before

    location = run(python, "-c", "import course_lib; print(course_lib.__file__)").stdout
    assert str(ROOT) not in location and "site-packages" in location  # a real install, not this checkout

    modules = sorted(p.stem for p in (ROOT / "course_lib").glob("*.py") if p.stem != "__init__")
    probe = ("import importlib, json, sys\nfailed = {}\nfor m in sys.argv[1:]:\n    try:\n"
             "        importlib.import_module('course_lib.' + m)\n    except ModuleNotFoundError as e:\n"
             "        failed[m] = e.name.split('.')[0]\nprint(json.dumps(failed))")
    missing = json.loads(run(python, "-c", probe, *modules).stdout)
    assert set(missing.values()) <= GRADING_EXTRA, f"modules that need more than the [grading] extra: {missing}"
    run(python, "-c", "import course_lib.questions.q1, course_lib.quiz")

    wheel, _ = built
    run(python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", wheel)
    run(python, "-m", "pip", "install", "-q", "-c", constraints, f"course_lib[grading] @ {wheel.as_uri()}")
    assert json.loads(run(python, "-c", probe, *modules).stdout) == {}
    assert torch_identity(python) == torch_before
