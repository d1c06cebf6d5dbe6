r"""Build the course website: the lecture notebooks executed fresh, the exercises, the API reference, search.

    python tools/build_site.py                 # make site: execute with this machine's settings, then render
    python tools/build_site.py --setting ci    # execute under CI's non-default setting (other CPU kernels, 2
                                               # threads, COURSE_SEED=3): the portability check and the site at once

Steps: (1) every ``notebooks/Q*.ipynb`` is executed by nbconvert into build/site-src/notebooks (plots, printed
numbers, widget state kept); a cell that raises fails the build, and the outputs of cells tagged
``nbval-check-output`` must equal the committed ones, as under nbval; (2) the student versions of the exercises,
a landing page made from README's course map and an API page made from course_lib's docstrings are staged beside
them; (3) Sphinx renders everything with the book theme (site/conf.py) into build/site/html, search index included.
Nothing is fetched from the network. Prints the time and size of the build.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from portability import CI_SETTING, MATRIX  # noqa: E402  (tools/ is a folder of scripts, not a package)

CHECK_TAG = "nbval-check-output"
API_MODULES = ["norms", "functional", "stats", "seed", "data", "models", "training", "callbacks", "schedules", "hooks",
               "experiments", "plots", "widgets", "quiz"]


def repository_url() -> str:
    """The repository's address, kept in one place: pyproject.toml's [project.urls] Repository."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("urls", {})
    return urls.get("Repository", "")


def execute(notebook: Path, out_dir: Path, env: dict[str, str], log_dir: Path) -> tuple[Path, float, str | None]:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir",
           str(out_dir), "--ExecutePreprocessor.timeout=600", "--ExecutePreprocessor.store_widget_state=True",
           str(notebook)]
    proc = subprocess.run(cmd, cwd=notebook.parent, env=env, capture_output=True, text=True)
    (log_dir / f"{notebook.stem}.log").write_text(proc.stdout + proc.stderr)
    error = None
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-12:]
        error = "execution failed:\n    " + "\n    ".join(tail)
    return notebook, time.perf_counter() - start, error


