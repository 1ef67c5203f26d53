"""The layout DESIGN.md and mpesa_service/__init__.py describe holds: no import cycles in
mpesa_service/ or recon/ (imports inside functions count too), and recon never imports the
service, which imports recon's shared rules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mpesa_service", "recon")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports: `from a.b import c` is a.b.c when that is a module,
    else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known or name == "service"}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for after in graph.get(node, ()):
            if after not in graph:
                continue
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in on_stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_of_the_service_or_recon_imports_itself_back():
    graph = import_graph()
    assert "mpesa_service.payouts" in graph["mpesa_service.throughput.success_batch"]
    assert cycles(graph) == []


def test_recon_never_imports_the_service():
    graph = import_graph()
    reaching = {
        name: sorted(target for target in targets if target.split(".")[0] != "recon")
        for name, targets in graph.items()
        if name.startswith("recon")
    }
    assert {name: targets for name, targets in reaching.items() if targets} == {}
