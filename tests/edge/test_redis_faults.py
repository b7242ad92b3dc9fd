"""Redis faults never turn into a wrong answer: an empty (not loaded) Redis, one source's
corrupt keys, a Redis that refuses connections. Real redis-server processes; the edge as
settings-cdn-edge runs it (``python -m edge``: uvicorn, uvloop) where the event loop matters.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from edge import keyspace
from edge.cache import BundleCache, Unavailable
from edge.store import Store
from tests.edge.helpers import ManualClock, document, publish
from tests.services import RedisServer, free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class Edge:
    """A real edge process on a free port, stopped by its PID."""

    def __init__(self, redis_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        full = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(self.port),
                "EDGE_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT), **env}
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge"], env=full, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            reply = conn.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            conn.close()

    def settings(self, write_key: str) -> tuple[int, dict[str, str], bytes]:
        return self.get(f"/v1/projects/{write_key}/settings")

    def stop(self) -> str:
        stop_process(self.proc)
        return self.log.read_text(errors="replace")


def mark_loaded(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.set(keyspace.LOADED_KEY, "1")
    client.close()


# -- an empty Redis is not "every source was deleted" ---------------------------------------


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server this test restarts (empty: it keeps nothing on disk)."""
    srv = RedisServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("emptied", ["restart", "flushall"])
