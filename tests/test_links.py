"""The repository's address is written once (pyproject.toml); README's links and the notebooks' install cell agree.

Also: every lecture has its Colab and Binder link in README's course map, and every local link of README exists.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_hygiene  # noqa: E402

URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SLUG = URL.split("github.com/")[1]
README = (ROOT / "README.md").read_text()
LECTURES = sorted(p.name for p in (ROOT / "notebooks").glob("Q*.ipynb"))


def test_every_repository_address_in_readme_is_pyprojects():
    slugs = set(re.findall(r"(?:github\.com|colab\.research\.google\.com/github|mybinder\.org/v2/gh)/([\w.-]+/[\w.-]+)",
                           README))
    assert slugs == {SLUG}, f"README names {slugs}, pyproject.toml {SLUG}"


def test_every_lecture_has_a_colab_and_a_binder_link():
    for name in LECTURES:
        assert f"colab.research.google.com/github/{SLUG}/blob/main/notebooks/{name}" in README, name
        assert f"mybinder.org/v2/gh/{SLUG}/HEAD?labpath=notebooks%2F{name}" in README, name


def test_the_install_cell_installs_from_pyprojects_address():
    assert f'"git+{URL}"' in notebook_hygiene.install_cell_source()


def test_every_local_link_in_readme_exists():
    targets = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", README)
    assert targets, "README has no local links"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert missing == []
