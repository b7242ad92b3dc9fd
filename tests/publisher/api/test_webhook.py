"""``POST /hooks/config-changed``: signed, fresh, applied once per event and revision."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from publisher.api.app import create_app
from publisher.api.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, verify
from publisher.errors import Unauthenticated
from publisher.publish import RedisPublisher
from publisher.service import Service
from publisher.settings import PublisherSettings
from tests.publisher.api.conftest import SECRET, Api
from tests.publisher.api.test_resources import served
from tests.publisher.workspaces import NOW

HOOK = "/hooks/config-changed"
AMPLITUDE = {"slug": "amplitude", "connection_mode": "DEVICE", "enabled": True,
             "config": [{"name": "apiKey", "value": "amp-key"}],
             "filters": [{"if": "event = 'Secret'", "actions": [{"type": "drop_event"}],
                          "title": "No secrets"}]}


def event(event_id: Any = "evt-1", revision: Any = 5, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "workspace": "acme", "source": "shop", "type": "web",
            "revision": revision, "destinations": [AMPLITUDE], **extra}


def send(client: TestClient, body: Any, *, ts: float = NOW, secret: str = SECRET,
         sig: str | None = None, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    stamp = str(int(ts))
    signed = {TIMESTAMP_HEADER: stamp,
              SIGNATURE_HEADER: sig if sig is not None else signature(secret, stamp, raw),
              "Content-Type": "application/json"}
    return client.post(HOOK, content=raw, headers=headers if headers is not None else signed)


def db(service: Service) -> Any:
    """Everything the webhook could write: sources, instances, bundles, webhook events."""
    out: list[Any] = []
    for ws in service.store.list_workspaces():
        for src in service.store.list_sources(ws.id):
            current = service.store.current_bundle(src.id)
            out.append((src, service.store.list_instances(src.id),
                        current.version if current else None))
    rows = service.store._all("SELECT event_id, status, response FROM webhook_events")
    return out, [tuple(r) for r in rows]


def test_valid_event_creates_source_and_publishes(client: TestClient, service: Service,
                                                  redis_client: redis.Redis) -> None:
    """A signed event creates the typed source, applies its destinations and filters at the
    given revision, and publishes: the bundle carries the destination and its routing rule."""
    resp = send(client, event())

    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "applied" and body["event_id"] == "evt-1"
    assert body["source"]["name"] == "workspaces/acme/sources/shop"
    assert body["source"]["revision"] == 5 and body["bundle"]["revision"] == 5
    assert body["bundle"]["changed"] is True and body["bundle"]["pending"] is False
    doc = served(redis_client, body["source"]["write_keys"][0])
    assert doc["integrations"]["Amplitude"]["apiKey"] == "amp-key"
    [rule] = doc["middlewareSettings"]["routingRules"]
    assert rule["destinationName"] == "Amplitude"
    assert rule["matchers"][0]["config"]["expr"] == "event = 'Secret'"


def test_event_for_existing_source_replaces_its_configuration(client: TestClient,
                                                              writer: Api,
                                                              service: Service) -> None:
    """An event is the complete desired state: instances it omits are removed."""
    writer.call("POST", "/v1beta/workspaces/acme/sources", {"source": {"slug": "shop",
                                                                       "type": "web"}})
    writer.call("POST", "/v1beta/workspaces/acme/sources/shop/destinations", {"destination": {
        "slug": "mixpanel", "connection_mode": "CLOUD", "display_name": "Old"}})
    body = event(destinations=[{**AMPLITUDE, "name": "workspaces/acme/sources/shop/"
                                                     "destinations/amp"}])
    del body["type"]

    resp = send(client, body)

    assert resp.status_code == 200, resp.text
    _, dests = writer.call("GET", "/v1beta/workspaces/acme/sources/shop/destinations")
    assert [(d["id"], d["slug"], d["filter_count"]) for d in dests["destinations"]] == [
        ("amp", "amplitude", 1)]


def test_duplicate_event_gets_the_first_response(client: TestClient, service: Service) -> None:
    """A second delivery of an event id returns the first response and writes nothing new,
    even if its body differs."""
    first = send(client, event())
    before = db(service)

    again = send(client, event(revision=9, destinations=[]))

    assert again.status_code == first.status_code == 200
    assert again.json() == first.json()
    assert again.headers["x-settings-cdn-duplicate"] == "true"
    assert db(service) == before


def test_duplicate_of_a_pending_event_gets_the_pending_response(client: TestClient,
                                                                service: Service) -> None:
    """When Redis refused the first delivery's publish, a resend gets that same reply —
    pending, with the error — not the one recorded before the publish was tried."""
    good, service.publisher = service.publisher, RedisPublisher(
        redis.Redis.from_url("redis://127.0.0.1:1/0"))
    first = send(client, event())
    service.publisher = good

    again = send(client, event())

    assert first.json()["bundle"]["pending"] is True and first.json()["bundle"]["error"]
    assert again.json() == first.json()
    assert again.headers["x-settings-cdn-duplicate"] == "true"


@pytest.mark.parametrize("revision", [pytest.param(3, id="older"), pytest.param(5, id="same")])
def test_out_of_order_revision_is_acknowledged_and_ignored(client: TestClient, service: Service,
                                                           revision: int) -> None:
    """An event whose revision is not newer than the stored one is 200 'ignored', and the
    configuration and bundle stay as they are."""
    assert send(client, event("evt-new", revision=5)).status_code == 200
    configuration, _ = db(service)

    resp = send(client, event("evt-old", revision=revision, destinations=[]))

    assert resp.status_code == 200
    assert resp.json()["status"] == "ignored" and resp.json()["revision"] == 5
    assert db(service)[0] == configuration


@pytest.mark.parametrize(("kwargs", "reason"), [
    pytest.param({"secret": "not-the-secret"}, "bad_signature", id="forged-secret"),
    pytest.param({"sig": "sha256=" + "0" * 64}, "bad_signature", id="forged-hex"),
    pytest.param({"sig": "md5=abc"}, "bad_signature", id="wrong-scheme"),
    pytest.param({"ts": NOW - 301}, "stale_timestamp", id="replayed-old-timestamp"),
    pytest.param({"ts": NOW + 301}, "stale_timestamp", id="future-timestamp"),
    pytest.param({"headers": {}}, "unsigned", id="unsigned"),
    pytest.param({"headers": {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "sha256=00"}},
                 "bad_timestamp", id="non-numeric-timestamp"),
])
def test_unauthenticated_events_write_nothing(client: TestClient, service: Service,
                                              kwargs: dict[str, Any], reason: str) -> None:
    """Forged, unsigned or stale deliveries are 401/16 and nothing is written."""
    before = db(service)

    resp = send(client, event(), **kwargs)

    assert resp.status_code == 401, resp.text
    assert resp.json()["code"] == 16 and resp.json()["reason"] == reason
    assert db(service) == before


def test_signature_binds_the_timestamp(client: TestClient, service: Service) -> None:
    """A signature captured with one timestamp does not verify under another."""
    raw = orjson.dumps(event())
    old_sig = signature(SECRET, str(int(NOW - 10)), raw)
    before = db(service)

    resp = send(client, raw, sig=old_sig)

    assert resp.status_code == 401
    assert db(service) == before


@pytest.mark.parametrize(("body", "names"), [
    pytest.param(orjson.dumps(event())[:-7], "JSON", id="truncated-json"),
    pytest.param(b"[]", "object", id="array"),
    pytest.param(event(revision="5"), "revision", id="revision-string"),
    pytest.param(event(revision=True), "revision", id="revision-bool"),
    pytest.param(event(revision=0), "revision", id="revision-zero"),
    pytest.param(orjson.dumps(event()).replace(b'"revision":5', b'"revision":' + b"9" * 30),
                 "revision", id="revision-huge"),
    pytest.param(orjson.dumps(event(revision=2**63)), "revision", id="revision-over-int64"),
    pytest.param(event(event_id=7), "event_id", id="event-id-number"),
    pytest.param(event(event_id="x" * 201), "event_id", id="event-id-too-long"),
    pytest.param(event(destinations={}), "destinations", id="destinations-object"),
    pytest.param(event(destinations=[{**AMPLITUDE, "enabled": "yes"}]),
                 "destinations[0].enabled", id="enabled-string"),
    pytest.param(event(destinations=[{**AMPLITUDE, "filters": {}}]),
                 "destinations[0].filters", id="filters-object"),
    pytest.param(event(destinations=[{**AMPLITUDE, "colour": "red"}]),
                 "destinations[0].colour", id="unknown-destination-field"),
    pytest.param(event(extra=1), "extra", id="unknown-field"),
    pytest.param(event(type="television"), "television", id="bad-source-type"),
    pytest.param(event(destinations=[AMPLITUDE, {**AMPLITUDE, "display_name": "Amp 2"}]),
                 "one_device_instance",
                 id="rule-violation"),
    pytest.param(event(destinations=[{**AMPLITUDE, "filters": [
        {"if": "event = ", "actions": [{"type": "drop_event"}], "title": "t"}]}]), "position",
        id="bad-fql"),
    pytest.param(event(destinations=[AMPLITUDE, {**AMPLITUDE, "display_name": "Amp 2",
                                                 "connection_mode": "CLOUD", "filters": [
        {"if": "event = 'x'", "actions": [{"type": "drop_event"}], "title": "t"},
        {"if": "a = 1" + "0" * 400 + ".5", "actions": [{"type": "drop_event"}], "title": "u"}]}]),
        "destinations[1].filters[1]: filter.if is not valid FQL: number", id="fql-located"),
    pytest.param(event(destinations=[AMPLITUDE, {"slug": "zzz", "connection_mode": "CLOUD"}]),
                 "destinations[1]: unknown catalog destination 'zzz'", id="unknown-slug-located"),
])
def test_malformed_events_write_nothing(client: TestClient, service: Service, body: Any,
                                        names: str) -> None:
    """Truncated JSON, wrong types and refused configurations are 400 naming the problem;
    nothing is written, not even the event id (so a corrected resend applies)."""
    before = db(service)

    resp = send(client, body)

    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 3 and names in resp.json()["error"]
    assert db(service) == before
    assert send(client, event()).json()["status"] == "applied"


def test_control_characters_in_a_title_are_refused(client: TestClient, service: Service) -> None:
    """A filter title with a NUL is 400 invalid_text on the webhook too (the check sits in the
    one commit path), and nothing is written."""
    nul = {**AMPLITUDE, "filters": [{**AMPLITUDE["filters"][0], "title": "a\u0000"}]}
    before = db(service)

    resp = send(client, event(destinations=[nul]))

    assert resp.status_code == 400, resp.text
    assert resp.json()["reason"] == "invalid_text" and "U+0000" in resp.json()["error"]
    assert db(service) == before


def test_a_key_named_twice_is_refused(client: TestClient, service: Service) -> None:
    """A signed event whose object names one key twice is 400 duplicate_key; nothing is
    written."""
    raw = orjson.dumps(event()).replace(b'{"', b'{"revision":999,"', 1)
    before = db(service)

    resp = send(client, raw)

    assert resp.status_code == 400, resp.text
    assert resp.json()["reason"] == "duplicate_key" and '"revision"' in resp.json()["error"]
    assert db(service) == before


def test_filters_of_one_title_conflict(client: TestClient, service: Service) -> None:
    """Two filters of one title on a destination are 409/6 (as on the Config API), and
    nothing is written."""
    twice = {**AMPLITUDE, "filters": AMPLITUDE["filters"] * 2}
    before = db(service)

    resp = send(client, event(destinations=[twice]))

    assert resp.status_code == 409, resp.text
    assert resp.json()["reason"] == "duplicate_title"
    assert db(service) == before


@pytest.mark.parametrize("stamp", ["²", "1²", "１７００００００００", " 1700000000", "-1", "1e9"])
def test_timestamps_of_other_digits_are_refused(stamp: str) -> None:
    """A timestamp that is not ASCII digits is 401 bad_timestamp, before any int() (a '²' is
    a digit to str.isdigit and no number to int)."""
    with pytest.raises(Unauthenticated) as caught:
        verify(SECRET, stamp, "sha256=00", b"{}", now=NOW, tolerance=300)

    assert caught.value.code == "bad_timestamp"


@pytest.mark.parametrize(("body", "status"), [
    pytest.param(event(workspace="nope"), 404, id="unknown-workspace"),
    pytest.param({k: v for k, v in event().items() if k != "type"}, 404,
                 id="unknown-source-without-type"),
])
def test_unknown_targets_are_404(client: TestClient, service: Service, body: Any,
                                 status: int) -> None:
    """An event for a missing workspace, or a missing source without a type, is 404."""
    before = db(service)

    resp = send(client, body)

    assert resp.status_code == status and resp.json()["code"] == 5
    assert db(service) == before


def test_oversized_event_is_413(client: TestClient, service: Service,
                                settings: PublisherSettings) -> None:
    """A body over PUBLISHER_MAX_BODY_BYTES is 413 before any signature work."""
    raw = orjson.dumps(event(padding="x" * settings.max_body_bytes))

    resp = send(client, raw)

    assert resp.status_code == 413


@pytest.fixture
def disabled(settings: PublisherSettings, service: Service) -> Iterator[TestClient]:
    fields = {name: getattr(settings, name) for name in settings.__slots__}
    app = create_app(PublisherSettings(**{**fields, "webhook_secret": ""}), service=service,
                     clock=lambda: NOW)
    with TestClient(app) as client:
        yield client


def test_disabled_webhook_says_so(disabled: TestClient, service: Service) -> None:
    """With no secret configured the webhook is 404 with a message naming the setting."""
    before = db(service)

    resp = send(disabled, event(), secret="")

    assert resp.status_code == 404
    assert "PUBLISHER_WEBHOOK_SECRET" in resp.json()["error"]
    assert db(service) == before


def test_real_clock_default(settings: PublisherSettings, service: Service) -> None:
    """Without an injected clock the window is checked against the wall clock."""
    with TestClient(create_app(settings, service=service)) as client:
        assert send(client, event(), ts=time.time()).status_code == 200
        assert send(client, event("evt-2", revision=6), ts=NOW).status_code == 401
