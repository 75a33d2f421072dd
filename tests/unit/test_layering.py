"""The package's layering, read from the source: who may import whom, and no import cycles."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("orchestrator", "workers", "results")
#: what each package may import from the others (docs/design.md).
ALLOWED = {"orchestrator": {"workers", "results"}, "workers": set(), "results": set()}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at any depth (lazy imports inside functions too)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    return {name: {target for target in _imports(path) if target in modules} - {name}
            for name, path in modules.items()}


def test_each_package_imports_only_what_the_design_allows():
    wrong = sorted((module, target) for module, targets in _graph().items() for target in targets
                   if target.split(".")[0] != module.split(".")[0]
                   and target.split(".")[0] not in ALLOWED[module.split(".")[0]])
    assert not wrong, wrong


def test_no_module_imports_itself_back():
    graph = _graph()
    # a package's __init__ re-exporting its submodules is not a cycle of concepts: leave those edges out
    edges = {m: {t for t in ts if not (m.startswith(t + ".") and t in graph)} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, cycles


#: the rooms inside the packages and the rooms each may import (the table in docs/design.md); a module
#: directly under a package is a room of its own, a subpackage is one room with everything inside it.
ROOMS = {
    "orchestrator.errors": set(),
    "orchestrator.yaml_input": set(),
    "orchestrator.spec": {"orchestrator.errors", "orchestrator.yaml_input", "orchestrator.backends", "workers",
                          "results"},
    "orchestrator.planning": {"orchestrator.spec", "workers", "results"},
    "orchestrator.backends": {"orchestrator.errors", "orchestrator.planning", "orchestrator.state", "workers"},
    "orchestrator.state": {"orchestrator.errors", "orchestrator.yaml_input", "orchestrator.planning",
                           "orchestrator.backends", "workers", "results"},
    "orchestrator.commands": {"orchestrator.errors", "orchestrator.spec", "orchestrator.planning",
                              "orchestrator.backends", "orchestrator.state", "workers", "results"},
    "orchestrator.driver": {"orchestrator.errors", "orchestrator.spec", "orchestrator.planning",
                            "orchestrator.backends", "orchestrator.state", "orchestrator.commands", "workers"},
    "orchestrator.driver_job": {"orchestrator", "orchestrator.errors", "orchestrator.backends", "orchestrator.state",
                                "orchestrator.driver"},
    "orchestrator.arguments": {"orchestrator.spec", "orchestrator.backends"},
    "orchestrator.cli": {"orchestrator", "orchestrator.arguments", "orchestrator.errors", "orchestrator.spec", "orchestrator.planning",
                         "orchestrator.backends", "orchestrator.state", "orchestrator.commands",
                         "orchestrator.driver", "workers"},
    "orchestrator.__main__": {"orchestrator.cli"},
    "workers.data": set(),
    "workers.models": set(),
    "workers.training": {"workers.data", "workers.pruning", "workers.stages", "workers.tasks"},
    "workers.tasks": {"workers.data", "workers.pruning", "workers.training"},
    "workers.pruning": {"workers.stages", "workers.tasks", "workers.training"},
    "workers.stages": {"workers.data", "workers.models", "workers.pruning", "workers.tasks", "workers.training"},
    "workers.catalog": {"workers.data", "workers.pruning", "workers.stages", "workers.training"},
    "workers.entry": {"workers.stages", "workers.training"},
    "workers.__main__": {"workers.entry"},
}


def _room(module: str) -> str:
    parts = module.split(".")
    return "results" if parts[0] == "results" else ".".join(parts[:2])


def test_every_module_lives_in_a_room_of_the_table():
    rooms = {_room(module) for module in _graph()} - {"orchestrator", "workers", "results"}
    assert rooms == set(ROOMS), (sorted(rooms - set(ROOMS)), sorted(set(ROOMS) - rooms))


def test_each_room_imports_only_the_rooms_the_table_allows():
    wrong = []
    for module, targets in _graph().items():
        room = _room(module)
        for target in targets:
            other = _room(target)
            if other == room or room not in ROOMS or other.split(".")[0] != room.split(".")[0] and \
                    other.split(".")[0] in ALLOWED[room.split(".")[0]]:
                continue
            if other not in ROOMS[room] and other.split(".")[0] not in ROOMS[room]:
                wrong.append((module, target))
    assert not wrong, wrong


def test_no_backend_reaches_up_into_the_commands_or_the_driver():
    above = ("orchestrator.driver", "orchestrator.commands", "orchestrator.cli", "orchestrator.driver_job")
    wrong = sorted((module, target) for module, targets in _graph().items() if module.startswith("orchestrator.backends")
                   for target in targets if target.startswith(above))
    assert not wrong, wrong
