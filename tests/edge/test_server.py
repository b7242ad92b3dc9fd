"""edge/server.py on real sockets: the inline answer is the ASGI answer, connection rules kept.

Two real edges (``python -m edge``: uvicorn, uvloop, the edge's protocol) read one Redis, one
with ``EDGE_FAST_PATH`` on and one with it off; the same raw requests must get the same bytes
back from both, apart from ``Date`` and ``Age``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.edge.helpers import publish
from tests.services import RedisServer, free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
WK = "srvkey1"


def _start_edge(redis_url: str, log: Path, *, fast: bool, **extra: str
                ) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(port),
           "EDGE_HOST": "127.0.0.1", "EDGE_FAST_PATH": "true" if fast else "false",
           "PYTHONPATH": str(ROOT), "EDGE_ASSETS_UPSTREAM": "", **extra}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port)
    return proc, port


@pytest.fixture
def edges(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(port of the fast-path edge, port of the ASGI-only edge), both holding ``WK``."""
    publish(redis_client, WK, published_at=1_700_000_000)
    fast, fast_port = _start_edge(redis_url, tmp_path / "fast.log", fast=True)
    try:
        plain, plain_port = _start_edge(redis_url, tmp_path / "plain.log", fast=False)
        try:
            for port in (fast_port, plain_port):  # fill both caches (a miss takes the app)
                assert exchange(port, get(WK)).startswith(b"HTTP/1.1 200 ")
            yield fast_port, plain_port
        finally:
            stop_process(plain)
    finally:
        stop_process(fast)


def get(write_key: str, *headers: str, method: str = "GET", version: str = "1.1",
        path: str | None = None) -> bytes:
    target = path if path is not None else f"/v1/projects/{write_key}/settings"
    lines = [f"{method} {target} HTTP/{version}", "Host: edge", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_responses(sock: socket.socket, count: int, *, heads: tuple[bool, ...] = (),
                    timeout: float = 5.0) -> bytes:
    """Read until ``count`` responses (Content-Length framed) arrived, or EOF; ``heads``
    marks the answers to HEAD requests (a length, no body)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        done, rest = 0, data
        while done < count:
            head, sep, after = rest.partition(b"\r\n\r\n")
            if not sep:
                break
            match = re.search(rb"(?im)^content-length: (\d+)\r?$", head)
            length = int(match.group(1)) if match else 0
            if head.startswith(b"HTTP/1.1 304") or (done < len(heads) and heads[done]):
                length = 0
            if len(after) < length:
                break
            done, rest = done + 1, after[length:]
        if done >= count:
            return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def exchange(port: int, *requests: bytes) -> bytes:
    """Send the requests in one write (pipelined when several) and read every answer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(requests))
        return _read_responses(sock, len(requests),
                               heads=tuple(r.startswith(b"HEAD ") for r in requests))


def normalized(raw: bytes) -> bytes:
    """Drop what legitimately differs between two answers: the Date and Age values."""
    raw = re.sub(rb"(?im)^date: [^\r\n]*\r\n", b"date: *\r\n", raw)
    return re.sub(rb"(?im)^age: \d+\r\n", b"age: *\r\n", raw)


def inline_answers(port: int) -> int:
    body = exchange(port, get("", path="/metrics", version="1.0")).decode()
    match = re.search(r"(?m)^edge_inline_answers_total (\d+)$", body)
    assert match, body
    return int(match.group(1))


ETAG_RE = re.compile(rb"(?im)^etag: ([^\r\n]+)\r\n")

