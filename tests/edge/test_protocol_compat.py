"""edge/uvicorn_compat.py is the whole of the edge's dependence on uvicorn internals.

edge/server.py touches no uvicorn name the module does not list and explain, no other edge
module imports uvicorn internals, and the installed uvicorn has every listed name
(scripts/check-uvicorn runs this against another uvicorn release).
"""

from __future__ import annotations

import ast
from pathlib import Path

from edge import uvicorn_compat
from edge.uvicorn_compat import (
    CYCLE,
    FLOW,
    PROTOCOL,
    SERVER_STATE,
    FlowControl,
    HttpToolsProtocol,
    ServerState,
)

EDGE = Path(__file__).resolve().parents[2] / "edge"


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_super(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "super")


def test_the_installed_uvicorn_has_every_listed_name() -> None:
    assert uvicorn_compat.missing() == []
    assert not uvicorn_compat._defined(HttpToolsProtocol, "no_such_name")  # (it can say so)


def test_only_the_compat_module_imports_uvicorn_internals() -> None:
    offenders = []
    for path in sorted(EDGE.glob("*.py")):
        if path.name == "uvicorn_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uvicorn"):
                offenders.append(f"{path.name}: from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {a.name}" for a in node.names
                              if a.name.startswith("uvicorn.")]
    assert offenders == []


def test_every_uvicorn_name_the_protocol_touches_is_listed() -> None:
    tree = ast.parse((EDGE / "server.py").read_text())
    protocol = _class(tree, "EdgeHttpProtocol")
    touched: set[str] = {n.name for n in protocol.body if isinstance(n, ast.FunctionDef)}
    flow: set[str] = set()
    state: set[str] = set()
    for node in ast.walk(protocol):
        if not isinstance(node, ast.Attribute):
            continue
        if _is_self(node.value) or _is_super(node.value):
            touched.add(node.attr)
        elif isinstance(node.value, ast.Attribute) and _is_self(node.value.value):
            if node.value.attr == "flow":
                flow.add(node.attr)
            elif node.value.attr == "server_state":
                state.add(node.attr)
    uvicorn_names = {n for n in touched if uvicorn_compat._defined(HttpToolsProtocol, n)}

    assert uvicorn_names - PROTOCOL.keys() == set()
    assert flow - FLOW.keys() == set()
    assert state - SERVER_STATE.keys() == set()
    # and nothing listed that the edge no longer uses
    assert PROTOCOL.keys() - uvicorn_names == set()
    assert all(uvicorn_compat._defined(FlowControl, n) for n in flow)
    assert all(uvicorn_compat._defined(ServerState, n) for n in state)


def test_the_stand_in_cycle_offers_what_uvicorn_reads() -> None:
    tree = ast.parse((EDGE / "server.py").read_text())
    init = next(n for n in _class(tree, "_Pending").body
                if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assigned = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Attribute) and _is_self(t.value)}

    assert assigned == CYCLE.keys()
