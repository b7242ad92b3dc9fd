"""Config API -> SQLite -> Redis -> the edge: what the API accepts is what clients are served."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from edge.app import create_app as create_edge
from edge.settings import EdgeSettings
from tests.edge.helpers import ManualClock
from tests.publisher.api.conftest import WS, Api


@pytest.fixture
def edge_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def edge(redis_url: str, edge_clock: ManualClock) -> Iterator[TestClient]:
    with TestClient(create_edge(EdgeSettings(redis_url=redis_url), clock=edge_clock)) as c:
        yield c


def fetch(edge: TestClient, clock: ManualClock, write_key: str) -> tuple[str, dict[str, Any]]:
    """What a client gets once the edge's own cache has let go of its copy."""
    clock.advance(EdgeSettings().refresh_interval + 1)
    resp = edge.get(f"/v1/projects/{write_key}/settings")
    assert resp.status_code == 200, resp.text
    return resp.headers["etag"], orjson.loads(resp.content)


def test_device_destination_and_filter_reach_the_edge(writer: Api, edge: TestClient,
                                                      edge_clock: ManualClock) -> None:
    """Create a source, add a disabled device-mode destination (not served), enable it (served
    with its settings), add a filter (served as its routing rule), each with the ETag the
    publisher reported."""
    status, body = writer.call("POST", WS + "/sources", {"source": {"slug": "shop",
                                                                   "type": "web"}})
    assert status == 200, body
    write_key = body["source"]["write_keys"][0]
    base = WS + "/sources/shop/destinations"
    etag, doc = fetch(edge, edge_clock, write_key)
    assert etag == body["bundle"]["etag"]
    assert set(doc["integrations"]) == {"Segment.io"}

    status, body = writer.call("POST", base, {"destination": {
        "slug": "amplitude", "connection_mode": "DEVICE",
        "config": [{"name": "apiKey", "value": "amp-key"}]}})
    assert status == 200 and body["destination"]["enabled"] is False
    etag, doc = fetch(edge, edge_clock, write_key)
    assert "Amplitude" not in doc["integrations"]

    status, body = writer.call("PATCH", base + "/amplitude", {
        "destination": {"enabled": True}, "update_mask": {"paths": ["destination.enabled"]}})
    assert status == 200, body
    etag, doc = fetch(edge, edge_clock, write_key)
    assert etag == body["bundle"]["etag"]
    assert doc["integrations"]["Amplitude"]["apiKey"] == "amp-key"
    assert doc["integrations"]["Segment.io"]["maybeBundledConfigIds"] == {
        "Amplitude": ["amplitude"]}

    status, body = writer.call("POST", base + "/amplitude/filters", {"filter": {
        "if": "type = 'track' and properties.price > 100",
        "actions": [{"type": "blacklist_fields",
                     "fields": {"properties": {"fields": ["email"]}}}],
        "title": "No emails on big orders"}})
    assert status == 200, body
    etag, doc = fetch(edge, edge_clock, write_key)
    assert etag == body["bundle"]["etag"]
    [rule] = doc["middlewareSettings"]["routingRules"]
    assert rule["destinationName"] == "Amplitude"
    assert rule["matchers"][0]["type"] == "fql"
    assert rule["matchers"][0]["config"]["expr"] == "type = 'track' and properties.price > 100"
    assert orjson.loads(rule["matchers"][0]["ir"])[0] == "and"
    assert rule["transformers"] == [[{"type": "drop_properties",
                                      "config": {"drop": {"properties": ["email"]}}}]]
