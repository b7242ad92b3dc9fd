"""The keep-alive timer on real sockets: a connection with a request in progress stays open.

An inline answer makes the connection idle and arms the timer; a request after it in the same
read that then waits (on Redis, in the app, behind a client that does not read) must keep the
connection open however long it waits. The edges run with a 1 s keep-alive timeout; Redis is
made to hang for real (SIGSTOP to the test's own redis-server).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.edge.helpers import publish
from tests.edge.wire import Edge, Responses, request, settings_path, status
from tests.services import RedisServer

HELD = "kakey1"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis of this test alone (it is stopped and continued)."""
    with RedisServer() as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        client.set("sc:loaded", "0")
        publish(client, HELD)
        client.close()
        yield redis_server


@pytest.fixture
def edge(server: RedisServer, tmp_path: Path) -> Iterator[Edge]:
    with Edge(server.url, tmp_path / "edge.log", EDGE_KEEP_ALIVE_TIMEOUT="1",
              EDGE_REDIS_TIMEOUT="10") as running:
        with running.connect() as sock:  # the edge holds HELD from now on
            sock.sendall(request(settings_path(HELD)))
            assert status(Responses(sock).next()) == 200
        yield running


@pytest.mark.parametrize("waiting", ["protocol-miss", "app-miss"])
def test_a_request_waiting_on_redis_after_an_inline_answer_is_answered(
        edge: Edge, server: RedisServer, waiting: str) -> None:
    """Inline hit, then (same packet) a key the edge does not hold, read from Redis by the
    protocol's task or (a query string) by the app, while Redis hangs for 2.5 s: longer than
    the keep-alive timeout after the inline answer. Both answers arrive."""
    client = redis.Redis.from_url(server.url)
    publish(client, "kakey2", version=4)
    client.close()
    target = settings_path("kakey2") + ("?v=1" if waiting == "app-miss" else "")
    assert server.proc is not None
    with edge.connect() as sock:
        server.proc.send_signal(signal.SIGSTOP)
        try:
            sock.sendall(request(settings_path(HELD)) + request(target))
            responses = Responses(sock)
            assert status(responses.next()) == 200  # the inline answer, at once
            time.sleep(2.5)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        second = responses.next()

    assert status(second) == 200, second
    assert second is not None and b"x-settings-version: 4\r\n" in second


def test_a_client_that_does_not_read_gets_every_answer(edge: Edge) -> None:
    """20,000 pipelined hits, the client reading nothing for 2.5 s (its receive buffer small):
    the edge's buffers fill, requests queue, and none of it is idle. Every answer arrives."""
    count = 20_000
    one = request(settings_path(HELD), "Accept-Encoding: gzip")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", edge.port))
    with sock:
        sender = threading.Thread(target=lambda: _send_quietly(sock, one * count), daemon=True)
        sender.start()
        time.sleep(2.5)  # not reading: more than twice the keep-alive timeout
        responses = Responses(sock)
        statuses = []
        for _ in range(count):
            statuses.append(status(responses.next()))
            if statuses[-1] is None:
                break
        sender.join(10)

    assert statuses.count(200) == count, (len(statuses), statuses[-3:])


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the edge closed the connection: the reader sees it


def test_an_idle_connection_still_closes_after_the_timeout(edge: Edge) -> None:
    """After its last answer, a connection is closed about a second later (1 s timeout)."""
    with edge.connect(timeout=10) as sock:
        sock.sendall(request(settings_path(HELD)) + request("/healthz"))
        responses = Responses(sock)
        assert [status(responses.next()), status(responses.next())] == [200, 200]
        assert responses.next() is None  # closed by the edge, not by the 10 s read timeout
