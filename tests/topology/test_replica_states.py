"""A replica that lost its primary is a Redis fault, not a deletion, whether it refuses reads
(``MASTERDOWN``: ``replica-serve-stale-data no``) or keeps answering what it last received
(``yes``, Redis's default): the edge reading it answers stale-marked, a source the replica
lacks 503 (never 404), and fresh again by itself once the replica serves, or is linked, again.
Real redis-server processes; the edge in-process, or as its own process."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from edge import keyspace
from edge.app import create_app
from edge.settings import EdgeSettings
from publisher.core.bundle import make_bundle
from publisher.publish import RedisPublisher
from tests.e2e.servers import Process, Reply, fetch
from tests.edge.helpers import ManualClock
from tests.edge.helpers import publish as publish_bundle
from tests.services import RedisServer, free_port
from tests.topology.topology import REDIS_ARGS, ROOT, info, kill, linked, wait_until

pytestmark = pytest.mark.slow


def test_masterdown_replica_is_an_outage_not_a_deletion() -> None:
    with RedisServer(args=REDIS_ARGS) as primary, RedisServer(args=[
            *REDIS_ARGS, "--replicaof", "127.0.0.1", str(primary.port),
            "--replica-serve-stale-data", "no"]) as replica:
        writer = redis.Redis(port=primary.port)
        publisher = RedisPublisher(writer)
        for wk in ("heldWriteKey", "neverAskedWriteKey"):
            publisher.write(wk, make_bundle(b'{"a":1}', version=1, revision=1, published_at=1))
        writer.set(keyspace.LOADED_KEY, "1")
        wait_until(lambda: linked(replica.port) and redis.Redis(port=replica.port).exists(
            keyspace.LOADED_KEY) == 1, "the replica holds the data")
        clock = ManualClock()
        settings = EdgeSettings(redis_url=replica.url, redis_retry_interval=0.5)
        with TestClient(create_app(settings, clock=clock)) as edge:
            assert edge.get("/v1/projects/heldWriteKey/settings").status_code == 200
            kill(primary)
            reader = redis.Redis(port=replica.port)
            wait_until(lambda: _masterdown(reader), "the replica answers MASTERDOWN")
            clock.advance(settings.refresh_interval + 60)
            held = edge.get("/v1/projects/heldWriteKey/settings")
            assert held.status_code == 200 and held.headers["x-settings-stale"] == "1"
            never = edge.get("/v1/projects/neverAskedWriteKey/settings")
            assert never.status_code == 503
            reader.replicaof("NO", "ONE")  # (as Sentinel does when it promotes it)
            deadline = time.monotonic() + 10
            while True:
                clock.advance(1)
                fresh = edge.get("/v1/projects/heldWriteKey/settings")
                if fresh.status_code == 200 and "x-settings-stale" not in fresh.headers:
                    break
                assert time.monotonic() < deadline, "the edge did not recover by itself"
                time.sleep(0.05)
            assert edge.get("/v1/projects/neverAskedWriteKey/settings").status_code == 200


def _masterdown(client: redis.Redis) -> bool:
    try:
        client.get("x")
    except redis.exceptions.MasterDownError:
        return True
    return False


# a primary that pings its replicas every second: a frozen one is noticed in seconds
PING_EVERY_SECOND = ["--repl-ping-replica-period", "1"]
LIVE = ["heldWriteKey", "laterAskedWriteKey"]


class CutOff:
    """A primary, a replica serving stale data (Redis's default) and an edge process on it."""

    def __init__(self, tmp: Path, instant: bool) -> None:
        self.primary = RedisServer(args=[*REDIS_ARGS, *PING_EVERY_SECOND])
        self.replica = RedisServer(args=[*REDIS_ARGS, *PING_EVERY_SECOND, "--replicaof",
                                         "127.0.0.1", str(self.primary.port)])
        self.port = free_port()
        self.edge = Process("edge", [sys.executable, "-m", "edge"], cwd=ROOT, log_dir=tmp, env={
            **os.environ, "PYTHONPATH": str(ROOT), "EDGE_HOST": "127.0.0.1",
            "EDGE_PORT": str(self.port), "REDIS_URL": self.replica.url,
            "EDGE_INSTANT": str(instant).lower(), "EDGE_REFRESH_INTERVAL": "1",
            "EDGE_REDIS_RETRY_INTERVAL": "0.2", "EDGE_LOG_LEVEL": "warning"})

    def get(self, write_key: str) -> Reply:
        return fetch(f"http://127.0.0.1:{self.port}/v1/projects/{write_key}/settings",
                     {"accept-encoding": "gzip"}, timeout=3)

    def readyz(self) -> dict[str, object]:
        body: dict[str, object] = json.loads(fetch(f"http://127.0.0.1:{self.port}/readyz").body)
        return body

    def stale(self, write_key: str) -> bool:
        reply = self.get(write_key)
        assert reply.status == 200, (write_key, reply.status, reply.body[:100])
        return reply.headers.get("x-settings-stale") == "1"


@pytest.fixture(params=[False, True], ids=["refresh", "instant"])
def cut(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CutOff]:
    setup = CutOff(tmp_path, instant=request.param)
    setup.primary.start()
    try:
        setup.replica.start()
        try:
            writer = redis.Redis(port=setup.primary.port)
            for wk in LIVE:
                publish_bundle(writer, wk)
            writer.set(keyspace.LOADED_KEY, "1")
            wait_until(lambda: linked(setup.replica.port) and redis.Redis(
                port=setup.replica.port).exists(keyspace.LOADED_KEY) == 1,
                "the replica holds the data")
            setup.edge.start(setup.port)
            try:
                yield setup
            finally:
                setup.edge.stop()
        finally:
            setup.replica.stop()
    finally:
        if setup.primary.proc is not None:
            setup.primary.proc.send_signal(signal.SIGCONT)  # (a frozen one cannot stop)
        setup.primary.stop()


def test_replica_that_lost_its_primary_is_served_stale(cut: CutOff) -> None:
    """The primary killed: the replica keeps answering, and the edge on it marks every answer
    stale within seconds (held or read from the replica), a source the replica lacks 503, never
    404; the replica promoted (as Sentinel does), the edge answers fresh again by itself."""
    assert not cut.stale("heldWriteKey")
    kill(cut.primary)
    wait_until(lambda: info(cut.replica.port)["master_link_status"] == "down",
               "the replica notices")
    wait_until(lambda: cut.stale("heldWriteKey"), "the held bundle is served stale", timeout=5)
    assert cut.stale("laterAskedWriteKey")  # read from the cut-off replica: stale too
    absent = cut.get("createdAfterTheCutWriteKey")
    assert absent.status == 503, (absent.status, absent.headers)
    assert cut.readyz()["redis_replica_link"] == "down"
    metrics = fetch(f"http://127.0.0.1:{cut.port}/metrics").body
    assert b"\nedge_redis_replica_link_up 0\n" in metrics, metrics.decode()
    for _ in range(10):  # every answer meanwhile: 200 stale-marked
        assert all(cut.stale(wk) for wk in LIVE)
    redis.Redis(port=cut.replica.port).replicaof("NO", "ONE")
    wait_until(lambda: not any(cut.stale(wk) for wk in LIVE), "fresh again, by itself",
               timeout=5)
    assert cut.readyz()["redis_replica_link"] is None
    assert cut.get("createdAfterTheCutWriteKey").status == 404  # now a primary's word


def test_replica_of_a_frozen_primary_is_served_stale(cut: CutOff) -> None:
    """The primary frozen (SIGSTOP: its connections stay open, the replica says its link is
    up for ``repl-timeout``): nothing comes from it, so the edge marks its answers stale; the
    primary resumed, the edge answers fresh again by itself, a write made then included."""
    assert not cut.stale("heldWriteKey")
    assert cut.primary.proc is not None
    cut.primary.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: cut.stale("heldWriteKey"), "the held bundle is served stale",
                   timeout=10)
        assert info(cut.replica.port)["master_link_status"] == "up"  # (what the replica says)
        assert cut.stale("laterAskedWriteKey")
        assert cut.get("createdAfterTheCutWriteKey").status == 503
        assert cut.readyz()["redis_replica_link"] == "down"
    finally:
        cut.primary.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: not any(cut.stale(wk) for wk in LIVE), "fresh again, by itself",
               timeout=10)
    assert cut.readyz()["redis_replica_link"] == "up"
    env = publish_bundle(redis.Redis(port=cut.primary.port), "heldWriteKey", version=2,
                         announce=True)
    wait_until(lambda: cut.get("heldWriteKey").headers.get("etag") == env.etag,
               "the write made after it resumed is served")
