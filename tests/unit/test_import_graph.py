"""The project's import rules, read from the source (parsed, never imported).

- No cycle among module-level imports (an ``if TYPE_CHECKING:`` import never runs, so it is no edge).
- The detectors never import the lab (``worker.lab``): the lab builds on them, at any level.
- Serving code (the worker pipeline and tasks, the HTTP API) never imports the lab, at any level.
- The shared package and the scheduler never import the worker role, except the CLI dispatch
  modules listed below, which hand a command to the worker's code inside the command's handler
  (``fakescan.cli`` names its command modules as strings, so it has no such import at all); the
  one other exception is the HTTP API showing images through the scan's decoder.
- The worker never imports the scheduler.
- No module imports another module's private (``_name``) names: what is shared is made public.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fakescan", "scheduler", "worker")
LAB = "worker.lab"
SERVING = ("worker.pipeline", "worker.tasks", "worker.stream", "worker.inprocess", "worker.runtime",
           "worker.celery_app", "worker.delivery", "fakescan.api")
# the shared package and the scheduler reach the worker role only through these, inside a command's handler
WORKER_DISPATCH = {
    "fakescan.cli",  # every command module, by name (importlib)
    "fakescan.ops_cli",  # worker-ping: worker.health
    "scheduler.cli",  # scan without a broker: the pipeline in-process (worker.inprocess)
}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    module_level: bool  # runs when the importer is imported (not inside a function, not TYPE_CHECKING)

    def __str__(self) -> str:
        where = "" if self.module_level else " (inside a function or TYPE_CHECKING)"
        return f"{self.importer} -> {self.imported} ({module_path(self.importer)}:{self.line}){where}"


def module_path(name: str) -> str:
    return source_files()[name].relative_to(ROOT).as_posix()


@cache
def source_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def is_package(name: str) -> bool:
    return source_files()[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module_level: bool = True):
    """(node, runs at import time) for every import statement in the tree."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, module_level
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _imports(node, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), False)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), module_level)
        else:
            yield from _imports(node, module_level)


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement loads (a name imported from a package may be a submodule)."""
    modules = source_files()
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    base = node.module or ""
    if node.level:
        anchor = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    if base in modules and len(found) < len(node.names):
        found.append(base)
    return found


@cache
def edges() -> tuple[Edge, ...]:
    found = []
    for name, path in source_files().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, module_level in _imports(tree):
            found += [Edge(name, target, node.lineno, module_level) for target in _targets(name, node)
                      if target != name]
    return tuple(found)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, []):
            if edge.imported not in index:
                visit(edge.imported)
                low[node] = min(low[node], low[edge.imported])
            elif edge.imported in on_stack:
                low[node] = min(low[node], index[edge.imported])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph.get(node, []):
                if edge.imported == start:
                    return paths[node] + [edge]
                if edge.imported in component and edge.imported not in paths:
                    paths[edge.imported] = paths[node] + [edge]
                    following.append(edge.imported)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component of two or more always has one


def test_the_parser_sees_the_project():
    names = source_files()
    assert {"fakescan.cli", "worker.pipeline", "worker.lab.data", "worker.detectors.base"} <= set(names)
    found = {(edge.importer, edge.imported) for edge in edges()}
    assert ("worker.lab.trainer", "worker.detectors.torch_classifier") in found  # from a import b
    assert ("worker.lab.train", "worker.lab.cnn") in found  # from package import submodule
    assert ("worker.detectors", "worker.detectors.base") in found  # relative or absolute, in a package
    late = [edge for edge in edges() if edge.importer == "worker.lab.cli" and edge.imported == "worker.lab.train"]
    assert late and not late[0].module_level  # imported inside the handler


def test_no_cycle_among_module_level_imports():
    graph: dict[str, list[Edge]] = {}
    for edge in edges():
        if edge.module_level:
            graph.setdefault(edge.importer, []).append(edge)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        " -> ".join([cycle[0].importer] + [edge.imported for edge in cycle]) + "\n    " +
        "\n    ".join(map(str, cycle)) for cycle in found)


def test_detectors_never_import_the_lab():
    offending = [edge for edge in edges() if within(edge.importer, "worker.detectors") and within(edge.imported, LAB)]
    assert not offending, "the detectors import the lab (the lab builds on them, never the reverse):\n" + "\n".join(
        map(str, offending))


def test_serving_code_never_imports_the_lab():
    offending = [edge for edge in edges()
                 if any(within(edge.importer, serving) for serving in SERVING) and within(edge.imported, LAB)]
    assert not offending, "serving code imports the lab:\n" + "\n".join(map(str, offending))


def test_shared_package_and_scheduler_never_import_the_worker():
    offending = [edge for edge in edges()
                 if (within(edge.importer, "fakescan") or within(edge.importer, "scheduler"))
                 and within(edge.imported, "worker")
                 and (edge.importer not in WORKER_DISPATCH or edge.module_level)]
    assert not offending, ("the shared package or the scheduler imports the worker role (only the CLI dispatch "
                           "modules may, inside a command's handler):\n" + "\n".join(map(str, offending)))


def test_the_worker_never_imports_the_scheduler():
    offending = [edge for edge in edges() if within(edge.importer, "worker") and within(edge.imported, "scheduler")]
    assert not offending, "the worker imports the scheduler role:\n" + "\n".join(map(str, offending))


def test_no_module_imports_a_private_name_of_another():
    offending = []
    for name, path in source_files().items():
        for node, _ in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and _targets(name, node):
                offending += [f"{name} imports {alias.name} from {node.module} ({module_path(name)}:{node.lineno})"
                              for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offending, "private names imported across modules (make them public):\n" + "\n".join(offending)


def test_the_checks_name_what_they_find():
    """The cycle finder on a made-up graph: the message names every edge of the cycle."""
    loop = [Edge("a", "b", 1, True), Edge("b", "c", 2, True), Edge("c", "a", 3, True), Edge("c", "d", 4, True)]
    graph: dict[str, list[Edge]] = {}
    for edge in loop:
        graph.setdefault(edge.importer, []).append(edge)
    assert cycles(graph) == [loop[:3]]
