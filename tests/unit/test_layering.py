"""The project's layering, enforced on the source: who may import whom, and no import cycles.

    core                      plain data and settings; imports nothing else from the project
    channels, groups, proxy   import only `core` and themselves (never each other, never gateway)
    dashboard                 the web dashboard: imports only `core` (the gateway hands it a
                              `dashboard.backend.Backend`; it never reaches into the gateway)
    groups.agent              runs inside the sandbox on the image's Python: imports nothing
                              from the project, not even the rest of `groups`
    gateway                   wires everything together; may import anything

Every import counts: module level, inside functions, under `if TYPE_CHECKING:`, `import x.y`,
`from x import y` (an edge to the submodule `x.y` when there is one) and relative imports.
Importing `a.b` is not counted as importing the package `a` (whose `__init__` runs first): a
package `__init__` that composes its submodules (gateway/store/__init__.py builds `Store` from
them) is the package's face, not a cycle with them. A submodule importing its own package
(`from gateway.store import Store` inside gateway/store/) is counted, and is a cycle. Import
cycles are refused within a package too: a module that needs a type from the module that
imports it names it through a Protocol (e.g. gateway/running.py) instead.

docs/ARCHITECTURE.md ("Layering") explains the rules; CONTRIBUTING.md points here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "gateway", "channels", "groups", "proxy", "dashboard")

# layer -> the layers it may import (its own is always allowed)
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "channels": frozenset({"core"}),
    "groups": frozenset({"core"}),
    "proxy": frozenset({"core"}),
    "dashboard": frozenset({"core"}),
    "groups.agent": frozenset(),
    "gateway": frozenset({"core", "channels", "groups", "groups.agent", "proxy", "dashboard"}),
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported project module
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def layer(module: str) -> str:
    if module == "groups.agent" or module.startswith("groups.agent."):
        return "groups.agent"
    return module.split(".", 1)[0]


def modules_of(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project packages under `root`."""
    found: dict[str, Path] = {}
    for top in packages:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a project module (`gateway.app.Gateway` -> gateway.app)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path], root: Path) -> list[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    rel = path.relative_to(root).as_posix()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: list[Edge] = []
    for node in ast.walk(tree):  # every node: function bodies and TYPE_CHECKING blocks too
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [_known(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                targets.append(submodule if submodule in modules else _known(origin, modules))
        edges.extend(Edge(module, t, rel, node.lineno) for t in targets if t is not None and t != module)
    return list(dict.fromkeys(edges))  # `from x import a, b`: one edge


def graph(root: Path = ROOT) -> tuple[dict[str, Path], list[Edge]]:
    modules = modules_of(root)
    edges = [e for m, p in modules.items() for e in imports_of(m, p, modules, root)]
    return modules, edges


def forbidden(edges: Iterable[Edge]) -> list[Edge]:
    bad = []
    for edge in edges:
        source, target = layer(edge.source), layer(edge.target)
        if source != target and target not in ALLOWED[source]:
            bad.append(edge)
    return bad


def cycles(modules: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """One cycle (a -> b -> … -> a) per strongly connected component with more than one module."""
    succ: dict[str, list[str]] = {m: [] for m in modules}
    for edge in edges:
        if edge.target not in succ[edge.source]:
            succ[edge.source].append(edge.target)
    # Tarjan, iterative (no recursion limit on a long chain)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in succ:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(set(c), succ) for c in components]


def _cycle_in(component: set[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, for the message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in succ[node]:
                if nxt == start:
                    return [*paths[node], start]
                if nxt in component and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component has one


# -- the rules on the code base ------------------------------------------------------------------


def test_no_module_imports_across_a_forbidden_layer() -> None:
    _, edges = graph()
    bad = forbidden(edges)
    assert bad == [], "imports against the layering (see this file's docstring):\n" + "\n".join(map(str, bad))


def test_no_import_cycles() -> None:
    modules, edges = graph()
    found = cycles(modules, edges)
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_walk_sees_the_code_base() -> None:
    """Not vacuous: every package is read, and known imports of each kind are found."""
    modules, edges = graph()
    assert {layer(m) for m in modules} == set(ALLOWED)
    seen = {(e.source, e.target) for e in edges}
    assert ("gateway.app", "gateway.store") in seen  # from x import y
    assert ("gateway.endpoints", "gateway.metrics") in seen  # under TYPE_CHECKING
    assert ("gateway.dashboard_backend", "dashboard.server") in seen
    assert ("gateway.cli", "gateway.app") in seen  # inside a function
    assert ("groups.agent.__main__", "groups.agent.config") in seen  # from . import y
    assert ("groups.agent.llm", "groups.agent.transport") in seen


# -- the checks themselves: they must catch what they are for ------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for top in PACKAGES:
        (tmp_path / top).mkdir(exist_ok=True)
    return tmp_path


def test_a_channel_reaching_into_the_gateway_is_named_with_file_and_line(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "gateway/commands.py": "PUBLIC = ()\n",
            "channels/telegram.py": "import json\n\n\ndef menu():\n    from gateway.commands import PUBLIC\n",
            "groups/agent/llm.py": "from core import models\n",
            "core/models.py": "",
        },
    )
    _, edges = graph(root)
    assert [str(e) for e in forbidden(edges)] == [
        "channels/telegram.py:5: channels.telegram imports gateway.commands",
        "groups/agent/llm.py:1: groups.agent.llm imports core.models",
    ]


def test_a_cycle_through_function_and_relative_imports_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "gateway/app.py": "from gateway import commands\n",
            "gateway/commands.py": "def f():\n    from .router import x\n",
            "gateway/router.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import gateway.app\n"
            ),
            "gateway/store.py": "",
        },
    )
    modules, edges = graph(root)
    assert cycles(modules, edges) == [["gateway.app", "gateway.commands", "gateway.router", "gateway.app"]]


@pytest.mark.parametrize("level", ["core", "proxy"])
def test_core_and_sibling_packages_may_not_import_upward(tmp_path: Path, level: str) -> None:
    root = _tree(tmp_path, {f"{level}/a.py": "from gateway.app import Gateway\n", "gateway/app.py": ""})
    _, edges = graph(root)
    assert [e.target for e in forbidden(edges)] == ["gateway.app"]


def test_a_facade_init_is_no_cycle_but_a_submodule_importing_its_package_is(tmp_path: Path) -> None:
    files = {
        "gateway/store/__init__.py": "from gateway.store.runs import RunStore\n",
        "gateway/store/runs.py": "from gateway.store.connection import Database\n",
        "gateway/store/connection.py": "",
    }
    modules, edges = graph(_tree(tmp_path, files))
    assert cycles(modules, edges) == []
    (tmp_path / "gateway/store/connection.py").write_text("from gateway.store import RunStore\n")
    modules, edges = graph(tmp_path)
    assert cycles(modules, edges) == [
        ["gateway.store", "gateway.store.runs", "gateway.store.connection", "gateway.store"]
    ]
