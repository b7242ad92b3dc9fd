"""/metrics: every family with exact integer values, in the Prometheus text format (0.0.4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from edge.app import create_app
from edge.metrics import Metrics
from edge.settings import EdgeSettings
from tests.edge.helpers import publish

BIG = 1_234_567
# (Metrics attribute, sample name) of the unlabelled counters.
COUNTERS = [
    ("cache_hits", "edge_cache_hits_total"), ("inline_answers", "edge_inline_answers_total"),
    ("cache_misses", "edge_cache_misses_total"),
    ("cache_refreshes", "edge_cache_refreshes_total"),
    ("stale_serves", "edge_cache_stale_serves_total"),
    ("negative_hits", "edge_negative_cache_hits_total"),
    ("redis_errors", "edge_redis_errors_total"), ("unavailable", "edge_unavailable_total"),
    ("instant_rechecks", "edge_instant_rechecks_total"),
]

# (name as parsed, type, help) of every family, in order: dashboards and tests read these.
FAMILIES = [
    ("edge_http_requests", "counter", "HTTP responses by route and status."),
    ("edge_cache_hits", "counter", "Bundles served from memory without Redis."),
    ("edge_inline_answers", "counter", "Settings GET/HEAD answered by the HTTP protocol itself, "
     "without the ASGI app (EDGE_FAST_PATH)."),
    ("edge_cache_misses", "counter", "Lookups of keys not held in memory."),
    ("edge_cache_refreshes", "counter",
     "Pointer re-checks of held bundles after the refresh interval."),
    ("edge_cache_stale_serves", "counter",
     "Bundles served stale because Redis could not be reached."),
    ("edge_negative_cache_hits", "counter", "Unknown write keys answered from the negative cache."),
    ("edge_redis_errors", "counter", "Failed Redis reads."),
    ("edge_unavailable", "counter", "503 answers: key never seen while Redis was unreachable."),
    ("edge_instant_rechecks", "counter",
     "Held bundles a publish message sent to re-check against Redis (instant mode)."),
    # the /next-integrations/ mirror
    ("edge_mirror_hits", "counter", "/next-integrations/ files served from the local store."),
    ("edge_mirror_fetches", "counter",
     "Upstream fetches of /next-integrations/ files the store lacked or had to refresh."),
    ("edge_mirror_upstream_not_found", "counter",
     "Upstream fetches answered 404 or 410 (passed on, never stored)."),
    ("edge_mirror_upstream_errors", "counter",
     "Upstream fetches that failed, timed out or were refused by the checks (never stored)."),
    ("edge_mirror_stored_bytes", "counter",
     "Bytes of upstream files written to the local store."),
    ("edge_cache_entries", "gauge", "Bundles held in memory."),
    ("edge_cache_stale_entries", "gauge", "Held bundles currently marked stale."),
    ("edge_negative_cache_entries", "gauge", "Unknown write keys remembered."),
    ("edge_redis_up", "gauge", "1 when the last Redis read succeeded."),
    ("edge_instant_subscribed", "gauge", "1 while the publish channel subscription is live."),
    ("edge_bundle_version", "gauge", "Version of each held bundle (bounded by the cache size)."),
]


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    """An in-process edge in instant mode holding ``wk1`` at version ``BIG``."""
    publish(redis_client, "wk1", version=BIG)
    with TestClient(create_app(EdgeSettings(redis_url=redis_url, instant=True))) as c:
        assert c.get("/v1/projects/wk1/settings").status_code == 200
        yield c


def _set_big_counts(client: TestClient) -> dict[str, int]:
    """Every counter set to a distinct value above a million; returns sample name -> value."""
    metrics: Metrics = client.app_state["edge"].metrics
    metrics.requests["settings", 200] = BIG
    expected = {'edge_http_requests_total{route="settings",status="200"}': BIG}
    for i, (attr, name) in enumerate(COUNTERS, start=1):
        setattr(metrics, attr, BIG + i)
        expected[name] = BIG + i
    return expected


def test_counters_and_versions_print_as_exact_integers(client: TestClient) -> None:
    """A counter or a version above 999,999 prints every digit, as an integer."""
    expected = _set_big_counts(client)

    lines = set(client.get("/metrics").text.splitlines())

    for sample, value in expected.items():
        assert f"{sample} {value}" in lines
    assert 'edge_bundle_version{write_key="wk1"} 1234567' in lines
    assert "edge_redis_up 1" in lines  # small values stay integers too, not "1.0"


def test_exposition_parses_with_every_family_and_exact_values(client: TestClient) -> None:
    """prometheus_client's parser reads every family with its name, type and help, and each
    sample's value is exactly the integer counted."""
    expected = _set_big_counts(client)
    reply = client.get("/metrics")

    families = list(text_string_to_metric_families(reply.text))

    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert [(f.name, f.type, f.documentation) for f in families] == FAMILIES
    values = {
        s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                  if s.labels else ""): s.value
        for f in families for s in f.samples
    }
    for sample, value in expected.items():
        assert values[sample] == value
    assert values['edge_bundle_version{write_key="wk1"}'] == BIG
