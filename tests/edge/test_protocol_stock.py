"""The edge's protocol and STOCK uvicorn put the same bytes on the wire.

Two real edges read one Redis: ``python -m edge`` (edge/server.py, fast path on) and the same
program with uvicorn's own ``HttpToolsProtocol`` (tests/edge/wire.py). Every request shape
goes to both, in the same order (so both caches see the same misses and hits); the answers
must be identical but for ``Date`` and ``Age``. tests/edge/test_server.py compares the fast
path with the edge's protocol with the fast path off; this compares with uvicorn itself.
scripts/check-uvicorn runs it against another uvicorn release.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.edge.helpers import document as bundle
from tests.edge.helpers import envelope, publish
from tests.edge.test_server import exchange, get, normalized
from tests.edge.wire import Edge
from tests.services import RedisServer

WK = "stockkey1"
ETAG = envelope(WK, bundle(WK)).etag
QUICK = {"EDGE_REFRESH_INTERVAL": "600"}


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(port of the edge, port of the stock-uvicorn edge), both holding ``WK``."""
    logs = tmp_path_factory.mktemp("stock")
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.set("sc:loaded", "0")
        for key, version in ((WK, 1), ("stockmiss1", 3), ("stockmiss2", 4), ("stockmiss3", 5)):
            publish(client, key, version=version)
        client.close()
        with Edge(server.url, logs / "edge.log", **QUICK) as fast, \
                Edge(server.url, logs / "stock.log", stock=True, **QUICK) as stock:
            for port in (fast.port, stock.port):
                assert exchange(port, get(WK)).startswith(b"HTTP/1.1 200 ")
            yield fast.port, stock.port


def raw(path: str, *headers: str, method: str = "GET", version: str = "1.1",
        body: bytes = b"") -> bytes:
    return get("", *headers, method=method, version=version, path=path) + body


SETTINGS = f"/v1/projects/{WK}/settings"
CASES: dict[str, list[bytes]] = {
    # hits, answered inline by the edge
    "gzip": [get(WK, "Accept-Encoding: gzip, deflate, br, zstd")],
    "identity": [get(WK)],
    "gzip-q0": [get(WK, "Accept-Encoding: gzip;q=0, identity")],
    "head": [get(WK, "Accept-Encoding: gzip", method="HEAD")],
    "head-identity": [get(WK, method="HEAD")],
    "http-1.0": [get(WK, version="1.0")],
    "http-1.0-keep-alive": [get(WK, "Connection: keep-alive", version="1.0")],
    "connection-close": [get(WK, "Connection: close")],
    "connection-keep-alive": [get(WK, "Connection: keep-alive")],
    "if-none-match-304": [get(WK, f"If-None-Match: {ETAG}", "Accept-Encoding: gzip")],
    "if-none-match-304-head": [get(WK, f"If-None-Match: {ETAG}", method="HEAD")],
    "if-none-match-weak-list": [get(WK, f'If-None-Match: "x", W/{ETAG}')],
    "if-none-match-other": [get(WK, 'If-None-Match: "nope"')],
    "if-none-match-star": [get(WK, "If-None-Match: *")],
    "if-modified-since-304": [get(WK, "If-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT")],
    "if-modified-since-older": [get(WK, "If-Modified-Since: Mon, 13 Nov 2023 00:00:00 GMT")],
    "if-modified-since-junk": [get(WK, "If-Modified-Since: yesterday")],
    "both-conditions": [get(WK, 'If-None-Match: "nope"',
                            "If-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT")],
    "range-ignored": [get(WK, "Range: bytes=0-3")],
    "many-headers": [get(WK, *(f"X-Extra-{i}: {i}" for i in range(40)))],
    # misses and unknown keys: Redis is read
    "miss": [get("stockmiss1", "Accept-Encoding: gzip")],
    "miss-head": [get("stockmiss2", method="HEAD")],
    "unknown-key": [get("neverpublished")],
    "unknown-key-again": [get("neverpublished", method="HEAD")],
    "impossible-key": [get("a.b")],
    "empty-key": [raw("/v1/projects//settings")],
    # to the app
    "options": [get(WK, "Access-Control-Request-Headers: content-type", method="OPTIONS")],
    "post": [get(WK, "Content-Length: 0", method="POST")],
    "post-with-body": [get(WK, "Content-Length: 5", method="POST") + b"hello"],
    "post-chunked": [get(WK, "Transfer-Encoding: chunked", method="POST")
                     + b"5\r\nhello\r\n0\r\n\r\n"],
    "put": [get(WK, "Content-Length: 0", method="PUT")],
    "delete": [get(WK, method="DELETE")],
    "expect-100": [get(WK, "Expect: 100-continue", "Content-Length: 0", method="POST")],
    "query-string": [raw(SETTINGS + "?x=1")],
    "escaped": [raw("/v1/projects/stockkey%31/settings")],
    "absolute-form": [raw(f"http://edge{SETTINGS}")],
    "trailing-slash": [raw(SETTINGS + "/")],
    "healthz": [raw("/healthz")],
    "healthz-head": [raw("/healthz", method="HEAD")],
    "propagation": [raw("/v1/propagation")],
    "not-found": [raw("/nope")],
    "assets-off": [raw("/next-integrations/integrations/x/1.0.0/x.js.gz")],
    # pipelines
    "pipelined-hits": [get(WK), get(WK, "Accept-Encoding: gzip"), get(WK, method="HEAD"),
                       get(WK, f"If-None-Match: {ETAG}")],
    "pipelined-mixed": [get(WK), get("stockmiss3"), raw("/healthz"), get(WK, method="HEAD"),
                        get("neverpublished2"), raw(SETTINGS + "?y=2"), get(WK)],
    "pipelined-close": [get(WK), get(WK, "Connection: close"), get(WK)],
    # not HTTP
    "malformed": [b"GET / HTTP/1.1\r\nHost edge\r\n\r\n"],
    "bad-version": [b"GET / HTTP/9.9\r\nHost: edge\r\n\r\n"],
}


