"""course_lib's modules import one another without a cycle, and each one imports on its own in a fresh interpreter.

A cycle hidden in a function-local import (``stats`` building BatchNorm layers while ``norms`` imports ``stats``)
works until someone moves the import to the top; the static walk below counts local imports too. Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import course_lib

PACKAGE = Path(course_lib.__file__).parent


def module_names(package: Path) -> dict[str, Path]:
    """``{"norms": .../norms.py, "questions": .../questions/__init__.py, "questions.q1": ...}``."""
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, package_name: str, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (top level or inside functions)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == package_name:
                target = node.module.split(".")[1:]
            else:
                continue
            candidates = [".".join([*target, alias.name]) for alias in node.names] + [".".join(target)]
        elif isinstance(node, ast.Import):
            candidates = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith(package_name + ".")]
        else:
            continue
        found.update(c for c in candidates if c and c in known and c != name)  # "": the package itself
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def import_graph(package: Path, package_name: str) -> dict[str, set[str]]:
    names = module_names(package)
    return {name: imported_modules(name, path, package_name, set(names)) for name, path in names.items()}


def test_the_walk_finds_a_cycle_hidden_in_a_local_import(tmp_path):
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def build():\n    from .high import Layer\n    return Layer()\n")
    (pkg / "high.py").write_text("from .low import build\nfrom toy import low  # noqa\nclass Layer:\n    pass\n")
    (pkg / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import Layer\n")
    graph = import_graph(pkg, "toy")
    assert graph["low"] == {"high"} and graph["high"] == {"low"} and graph["typed"] == set()
    assert find_cycle(graph) == ["high", "low", "high"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_course_lib_has_no_import_cycle():
    graph = import_graph(PACKAGE, "course_lib")
    assert {"norms", "stats", "experiments", "widgets", "training", "callbacks", "hooks"} <= set(graph)
    assert "norms" not in graph["stats"] and "norms" in graph["experiments"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """One interpreter (torch imported once); before each module, every course_lib module is forgotten."""
    names = sorted(module_names(PACKAGE))
    script = (
        "import importlib, sys, torch\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'course_lib' or m.startswith('course_lib.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module('course_lib' + ('.' + name if name else ''))\n"
        "    print('ok', name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [word for name in names for word in ("ok", name) if word]
