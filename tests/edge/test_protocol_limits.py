"""What one connection may cost, on real sockets: head sizes, head timeout, connection cap.

Like nginx: a request line over ``EDGE_MAX_HEADER_LINE`` gets 414, a header line over it or a
head over ``EDGE_MAX_HEADER_SIZE`` 431, a head not complete within ``EDGE_HEADER_TIMEOUT``
408; then the connection is closed. Above ``EDGE_MAX_CONNECTIONS`` a new connection is closed
at once. Applied to every request, answered inline or by the app.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.edge.helpers import publish
from tests.edge.wire import (
    Edge,
    Responses,
    read_until_closed,
    request,
    settings_path,
    status,
    wait_until,
)
from tests.services import RedisServer

WK = "limkey1"
SETTINGS = settings_path(WK)
HEADER_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        client.set("sc:loaded", "0")
        publish(client, WK)
        client.close()
        yield redis_server


@pytest.fixture(scope="module")
def edge(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    log = tmp_path_factory.mktemp("limits") / "edge.log"
    with Edge(server.url, log, EDGE_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
              EDGE_REFRESH_INTERVAL="600") as running:
        yield running


def refused(edge: Edge, data: bytes) -> bytes:
    """Send ``data`` and read until the edge closes the connection."""
    with edge.connect() as sock:
        sock.sendall(data)
        return read_until_closed(sock)


TARGETS = {"inline": SETTINGS, "app": "/healthz"}


@pytest.mark.parametrize("route", list(TARGETS))
def test_a_request_line_over_the_limit_gets_414(edge: Edge, route: str) -> None:
    target = TARGETS[route] + "?" + "a" * 8200

    answer = refused(edge, request(target))

    assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]
    assert b"\r\nconnection: close\r\n" in answer and b"EDGE_MAX_HEADER_LINE" in answer


@pytest.mark.parametrize("route", list(TARGETS))
def test_a_header_line_over_the_limit_gets_431(edge: Edge, route: str) -> None:
    answer = refused(edge, request(TARGETS[route], "X-Big: " + "b" * 8200))

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"a header line is longer than 8192 bytes" in answer


@pytest.mark.parametrize("route", list(TARGETS))
def test_a_head_of_many_small_headers_over_the_limit_gets_431(edge: Edge, route: str) -> None:
    headers = [f"X-H{i}: " + "c" * 990 for i in range(34)]  # 34 KB, each line 1 KB

    answer = refused(edge, request(TARGETS[route], *headers))

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"the request head is longer than 32768 bytes" in answer


def test_a_head_just_under_the_limits_is_answered(edge: Edge) -> None:
    # a request line of 8 KB, a header line of 7 KB, 31 KB in all
    headers = [f"X-H{i}: " + "c" * 990 for i in range(16)] + ["X-Long: " + "d" * 7000]
    with edge.connect() as sock:
        sock.sendall(request(SETTINGS + "?" + "a" * 8000, *headers) + request(SETTINGS))
        responses = Responses(sock)
        assert [status(responses.next()), status(responses.next())] == [200, 200]


def test_a_head_arriving_in_pieces_is_measured_as_it_arrives(edge: Edge) -> None:
    """A header line that grows read after read is refused once the head passes the limit,
    not held until it ends: 8 MB of one endless header get a 431."""
    with edge.connect() as sock:
        sock.sendall(b"GET " + SETTINGS.encode() + b" HTTP/1.1\r\nHost: edge\r\nX-Endless: ")
        sent = threading.Event()

        def flood() -> None:
            try:
                for _ in range(128):
                    sock.sendall(b"e" * 65536)
            except OSError:
                pass  # the edge closed its side
            sent.set()

        threading.Thread(target=flood, daemon=True).start()
        answer = read_until_closed(sock)
        sent.wait(10)

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_head_that_stops_arriving_gets_408(edge: Edge) -> None:
    """Half a request, then nothing: 408 and closed after the header timeout (slowloris)."""
    with edge.connect(timeout=10) as sock:
        sock.sendall(b"GET " + SETTINGS.encode() + b" HTTP/1.1\r\nHost: ed")
        started = time.monotonic()
        answer = read_until_closed(sock)
        waited = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"EDGE_HEADER_TIMEOUT" in answer
    assert waited < 9  # closed by the edge, not by this test's 10 s read timeout


def test_a_new_connection_that_sends_nothing_is_closed_without_an_answer(edge: Edge) -> None:
    with edge.connect(timeout=10) as sock:
        assert read_until_closed(sock) == b""


def test_a_keep_alive_connection_whose_next_head_stalls_gets_408(edge: Edge) -> None:
    with edge.connect(timeout=10) as sock:
        sock.sendall(request(SETTINGS) + b"GET /healthz HTTP/1.1\r\n")
        responses = Responses(sock)
        assert status(responses.next()) == 200
        assert status(responses.next()) == 408
        assert responses.next() is None


def test_a_request_sent_slowly_within_the_timeout_is_answered(edge: Edge) -> None:
    data = request(SETTINGS, "Accept-Encoding: gzip", "User-Agent: slow")
    pieces = [data[i:i + 20] for i in range(0, len(data), 20)]
    pause = (HEADER_TIMEOUT * 0.6) / len(pieces)  # the whole head within 60% of the timeout
    with edge.connect() as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        assert status(Responses(sock).next()) == 200


def test_connections_above_the_cap_are_closed(server: RedisServer, tmp_path: Path) -> None:
    """EDGE_MAX_CONNECTIONS=4: a fifth connection is closed at once; once one of the four
    closes, a new one is served."""
    with Edge(server.url, tmp_path / "edge.log", EDGE_MAX_CONNECTIONS="4") as capped:
        # (wait_for_port's probe connections close first)
        assert wait_until(lambda: _served(capped))
        open_ones = [capped.connect() for _ in range(4)]
        try:
            for sock in open_ones:
                sock.sendall(request(SETTINGS))
                assert status(Responses(sock).next()) == 200
            with capped.connect() as fifth:
                fifth.sendall(request(SETTINGS))
                assert read_until_closed(fifth) == b""
            open_ones.pop().close()
            assert wait_until(lambda: _served(capped))
        finally:
            for sock in open_ones:
                sock.close()


def _served(edge: Edge) -> bool:
    with edge.connect(timeout=5) as sock:
        try:
            sock.sendall(request("/healthz", "Connection: close"))
        except OSError:
            return False
        return status(Responses(sock).next()) == 200


def test_no_refused_request_reached_the_log_as_an_error(edge: Edge) -> None:
    log = edge.log.read_text()
    assert "Traceback" not in log and "Invalid HTTP request" not in log
    assert os.path.getsize(edge.log) < 100_000
