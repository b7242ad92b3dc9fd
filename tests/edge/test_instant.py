"""Instant mode: a publish message on the channel makes the edge re-check its copy at once."""

from __future__ import annotations

import redis
from starlette.testclient import TestClient

from edge.app import create_app
from edge.settings import EdgeSettings
from tests.edge.helpers import ManualClock, document, publish, wait_for_version, wait_until
from tests.services import RedisServer


def test_publish_message_rechecks_before_refresh_interval(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """With EDGE_INSTANT the new version is served right after the publish message, with the
    clock still inside the refresh interval."""
    publish(redis_client, "wk1")
    clock = ManualClock()
    app = create_app(EdgeSettings(redis_url=redis_url, instant=True), clock=clock)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").json()["instant_subscribed"], "subscription")
        first = client.get("/v1/projects/wk1/settings")
        assert first.headers["x-settings-version"] == "1"

        publish(redis_client, "wk1", document("wk1", Amplitude={}), version=2, announce=True)
        wait_until(
            lambda: "edge_instant_rechecks_total 1" in client.get("/metrics").text, "re-check"
        )
        second = client.get("/v1/projects/wk1/settings")

    assert second.headers["x-settings-version"] == "2"
    assert clock.now == 1000.0  # no refresh interval elapsed


def test_without_instant_the_old_copy_stays_until_refresh(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Without instant mode a publish is seen only after the refresh interval."""
    publish(redis_client, "wk1")
    clock = ManualClock()
    with TestClient(create_app(EdgeSettings(redis_url=redis_url), clock=clock)) as client:
        client.get("/v1/projects/wk1/settings")
        publish(redis_client, "wk1", document("wk1", Amplitude={}), version=2, announce=True)

        before = client.get("/v1/projects/wk1/settings")
        clock.advance(29.9)
        still = client.get("/v1/projects/wk1/settings")
        clock.advance(0.1)  # due: re-checked behind the request that finds it due
        after = wait_for_version(client, "wk1", "2")

    assert before.headers["x-settings-version"] == "1"
    assert still.headers["x-settings-version"] == "1"
    assert after.headers["x-settings-version"] == "2"


def test_first_publish_clears_negative_entry(redis_url: str, redis_client: redis.Redis) -> None:
    """In instant mode a first publish also ends the key's cached 404 at once."""
    clock = ManualClock()
    app = create_app(EdgeSettings(redis_url=redis_url, instant=True), clock=clock)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").json()["instant_subscribed"], "subscription")
        assert client.get("/v1/projects/newkey/settings").status_code == 404

        publish(redis_client, "newkey", announce=True)
        wait_until(lambda: client.get("/v1/projects/newkey/settings").status_code == 200,
                   "first publish visible")


def test_resubscribe_after_redis_restart_rechecks_held_bundles() -> None:
    """After the subscription is lost and regained, held bundles are re-checked at once,
    because publishes made meanwhile were missed."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        publish(client, "wk1")
        clock = ManualClock()
        settings = EdgeSettings(redis_url=server.url, instant=True, redis_retry_interval=0.05)
        with TestClient(create_app(settings, clock=clock)) as edge:
            wait_until(lambda: edge.get("/readyz").json()["instant_subscribed"], "subscription")
            assert edge.get("/v1/projects/wk1/settings").headers["x-settings-version"] == "1"

            server.stop()
            wait_until(lambda: edge.get("/readyz").json()["instant_subscribed"] is False,
                       "subscription lost")
            server.start()
            publish(client, "wk1", document("wk1", Amplitude={}), version=2)  # no message
            clock.advance(0.05)  # past the back-off only, far inside the refresh interval
            wait_until(lambda: edge.get("/readyz").json()["instant_subscribed"], "resubscribed")

            reply = wait_for_version(edge, "wk1", "2")  # re-checked behind the first request
            assert clock.now < 1000.0 + settings.refresh_interval
        client.close()

    assert reply.headers["x-settings-version"] == "2"
