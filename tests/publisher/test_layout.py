"""The publisher's import graph keeps the shape its folders name.

``core/`` (pure: model, catalog, rules, FQL, filters, compiler, bundles) is at the bottom,
``store/`` (SQLite) above it, then the write path (service, staging, recovery, publish, ...),
then ``api/`` (the Config API and the webhook over HTTP) and the CLI. Imports point down only,
so no module can be part of an import cycle. Every import counts, those inside functions and
under ``TYPE_CHECKING`` too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "publisher"

# Below the HTTP API: none of these may import from publisher.api.
WRITE_PATH = ["publisher.errors", "publisher.settings", "publisher.publish", "publisher.staging",
              "publisher.edits", "publisher.webhook_events", "publisher.recovery",
              "publisher.service", "publisher.retry"]
# What a pure module must not reach for.
IO_MODULES = {"sqlite3", "redis", "starlette", "uvicorn", "socket", "asyncio", "threading",
              "subprocess", "http", "urllib"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, anywhere in it (absolute names; ``from p import m`` names
    ``p.m`` when ``m`` is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imported(path, name) if m in modules and m != name}
            for name, path in modules.items()}


def external(name: str) -> set[str]:
    path = PACKAGE.parent / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
    return {m.partition(".")[0] for m in imported(path, name)}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_function_level_imports() -> None:
    """``serve`` imports the app inside the function (the other commands never load
    Starlette); the scan must count it, or the checks below would prove nothing."""
    edges = graph()
    assert "publisher.api.app" in edges["publisher.cli"]
    assert "publisher.core.filters" in edges["publisher.core.compile"]  # also a lazy one


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("layer, allowed", [
    ("publisher.core", ("publisher.core", "publisher.errors")),
    ("publisher.store", ("publisher.store", "publisher.core", "publisher.errors")),
])
def test_a_layer_imports_only_what_is_below_it(layer: str, allowed: tuple[str, ...]) -> None:
    wrong = {(name, dep) for name, deps in graph().items()
             if name == layer or name.startswith(layer + ".")
             for dep in deps
             if not any(dep == a or dep.startswith(a + ".") for a in allowed)}
    assert wrong == set()


def test_core_does_no_io() -> None:
    wrong = {(name, tuple(sorted(external(name) & IO_MODULES))) for name in graph()
             if name.startswith("publisher.core") and external(name) & IO_MODULES}
    assert wrong == set()


def test_nothing_below_the_api_imports_it() -> None:
    edges = graph()
    below = [n for n in edges if n in WRITE_PATH or n.startswith(("publisher.core",
                                                                   "publisher.store"))]
    wrong = {(name, dep) for name in below for dep in edges[name]
             if dep.startswith("publisher.api")}
    assert wrong == set()
