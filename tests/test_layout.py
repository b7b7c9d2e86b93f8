"""The package's layout holds: the import graph has no circle, nothing imports back up into the
CLI, and the runtime imports only itself (what a replica loads), read from the source with ``ast``.

Imports under ``if TYPE_CHECKING:`` are left out: they are annotations, not dependencies at run
time. Imports inside functions count (a lazy import is still a dependency), except where a
module's rule below says otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fnserve

PACKAGE = Path(fnserve.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The fnserve modules ``path`` imports at run time (as written: ``a.b`` for ``from a import b``
    is resolved to the module ``a.b`` when that is a module, else ``a``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {name for name in found if name.split(".")[0] == "fnserve" and name in MODULES}


FILES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = set(FILES)
GRAPH = {name: _imports(path) - {name} for name, path in FILES.items()}


def _owner(module: str) -> str:
    """The part a module belongs to: ``fnserve.runtime.app`` -> ``fnserve.runtime``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_is_read() -> None:
    """The reader sees real edges (a broken one would make every rule below pass)."""
    assert "fnserve.runtime.errors" in GRAPH["fnserve.runtime.store"]
    assert "fnserve.deploy" in GRAPH["fnserve.cli.deploy"]
    assert "fnserve.runtime.errors" in GRAPH["fnserve.runtime.config"]


def test_no_module_imports_itself_back_in_a_circle() -> None:
    """``fnserve/__init__.py`` re-exports the runtime's API; circles through it are not layering."""
    graph = {name: targets - {"fnserve"} for name, targets in GRAPH.items() if name != "fnserve"}
    assert _cycles(graph) == []


def test_no_part_imports_another_in_a_circle() -> None:
    """Between parts (runtime, gateway, images, docker, k8s, local, cli, ...) the graph is a DAG."""
    parts: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        if name == "fnserve":
            continue
        parts.setdefault(_owner(name), set()).update(
            _owner(target) for target in targets if target != "fnserve" and _owner(target) != _owner(name)
        )
    assert _cycles(parts) == []


def test_nothing_imports_the_cli() -> None:
    """The CLI is the top: the library never climbs back up into it."""
    climbing = {
        name: sorted(t for t in targets if _owner(t) == "fnserve.cli")
        for name, targets in GRAPH.items()
        if _owner(name) != "fnserve.cli"
    }
    assert {name: found for name, found in climbing.items() if found} == {}


def test_the_runtime_imports_only_the_runtime() -> None:
    """What a replica loads: no gateway, target, image or CLI module, and not the project layer."""
    outside = {
        name: sorted(t for t in targets if not t.startswith("fnserve.runtime") and t != "fnserve")
        for name, targets in GRAPH.items()
        if name.startswith("fnserve.runtime")
    }
    assert {name: found for name, found in outside.items() if found} == {}