CASES = {
    "gzip": [get(WK, "Accept-Encoding: gzip, deflate, br")],
    "identity": [get(WK)],
    "gzip-q0": [get(WK, "Accept-Encoding: gzip;q=0, identity")],
    "head": [get(WK, "Accept-Encoding: gzip", method="HEAD")],
    "http-1.0": [get(WK, version="1.0")],
    "connection-close": [get(WK, "Connection: close")],
    "if-modified-since": [get(WK, "If-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT")],
    "if-modified-since-older": [get(WK, "If-Modified-Since: Mon, 13 Nov 2023 00:00:00 GMT")],
    "if-none-match-star": [get(WK, "If-None-Match: *")],
    "if-none-match-other": [get(WK, 'If-None-Match: "nope"')],
    "options": [get(WK, "Access-Control-Request-Headers: content-type", method="OPTIONS")],
    "post": [get(WK, "Content-Length: 0", method="POST")],
    "query-string": [get(WK, path=f"/v1/projects/{WK}/settings?x=1")],
    "query-ending-in-settings": [get(WK, path=f"/v1/projects/{WK}/settings?next=/settings")],
    "escaped": [get(WK, path="/v1/projects/srvkey%31/settings")],
    "unknown-key": [get("neverpublished")],
    "impossible-key": [get("a.b")],
    "pipelined": [get(WK), get(WK, "Accept-Encoding: gzip"), get(WK, method="HEAD"), get(WK)],
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_inline_answer_equals_asgi_answer(edges: tuple[int, int], case: str) -> None:
    """Byte for byte (Date and Age aside), whichever path answered."""
    fast_port, plain_port = edges
    requests = CASES[case]

    fast = exchange(fast_port, *requests)
    plain = exchange(plain_port, *requests)

    assert fast.startswith(b"HTTP/1.1 ")
    assert normalized(fast) == normalized(plain)


def test_malformed_conditions_are_no_conditions(edges: tuple[int, int]) -> None:
    """Junk glued to the current ETag, and two If-Modified-Since dates (each one recent
    enough for a 304), are not conditions (RFC 9110 §13.1.2, §13.1.3): a 200, from either
    path."""
    etag = ETAG_RE.search(exchange(edges[0], get(WK)))
    assert etag
    tag = etag.group(1).decode()
    since = "If-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT"
    assert exchange(edges[0], get(WK, since)).startswith(b"HTTP/1.1 304 ")

    for port in edges:
        for request in (get(WK, f"If-None-Match: {tag}x"), get(WK, f'If-None-Match: W/"x"W/{tag}'),
                        get(WK, since, since)):
            assert exchange(port, request).startswith(b"HTTP/1.1 200 "), (port, request)


def test_revalidation_with_current_etag_is_inline_304(edges: tuple[int, int]) -> None:
    """The exact ETag back gives a 304 from the protocol; the counter shows who answered."""
    fast_port, plain_port = edges
    etag = ETAG_RE.search(exchange(fast_port, get(WK)))
    assert etag
    before = inline_answers(fast_port), inline_answers(plain_port)

    fast = exchange(fast_port, get(WK, f"If-None-Match: {etag.group(1).decode()}"))
    plain = exchange(plain_port, get(WK, f"If-None-Match: W/{etag.group(1).decode()}, \"x\""))

    assert fast.startswith(b"HTTP/1.1 304 ") and plain.startswith(b"HTTP/1.1 304 ")
    assert normalized(fast) == normalized(plain)
    assert (inline_answers(fast_port), inline_answers(plain_port)) == (before[0] + 1, 0)


def test_pipelined_answers_keep_their_order(edges: tuple[int, int],
                                            redis_client: redis.Redis) -> None:
    """A hit pipelined behind a miss (which awaits Redis in the app) is answered after it."""
    fast_port, _ = edges
    publish(redis_client, "srvkey2", version=7)

    raw = exchange(fast_port, get(WK), get("srvkey2"), get(WK), get("srvkey2"))

    versions = re.findall(rb"(?im)^x-settings-version: (\d+)\r\n", raw)
    assert versions == [b"1", b"7", b"1", b"7"]


def test_connection_rules(edges: tuple[int, int], redis_client: redis.Redis) -> None:
    """Keep-alive holds across the protocol's answers, a miss's included; HTTP/1.0 and
    Connection: close end it."""
    fast_port, _ = edges
    publish(redis_client, "srvkey5")
    with socket.create_connection(("127.0.0.1", fast_port)) as sock:
        for key in ("srvkey5", WK, "srvkey5"):  # a miss (awaits Redis), then hits
            sock.sendall(get(key))
            assert _read_responses(sock, 1).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.3)
    for request in (get(WK, version="1.0"), get(WK, "Connection: close")):
        with socket.create_connection(("127.0.0.1", fast_port)) as sock:
            sock.sendall(request)
            answer = _read_responses(sock, 1)
            assert b"\r\nconnection: close\r\n" in answer
            assert sock.recv(1) == b""  # the server closed the connection