def test_an_empty_redis_is_not_every_source_deleted(server: RedisServer, tmp_path: Path,
                                                    emptied: str) -> None:
    """Redis restarted without its data (or flushed): held copies are served stale and a key
    never seen gets 503 + Retry-After — no 404 for a live key — until the publisher has loaded
    Redis again (``sc:loaded``); then the republished bundles are served, and a deleted source
    is 404."""
    client = redis.Redis.from_url(server.url)
    for write_key in ("liveA", "liveB", "gone"):
        publish(client, write_key)
    mark_loaded(server.url)
    edge = Edge(server.url, tmp_path / "edge.log", EDGE_REFRESH_INTERVAL="0.2",
                EDGE_REDIS_RETRY_INTERVAL="0.1")
    try:
        for write_key in ("liveA", "liveB", "gone"):
            assert edge.settings(write_key)[0] == 200
        if emptied == "restart":
            server.stop()
            server.start()
        else:
            client.flushall()

        seen: dict[str, set[int]] = {"liveA": set(), "liveB": set(), "never": set()}
        deadline = time.monotonic() + 1.5  # several refresh and retry intervals
        while time.monotonic() < deadline:
            for write_key in ("liveA", "liveB"):
                status, headers, _ = edge.settings(write_key)
                seen[write_key].add(status)
                assert status == 200, (write_key, status)
            status, headers, _ = edge.settings("never")
            seen["never"].add(status)
            assert status == 503 and headers["retry-after"] and \
                headers["cache-control"] == "no-store"
            time.sleep(0.02)
        assert edge.settings("liveA")[1].get("x-settings-stale") == "1"
        assert json.loads(edge.get("/readyz")[2])["redis_loaded"] is False

        # the publisher republishes what SQLite holds ("gone" was deleted), then marks Redis
        client = redis.Redis.from_url(server.url)
        publish(client, "liveA", document("liveA", Amplitude={}), version=2)
        publish(client, "liveB", document("liveB", Amplitude={}), version=2)
        mark_loaded(server.url)
        deadline = time.monotonic() + 5
        while True:
            versions = [edge.settings(wk)[1].get("x-settings-version") for wk in ("liveA",
                                                                                  "liveB")]
            if versions == ["2", "2"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert versions == ["2", "2"]
        assert "x-settings-stale" not in edge.settings("liveA")[1]
        assert edge.settings("gone")[0] == 404
        assert edge.settings("never")[0] == 404
        assert json.loads(edge.get("/readyz")[2])["redis_loaded"] is True
    finally:
        log = edge.stop()
        client.close()
    assert "Traceback" not in log


# -- one corrupt key hurts only its own source ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("pipelined", [True, False], ids=["pipe", "client"])
@pytest.mark.parametrize("corrupt", ["version-wrong-type", "pointer-wrong-type"])
async def test_a_corrupt_key_is_its_source_error_alone(redis_url: str,
                                                       redis_client: redis.Redis,
                                                       pipelined: bool, corrupt: str) -> None:
    """A wrong-type key read in one batch with four healthy cold keys: that source alone is
    unavailable; the four are served and the edge does not back off from Redis."""
    cold = [f"cold{i}" for i in range(4)]
    for write_key in cold:
        publish(redis_client, write_key)
    if corrupt == "version-wrong-type":
        redis_client.set(keyspace.current_key("bad"), keyspace.encode_pointer(1, '"e"'))
        redis_client.set(keyspace.version_key("bad", 1), "x")
    else:
        redis_client.hset(keyspace.current_key("bad"), "x", "y")
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    store = Store(client, pipelined=pipelined)
    cache = BundleCache(store, cache_control="public", clock=ManualClock(),
                        refresh_interval=30, max_entries=100, negative_ttl=5,
                        negative_max_entries=100, retry_interval=1.0)
    try:
        results = await asyncio.gather(cache.get("bad"), *(cache.get(wk) for wk in cold),
                                       return_exceptions=True)
        again = await cache.get("cold0")
    finally:
        await store.aclose()
        await client.aclose()

    assert isinstance(results[0], Unavailable)
    assert [getattr(entry, "write_key", entry) for entry in results[1:]] == cold
    assert again is not None and not again.stale
    assert not cache.backing_off and cache.redis_up


def test_a_corrupt_held_pointer_is_not_a_deletion(redis_url: str, redis_client: redis.Redis,
                                                  tmp_path: Path) -> None:
    """A held source whose pointer turns into another type (MGET reads it as absent) keeps
    being served from the held copy, never 404, and other sources are unaffected."""
    publish(redis_client, "held")
    publish(redis_client, "other")
    edge = Edge(redis_url, tmp_path / "edge.log", EDGE_REFRESH_INTERVAL="0.1")
    try:
        assert edge.settings("held")[0] == 200
        redis_client.delete(keyspace.current_key("held"))
        redis_client.hset(keyspace.current_key("held"), "x", "y")
        statuses = set()
        for _ in range(10):
            time.sleep(0.1)
            statuses.add(edge.settings("held")[0])
        other = edge.settings("other")
    finally:
        edge.stop()
    assert statuses == {200}
    assert other[0] == 200 and "x-settings-stale" not in other[1]


# -- a connection Redis closes is a Redis error ----------------------------------------------


def test_a_redis_that_refuses_connections_is_an_outage_not_a_500(tmp_path: Path) -> None:
    """Redis at maxclients answers a new connection with an error and closes it: /readyz says
    503 (not a 500 with a traceback), a settings request 503, nothing is left unretrieved in the
    log; once a slot frees, the edge serves."""
    with RedisServer(args=["--maxclients", "1"]) as server:
        blocker = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 5
        while True:  # (the start-up probe's connection may hold the slot for a moment)
            try:
                blocker.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        publish(blocker, "wk")
        blocker.set(keyspace.LOADED_KEY, "1")  # the blocker now holds the only slot
        edge = Edge(server.url, tmp_path / "edge.log", EDGE_REDIS_RETRY_INTERVAL="0")
        try:
            answers = set()
            for _ in range(20):
                answers.add(edge.get("/readyz")[0])
                answers.add(edge.settings("wk")[0])
            blocker.close()  # the slot frees
            deadline = time.monotonic() + 5
            while edge.settings("wk")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            served = edge.settings("wk")[0]
        finally:
            log = edge.stop()
    assert answers == {503}
    assert served == 200
    assert "Traceback" not in log and "never retrieved" not in log
