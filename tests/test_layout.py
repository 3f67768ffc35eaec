"""The house: the package's layers import one another in one direction only, nothing in the package
imports the root scripts, and no module reaches for another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.server.helpers import ROOT

PACKAGE = ROOT / "streamrec"
ROOT_SCRIPTS = {"platform", "als_fit", "cold_start", "metrics", "evaluation"}
# Each layer may import only from the layers before it (and from itself); the package's top-level
# modules (settings, progress) come first and `streamrec/__init__.py` names what it re-exports.
LAYERS = ["", "data", "model|events", "train|serve", "evaluate", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[ast.ImportFrom | ast.Import]:
    """Every import in the file, anywhere (function bodies and `if TYPE_CHECKING:` blocks count: a
    circle hidden in a function is still a circle)."""
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Import | ast.ImportFrom)]


def import_graph() -> dict[str, set[str]]:
    """Package module -> the package modules (and root scripts) it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in imports_of(path):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.level == 0 and node.module:
                # `from streamrec.data import demo` imports the module streamrec.data.demo
                targets = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = targets or [node.module]
            else:
                targets = []
            for target in targets:
                if target.split(".")[0] in ROOT_SCRIPTS:
                    found.add(target.split(".")[0])
                elif target in modules:
                    found.add(target)
        graph[name] = found - {name}
    return graph


def room(module: str) -> str:
    """The subpackage a module lives in ("" for streamrec's own top-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ""


def layer(module: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room(module) in rooms.split("|"))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def allowed(module: str, dep: str) -> bool:
    """A module may import its own room and the floors before its own (train and serve share a
    floor and do not import each other)."""
    return room(dep) == room(module) or layer(dep) < layer(module)


def test_each_layer_imports_only_the_layers_before_it():
    graph = import_graph()
    upward = [f"{m} -> {d}" for m, deps in graph.items() if m != "streamrec" for d in deps if not allowed(m, d)]
    assert upward == [], upward


def test_the_layer_rule_sees_an_upward_import():
    assert not allowed("streamrec.data.sessions", "streamrec.model.recommender")
    assert not allowed("streamrec.serve.app", "streamrec.train.pipeline")
    assert allowed("streamrec.serve.app", "streamrec.serve.live") and allowed(
        "streamrec.cli.serve", "streamrec.serve.app"
    )
    assert layer("streamrec.data.sessions") < layer("streamrec.model.recommender") < layer("streamrec.train.pipeline")
    assert layer("streamrec.serve.app") == layer("streamrec.train.spark") < layer("streamrec.evaluate.offline")
    assert layer("streamrec.settings") == 0 and layer("streamrec.cli.serve") == len(LAYERS) - 1


def test_nothing_in_the_package_imports_a_root_script():
    importers = {m: sorted(deps & ROOT_SCRIPTS) for m, deps in import_graph().items() if deps & ROOT_SCRIPTS}
    assert importers == {}


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{module_name(path)}: from {node.module} import {alias.name}"
        for path in PACKAGE.rglob("*.py")
        for node in imports_of(path)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamrec")
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert private == [], private


def test_the_root_keeps_only_the_entry_points():
    assert {p.stem for p in ROOT.glob("*.py")} == ROOT_SCRIPTS
