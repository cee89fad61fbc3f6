"""The package's import graph: no cycle anywhere in avfusion/ (+ baselines/), and no task module imports
another task (they share avfusion/tasks/common.py and dense_prediction.py instead).

Edges are every `import` statement found in a module's syntax tree, at module level or inside a
function (a lazy import is still a dependency), resolved to the package's own modules. The
registry's import of baseline modules by name (`importlib`, BASELINE_MODULES) is a plugin lookup,
not an import statement, and is not an edge here.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("avfusion", "baselines")
SHARED_TASK_MODULES = {"avfusion.tasks.common", "avfusion.tasks.dense_prediction"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _own_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            own = _own_module(name)
            if own and own != module and not module.startswith(own + "."):   # a parent package is not an edge
                found.add(own)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports_it_should():
    assert "avfusion.engine" in GRAPH["avfusion.tasks.common"]
    assert "avfusion.models.presets" in GRAPH["avfusion.models.registry"]
    assert "avfusion.models.registry" in GRAPH["baselines.cavmae"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    assert _cycles(GRAPH) == []


def test_no_task_imports_a_sibling_task():
    tasks = {m for m in MODULES if m.startswith("avfusion.tasks.") and m not in SHARED_TASK_MODULES}
    offenders = {m: sorted(GRAPH[m] & tasks) for m in sorted(tasks) if GRAPH[m] & tasks}
    assert offenders == {}
    assert not any(m.startswith("avfusion.tasks.") for s in SHARED_TASK_MODULES for m in GRAPH[s] - SHARED_TASK_MODULES)


@pytest.mark.parametrize("module", ["avfusion.models.presets", "avfusion.models.registry", "avfusion.tasks.common",
                                    "avfusion.runs", "baselines.cavmae", "baselines.sound_of_pixels"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    """A module that needs another to be imported first (a hidden cycle) fails here."""
    if module not in MODULES:
        pytest.skip(f"{module} does not exist")
    out = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
