"""The import contract of the package: the layering the architecture promises, checked.

The graph is built from the source with `ast` (every import statement, including those
inside functions and `if TYPE_CHECKING:` blocks: a deferred import is still a dependency,
and one that is deferred to break a cycle hides the cycle instead of removing it).
Rules:
- no cycles among proxy64's modules;
- only the composition root (app.py) imports the front ends (the SOCKS and HTTP
  listeners' handlers), so the front ends never wire each other or themselves;
- the dialer's interface (proxy64/net/dial_types.py) stands apart from its implementation
  (proxy64/net/dialer.py): only the composition root imports the implementation, and the
  interface imports nothing from proxy64/net;
- the relay hub is handed down, never found: no module-level hub lookup exists;
- the pure packages (proto, packet, flow) import nothing from net, tun, commands or app.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy64"

# The modules that handle a listener's accepted connections (SOCKS, HTTP CONNECT/forwarding).
FRONT_ENDS = frozenset({
    "proxy64.net.socks_server",
    "proxy64.net.http_server",
    "proxy64.net.executor",
})  # fmt: skip
# Where the parts are built and handed down.
COMPOSITION_ROOTS = frozenset({"proxy64.app"})
IMPLEMENTATIONS = frozenset({"proxy64.net.dialer", "proxy64.net.dial_plan"})
# An implementation module may build on another (the dialer on its planning half).
PURE = ("proxy64.proto", "proxy64.packet", "proxy64.flow")
IMPURE = ("proxy64.net", "proxy64.tun", "proxy64.commands", "proxy64.app", "proxy64.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every proxy64 module `name` imports (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    yield submodule
                elif source in modules:
                    yield source


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {
        name: {target for target in imported(name, path, modules) if target != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
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
            visit(node)
    return found


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    # the premise: the walker finds the modules and their edges (else every rule passes)
    assert {"proxy64.app", "proxy64.net.dialer", "proxy64.net.relay_hub"} <= graph.keys()
    assert "proxy64.net.dial_types" in graph["proxy64.net.dialer"]
    assert "proxy64.net.dialer" in graph["proxy64.app"]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_only_the_composition_root_wires_front_ends(front_end: str) -> None:
    graph = import_graph()
    importers = {name for name, targets in graph.items() if front_end in targets}
    others = importers - COMPOSITION_ROOTS - FRONT_ENDS
    assert others == set(), f"{front_end} is imported outside app.py: {sorted(others)}"
    # front ends build on shared modules, never on each other's wiring
    wired_by_peers = {name for name in importers & FRONT_ENDS}
    assert wired_by_peers <= ALLOWED_FRONT_END_EDGES.get(front_end, set()), (
        f"{front_end} is imported by {sorted(wired_by_peers)}"
    )


# A protocol's listener builds on the one executor; nothing else.
ALLOWED_FRONT_END_EDGES: dict[str, set[str]] = {
    "proxy64.net.executor": {"proxy64.net.socks_server", "proxy64.net.http_server"},
}


def test_the_dialer_interface_stands_apart() -> None:
    graph = import_graph()
    interface = graph["proxy64.net.dial_types"]
    assert not interface & IMPLEMENTATIONS
    assert not {target for target in interface if target.startswith("proxy64.net.")}
    for implementation in IMPLEMENTATIONS:
        users = {name for name, targets in graph.items() if implementation in targets}
        allowed = COMPOSITION_ROOTS | IMPLEMENTATIONS
        assert users <= allowed, f"{implementation} used outside app.py: {users}"


def test_no_run_scoped_hub_lookup() -> None:
    for name, path in all_modules().items():
        tree = ast.parse(path.read_text(), str(path))
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert "current_hub" not in names, f"{name} looks the relay hub up, is not given it"


def test_pure_packages_import_no_io_layer() -> None:
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith(PURE):
            bad = {target for target in targets if target.startswith(IMPURE)}
            assert bad == set(), f"{name} (pure) imports {sorted(bad)}"
