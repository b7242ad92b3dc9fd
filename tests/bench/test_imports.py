"""The bench's modules import each other without a cycle (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _imports(path: Path) -> set[str]:
    """The ``bench.*`` modules a file imports anywhere in it (functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bench":
                found.update(f"bench.{a.name}" for a in node.names)
            elif node.module.startswith("bench."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bench."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_bench_modules_import_each_other_without_a_cycle() -> None:
    # Given every module of bench/ and the bench modules each one imports
    graph = {f"bench.{p.stem}": _imports(p) - {f"bench.{p.stem}"}
             for p in BENCH.glob("*.py") if p.stem != "__init__"}
    assert "bench.scenarios" in graph["bench.runner"]  # the scan sees the runner's phases

    # Then following the imports never comes back to where it started
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