def test_every_case_is_compared(edges: tuple[int, int]) -> None:
    """Each case, on both edges, in one fixed order (caches evolve alike); one assertion per
    case so that a failure names it."""
    fast_port, stock_port = edges
    differing = {}
    for case, requests in CASES.items():
        fast = exchange(fast_port, *requests)
        stock = exchange(stock_port, *requests)
        if not fast.startswith(b"HTTP/1.1 ") or normalized(fast) != normalized(stock):
            differing[case] = (fast[:600], stock[:600])
    assert differing == {}


def test_redis_down_same_answers_as_stock(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Redis gone: a held bundle due for its re-check is served stale, a never-seen key gets
    the 503 with Retry-After — the same bytes from both."""
    logs = tmp_path_factory.mktemp("stock-down")
    quick = {"EDGE_REFRESH_INTERVAL": "0.5", "EDGE_REDIS_RETRY_INTERVAL": "0.2"}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.set("sc:loaded", "0")
        publish(client, "downkey")
        client.close()
        with Edge(server.url, logs / "edge.log", **quick) as fast, \
                Edge(server.url, logs / "stock.log", stock=True, **quick) as stock:
            ports = (fast.port, stock.port)
            for port in ports:
                assert exchange(port, get("downkey")).startswith(b"HTTP/1.1 200 ")
            server.stop()
            time.sleep(1.2)  # past the refresh interval and its grace: the request re-checks
            answers = [(exchange(port, get("downkey")), exchange(port, get("neverseen")),
                        exchange(port, get("downkey"), get("neverseen", method="HEAD")))
                       for port in ports]

    (stale, unavailable, both), stock_answers = answers
    assert stale.startswith(b"HTTP/1.1 200 ") and b"x-settings-stale: 1\r\n" in stale
    assert unavailable.startswith(b"HTTP/1.1 503 ") and b"retry-after: " in unavailable
    assert [normalized(a) for a in (stale, unavailable, both)] == \
        [normalized(a) for a in stock_answers]