def _stdout(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def checked_output_mismatches(committed: Path, executed: Path) -> list[str]:
    """Cells tagged nbval-check-output whose printed text differs from the committed notebook's (nbval's rule)."""
    old, new = (json.loads(p.read_text())["cells"] for p in (committed, executed))
    problems = []
    for index, (a, b) in enumerate(zip(old, new)):
        if CHECK_TAG in a.get("metadata", {}).get("tags", []) and a.get("outputs") and _stdout(a) != _stdout(b):
            problems.append(f"cell {index}: printed\n{_stdout(b)}\n  but the notebook holds\n{_stdout(a)}")
    return problems


def landing_page(url: str) -> str:
    readme = (ROOT / "README.md").read_text()
    course_map = re.search(r"^## Course map\n(.*?)(?=^## )", readme, re.S | re.M).group(1).strip()
    title = readme.splitlines()[0].lstrip("# ").strip()
    launch = ""
    if url:
        slug = url.rstrip("/").split("github.com/")[-1]
        launch = (f"Run the notebooks without installing anything: [Open in Colab](https://colab.research.google.com/"
                  f"github/{slug}/blob/main/notebooks/Q1_running_statistics.ipynb) or [Launch Binder]"
                  f"(https://mybinder.org/v2/gh/{slug}/HEAD?labpath=notebooks); each notebook page has both buttons "
                  "at the top. On your own machine: clone the repository, then `make lab`.\n")
    staged = sorted((ROOT / "build" / "site-src" / "notebooks").glob("Q*.ipynb"))
    notebooks = "\n".join(f"notebooks/{p.stem}" for p in staged)
    return f"""# {title}

Nine notebooks (Q1–Q9) that teach every normalization layer of modern deep learning, each built from scratch,
checked against PyTorch and measured on a small offline data set; graded exercises; a small library, `course_lib`,
whose API reference is part of this site. Every page below was executed fresh when the site was built.

{launch}
## Course map

{course_map}

```{{toctree}}
:hidden:
:caption: Lectures

{notebooks}
```

```{{toctree}}
:hidden:
:caption: Exercises and library

exercises
api
```
"""


def exercises_page(stage: Path) -> str:
    entries = []
    for nb in sorted((ROOT / "exercises").glob("Q*/*.ipynb")):
        target = stage / "exercises" / nb.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nb, target)
        entries.append(f"exercises/{nb.stem}")
    return ("# Exercises\n\nThe student versions of the graded exercises, one per lecture: fill in the cells marked "
            "`YOUR CODE HERE`, run the visible tests below them, and hand in the notebook. Download one with the "
            "button at the top of its page, or get them all with the course (see the README).\n\n"
            "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(entries) + "\n```\n")


def api_page() -> str:
    sections = ["# API reference: `course_lib`\n\nGenerated from the docstrings. The layers in `course_lib.norms` "
                "are drop-in replacements for `torch.nn`'s (same names, arguments, defaults, parameters, buffers "
                "and `state_dict`).\n"]
    for name in API_MODULES:
        sections.append(f"## `course_lib.{name}`\n\n```{{eval-rst}}\n.. automodule:: course_lib.{name}\n```\n")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=["local", "ci"] + [s.name for s in MATRIX], default="local",
                        help="environment of the kernels: local (as this shell has it), ci, or a portability setting")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="default build/site")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="lecture notebooks to execute (default: all; a partial site is for trying things out)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    stage, html, logs = ROOT / "build" / "site-src", args.out / "html", args.out / "logs"
    for path in (stage, args.out):
        shutil.rmtree(path, ignore_errors=True)
    (stage / "notebooks").mkdir(parents=True)
    logs.mkdir(parents=True)

    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    if args.setting != "local":
        setting = {s.name: s for s in MATRIX + [CI_SETTING]}[args.setting]
        env = setting.env(stage / ".mkldnn-off") | {"MPLBACKEND": env["MPLBACKEND"]}
        if not setting.mkldnn:
            (stage / ".mkldnn-off").mkdir()
            (stage / ".mkldnn-off" / "sitecustomize.py").write_text(
                "import torch\ntorch.backends.mkldnn.enabled = False\n")
        print(f"executing under setting {setting.name}: {setting.describe()}")
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("Q*.ipynb"))
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for notebook, seconds, error in pool.map(lambda nb: execute(nb, stage / "notebooks", env, logs), notebooks):
            if error is None:
                mismatches = checked_output_mismatches(notebook, stage / "notebooks" / notebook.name)
                error = "tagged output differs: " + "\n".join(mismatches) if mismatches else None
            print(f"{'ok  ' if error is None else 'FAIL'} {seconds:6.1f} s  {notebook.relative_to(ROOT)}", flush=True)
            if error:
                failures.append(f"{notebook.name}: {error}")
    if failures:
        print("\n".join(["", "Notebooks that failed (logs in " + str(logs) + "):"] + failures), file=sys.stderr)
        return 1

    url = repository_url()
    (stage / "index.md").write_text(landing_page(url))
    (stage / "exercises.md").write_text(exercises_page(stage))
    (stage / "api.md").write_text(api_page())
    shutil.copy2(ROOT / "site" / "conf.py", stage / "conf.py")
    sphinx = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", str(stage), str(html)],
                            env=dict(os.environ, COURSE_REPOSITORY_URL=url), capture_output=True, text=True)
    (logs / "sphinx.log").write_text(sphinx.stdout + sphinx.stderr)
    if sphinx.returncode != 0:
        print(sphinx.stderr[-4000:], file=sys.stderr)
        return 1
    warnings = [line for line in sphinx.stderr.splitlines() if "WARNING" in line]
    size = sum(f.stat().st_size for f in html.rglob("*") if f.is_file())
    print(f"site built in {time.perf_counter() - started:.0f} s: {html} ({size / 1e6:.1f} MB, "
          f"{sum(1 for _ in html.rglob('*.html'))} pages, {len(warnings)} Sphinx warnings in {logs / 'sphinx.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
