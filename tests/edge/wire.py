"""Real edges on real sockets for the protocol tests: start one, talk raw HTTP/1.1 to it.

An edge is ``python -m edge`` (settings-cdn-edge: uvicorn, uvloop, edge/server.py's
protocol) or, with ``stock=True``, the same program with uvicorn's own ``HttpToolsProtocol``
in its place: every other ``uvicorn.run`` argument is the edge's (edge/cli.py).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

# settings-cdn-edge with uvicorn's stock protocol: the CLI's own uvicorn.run call, http swapped.
_STOCK = """\
import sys, uvicorn
from edge import cli
run = uvicorn.run
uvicorn.run = lambda *a, **k: run(*a, **{**k, "http": "httptools"})
sys.exit(cli.main([]))
"""


class Edge:
    """A running edge process; ``stop()`` (or the context manager) ends it."""

    def __init__(self, redis_url: str, log: Path, *, stock: bool = False,
                 **settings: str) -> None:
        self.port = free_port()
        self.log = log
        env = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(self.port),
               "EDGE_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT), **settings}
        command = [sys.executable, "-c", _STOCK] if stock else [sys.executable, "-m", "edge"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(log.read_text()) from None

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Edge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connect(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(timeout)
        return sock


def request(target: str, *headers: str, method: str = "GET", version: str = "1.1",
            body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: edge", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def settings_path(write_key: str) -> str:
    return f"/v1/projects/{write_key}/settings"


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class Responses:
    """Reads Content-Length-framed responses off a socket, incrementally."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def next(self, *, head: bool = False) -> bytes | None:
        """The next whole response (``head``: the answer to a HEAD, no body); None when the
        connection ended first."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                match = re.search(rb"(?im)^content-length: (\d+)\r?$", self.buffer[:end])
                length = 0 if head or not match or self.buffer.startswith(b"HTTP/1.1 304") \
                    else int(match.group(1))
                total = end + 4 + length
                if len(self.buffer) >= total:
                    response, self.buffer = self.buffer[:total], self.buffer[total:]
                    return response
            if self.closed:
                return None
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.buffer += chunk


def status(response: bytes | None) -> int | None:
    if not response:
        return None
    return int(response.split(b" ", 2)[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds passed (a bound, not a goal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
