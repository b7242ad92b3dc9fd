"""Fixtures of the propagation proofs: real edge processes, nginx, a page server, Chromium.

Everything a fixture starts is stopped by its PID at teardown, whatever the test did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.e2e.browser import Browser
from tests.e2e.servers import Edge, Nginx, PageServer

StartEdge = Callable[[Mapping[str, str]], Edge]
StartNginx = Callable[[Edge], Nginx]


@pytest.fixture
def assets_dir(tmp_path: Path) -> Path:
    """EDGE_ASSETS_DIR: served by the edge at ``/next-integrations/``."""
    path = tmp_path / "assets"
    path.mkdir()
    return path


@pytest.fixture
def start_edge(redis_url: str, assets_dir: Path, tmp_path: Path) -> Iterator[StartEdge]:
    """Start ``python -m edge`` with extra EDGE_* variables; stopped at teardown."""
    started: list[Edge] = []

    def start(env: Mapping[str, str]) -> Edge:
        edge = Edge(redis_url, assets_dir, env, tmp_path)
        started.append(edge)
        edge.start()
        return edge

    yield start
    for edge in started:
        edge.stop()


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[StartNginx]:
    """Start Debian's nginx caching in front of an edge; stopped at teardown."""
    started: list[Nginx] = []

    def start(edge: Edge) -> Nginx:
        nginx = Nginx(edge.url, tmp_path)
        started.append(nginx)
        nginx.start()
        return nginx

    yield start
    for nginx in started:
        nginx.stop()


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium with a fresh profile (an empty browser cache) for one test."""
    with Browser() as b:
        yield b
