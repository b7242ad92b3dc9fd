"""Redis outages with a real redis-server this test stops and restarts under a running edge."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from edge import keyspace
from edge.app import create_app
from edge.settings import EdgeSettings
from tests.edge.helpers import ManualClock, document, publish, wait_for_version, wait_until
from tests.services import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server on its own port (not the session one: this test kills it)."""
    srv = RedisServer()
    srv.start()
    redis.Redis.from_url(srv.url).set(keyspace.LOADED_KEY, "1")  # a publisher loaded it
    yield srv
    srv.stop()


def put(server: RedisServer, write_key: str, version: int, **integrations: object) -> bytes:
    client = redis.Redis.from_url(server.url)
    try:
        return publish(client, write_key, document(write_key, **integrations),
                       version=version).json
    finally:
        client.close()


def test_outage_serves_held_bundles_stale_and_recovers(server: RedisServer) -> None:
    """Through an outage held bundles stay 200 (stale), unknown keys get 503, then it recovers."""
    a1 = put(server, "keyA", 1)
    b1 = put(server, "keyB", 1)
    clock = ManualClock()
    settings = EdgeSettings(redis_url=server.url, refresh_interval=10, redis_retry_interval=1)
    with TestClient(create_app(settings, clock=clock)) as client:
        # given: both bundles seen while Redis is up
        for wk, body in (("keyA", a1), ("keyB", b1)):
            reply = client.get(f"/v1/projects/{wk}/settings", headers={"accept-encoding": ""})
            assert (reply.status_code, reply.content) == (200, body)
            assert "x-settings-stale" not in reply.headers

        # when: Redis stops, and the copies are past their refresh interval
        server.stop()
        for step in range(5):
            clock.advance(11 if step == 0 else 0.6)  # some steps inside the back-off window
            for wk, body in (("keyA", a1), ("keyB", b1)):
                reply = client.get(f"/v1/projects/{wk}/settings",
                                   headers={"accept-encoding": ""})
                assert (reply.status_code, reply.content) == (200, body)
                assert reply.headers["x-settings-stale"] == "1"
                assert reply.headers["x-settings-version"] == "1"
            unknown = client.get("/v1/projects/neverSeen/settings")
            assert unknown.status_code == 503
            assert unknown.headers["retry-after"] == "5"
            assert unknown.headers["cache-control"] == "no-store"

        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["redis"] == "down" and ready.json()["stale_bundles"] == 2
        metrics = set(client.get("/metrics").text.splitlines())
        assert "edge_redis_up 0" in metrics
        assert "edge_cache_stale_entries 2" in metrics

        # then: Redis returns empty (no persistence) and keyA is republished; no edge restart
        server.start()
        a2 = put(server, "keyA", 2, Amplitude={"apiKey": "new"})
        clock.advance(1.0)
        reply = wait_for_version(client, "keyA", "2")
        assert (reply.status_code, reply.content) == (200, a2)
        assert "x-settings-stale" not in reply.headers
        # not loaded yet (no sc:loaded): keyB is not "deleted", the never-seen key not unknown
        clock.advance(1.0)
        reply = client.get("/v1/projects/keyB/settings", headers={"accept-encoding": ""})
        assert (reply.status_code, reply.content) == (200, b1)
        assert reply.headers["x-settings-stale"] == "1"
        assert client.get("/v1/projects/neverSeen/settings").status_code == 503
        # the publisher has compared every source and marked Redis loaded: keyB was deleted
        redis.Redis.from_url(server.url).set(keyspace.LOADED_KEY, "1")
        clock.advance(1.0)
        client.get("/v1/projects/keyB/settings")  # stale at once; the re-check runs behind it
        wait_until(lambda: client.get("/v1/projects/keyB/settings").status_code == 404,
                   "keyB 404")
        assert client.get("/v1/projects/neverSeen/settings").status_code == 404
        assert client.get("/readyz").json()["redis"] == "up"


def test_redis_down_at_start_then_up(server: RedisServer) -> None:
    """An edge started while Redis is down answers 503, then serves once Redis is there."""
    server.stop()
    clock = ManualClock()
    settings = EdgeSettings(redis_url=server.url, redis_retry_interval=1)
    with TestClient(create_app(settings, clock=clock)) as client:
        assert client.get("/v1/projects/keyA/settings").status_code == 503
        assert client.get("/readyz").status_code == 503

        server.start()
        body = put(server, "keyA", 1)
        clock.advance(1.0)

        reply = client.get("/v1/projects/keyA/settings", headers={"accept-encoding": ""})
        assert (reply.status_code, reply.content) == (200, body)
        assert client.get("/readyz").status_code == 200


def test_restart_between_requests_reconnects_without_error(server: RedisServer) -> None:
    """A Redis restart between two refreshes costs no error: the pooled connection reconnects."""
    put(server, "keyA", 1)
    clock = ManualClock()
    settings = EdgeSettings(redis_url=server.url, refresh_interval=10)
    with TestClient(create_app(settings, clock=clock)) as client:
        assert client.get("/v1/projects/keyA/settings").status_code == 200
        server.stop()
        server.start()
        put(server, "keyA", 2)
        redis.Redis.from_url(server.url).set(keyspace.LOADED_KEY, "1")
        clock.advance(11)  # past the re-check grace: the request waits for the re-check

        reply = client.get("/v1/projects/keyA/settings")

        assert reply.status_code == 200
        assert reply.headers["x-settings-version"] == "2"
        assert "x-settings-stale" not in reply.headers


def test_hung_redis_costs_no_request_for_a_held_bundle_a_wait(server: RedisServer) -> None:
    """A frozen (SIGSTOP) Redis: a held bundle due for its re-check is answered from memory at
    once while the re-check waits on Redis in the background; once that re-check times out the
    copy is marked stale, and a never-seen key gets 503 after the short timeout."""
    body = put(server, "keyA", 1)
    clock = ManualClock()
    settings = EdgeSettings(redis_url=server.url, refresh_interval=10, redis_timeout=1.0)
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        assert client.get("/v1/projects/keyA/settings").status_code == 200
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            clock.advance(10)
            due = client.get("/v1/projects/keyA/settings", headers={"accept-encoding": ""})
            rechecking = client.get("/metrics").text.splitlines()
            unknown = client.get("/v1/projects/other/settings")  # waits the timeout: 503
            after = client.get("/v1/projects/keyA/settings", headers={"accept-encoding": ""})
        finally:
            server.proc.send_signal(signal.SIGCONT)

    # answered while the re-check still waited on the frozen Redis: had the answer waited for
    # it, the re-check would have timed out first, marking Redis down and the copy stale
    assert (due.status_code, due.content) == (200, body)
    assert "x-settings-stale" not in due.headers
    assert "edge_redis_up 1" in rechecking and "edge_cache_stale_serves_total 0" in rechecking
    assert unknown.status_code == 503
    assert (after.status_code, after.content) == (200, body)
    assert after.headers["x-settings-stale"] == "1"
