"""A replica that cannot serve reads (``MASTERDOWN``: its primary is gone and
``replica-serve-stale-data no``) is a Redis fault, not a deletion: the edge reading it serves
what it holds, stale-marked, a key it never held 503 (never 404), and recovers by itself once
the replica serves again. Real redis-server processes; the edge in-process."""

from __future__ import annotations

import time

import pytest
import redis
from starlette.testclient import TestClient

from edge import keyspace
from edge.app import create_app
from edge.settings import EdgeSettings
from publisher.core.bundle import make_bundle
from publisher.publish import RedisPublisher
from tests.edge.helpers import ManualClock
from tests.services import RedisServer
from tests.topology.topology import REDIS_ARGS, kill, linked, wait_until

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