def test_idle_connection_closes_after_keep_alive_timeout(edges: tuple[int, int]) -> None:
    """An inline answer re-arms uvicorn's keep-alive timer (5 s), once: no early close."""
    fast_port, _ = edges
    with socket.create_connection(("127.0.0.1", fast_port)) as sock:
        sock.sendall(get(WK) + get(WK))  # two inline answers from one read
        assert _read_responses(sock, 2).count(b"HTTP/1.1 200 ") == 2
        time.sleep(3.5)
        sock.sendall(get(WK))  # still open past most of the timeout
        assert _read_responses(sock, 1).startswith(b"HTTP/1.1 200 ")
        sock.settimeout(8)
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert 4.0 < time.monotonic() - started < 7.5


def test_a_miss_is_answered_by_the_protocol_too(edges: tuple[int, int],
                                                redis_client: redis.Redis) -> None:
    """A key neither edge holds yet: read from Redis by the protocol's own task, same bytes."""
    fast_port, plain_port = edges
    publish(redis_client, "srvkey3", version=5)
    before = inline_answers(fast_port)

    fast = exchange(fast_port, get("srvkey3", "Accept-Encoding: gzip"))
    plain = exchange(plain_port, get("srvkey3", "Accept-Encoding: gzip"))

    assert fast.startswith(b"HTTP/1.1 200 ") and b"x-settings-version: 5\r\n" in fast
    assert normalized(fast) == normalized(plain)
    assert inline_answers(fast_port) == before + 1


def test_a_client_gone_before_its_miss_is_answered(edges: tuple[int, int],
                                                   redis_client: redis.Redis,
                                                   tmp_path: Path) -> None:
    """Hanging up while the protocol awaits Redis costs nothing: no error, the edge serves on."""
    fast_port, _ = edges
    publish(redis_client, "srvkey4")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", fast_port)) as sock:
            sock.sendall(get("srvkey4") + get(WK))
        # closed at once, before the answers

    assert exchange(fast_port, get("srvkey4")).startswith(b"HTTP/1.1 200 ")
    assert b"Traceback" not in (tmp_path / "fast.log").read_bytes()


def test_redis_down_same_answers_from_both_paths(tmp_path: Path) -> None:
    """Redis gone: a held bundle due for its check is served stale, a never-seen key gets the
    503 — by the protocol exactly as by the app."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        publish(client, "downkey")
        client.close()
        quick = {"EDGE_REFRESH_INTERVAL": "0.5", "EDGE_REDIS_RETRY_INTERVAL": "0.2"}
        fast, fast_port = _start_edge(server.url, tmp_path / "fast.log", fast=True, **quick)
        plain, plain_port = _start_edge(server.url, tmp_path / "plain.log", fast=False, **quick)
        try:
            for port in (fast_port, plain_port):
                assert exchange(port, get("downkey")).startswith(b"HTTP/1.1 200 ")
            server.stop()
            time.sleep(1.2)  # past the refresh interval and its grace: the request re-checks

            answers = {port: (exchange(port, get("downkey")), exchange(port, get("neverseen")))
                       for port in (fast_port, plain_port)}
        finally:
            for proc in (fast, plain):
                stop_process(proc)

    (fast_stale, fast_503), (plain_stale, plain_503) = answers[fast_port], answers[plain_port]
    assert fast_stale.startswith(b"HTTP/1.1 200 ") and b"x-settings-stale: 1\r\n" in fast_stale
    assert fast_503.startswith(b"HTTP/1.1 503 ") and b"retry-after: " in fast_503
    assert normalized(fast_stale) == normalized(plain_stale)
    assert normalized(fast_503) == normalized(plain_503)
