"""An answer that fails: 500 and the connection closed, and never a body for HEAD.

``settings_answer`` is made to raise (monkeypatched) in an edge running in this process: a
real uvicorn server in a thread, on a real socket, with the edge's protocol.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

import edge.app
import edge.server
from edge.app import create_app
from edge.settings import EdgeSettings
from tests.edge.wire import read_until_closed, request, settings_path
from tests.services import free_port, wait_for_port


@contextmanager
def serving(settings: EdgeSettings) -> Iterator[int]:
    """The edge app under uvicorn with edge/server.py's protocol, in a thread; its port."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                            http=edge.server.EdgeHttpProtocol, lifespan="on", ws="none",
                            access_log=False, server_header=False, proxy_headers=False,
                            log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(settings.port)
        yield settings.port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("provoked by the test")

    monkeypatch.setattr(edge.server, "settings_answer", broken)
    monkeypatch.setattr(edge.app, "settings_answer", broken)


def ask(port: int, method: str) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request(settings_path("errkey"), method=method))
        return read_until_closed(sock)


def normalized(raw: bytes) -> bytes:
    return re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"date: *\r\n", raw)


@pytest.mark.usefixtures("failing")
def test_a_failed_answer_is_a_500_without_a_body_for_head(redis_url: str) -> None:
    answers = {}
    for fast in (True, False):  # answered by the protocol's task, then by the app
        settings = EdgeSettings(redis_url=redis_url, port=free_port(), fast_path=fast)
        with serving(settings) as port:
            answers[fast] = {method: ask(port, method) for method in ("HEAD", "GET")}

    head, get = answers[True]["HEAD"], answers[True]["GET"]
    assert head.startswith(b"HTTP/1.1 500 ") and b"\r\ncontent-length: 21\r\n" in head
    assert head.endswith(b"\r\n\r\n")  # the head alone: no body
    assert get.endswith(b"\r\n\r\nInternal Server Error")
    assert b"\r\nconnection: close\r\n" in head and b"\r\nconnection: close\r\n" in get
    for method in ("HEAD", "GET"):  # the same bytes as uvicorn's answer for a failed app
        assert normalized(answers[True][method]) == normalized(answers[False][method])
