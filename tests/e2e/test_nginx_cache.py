"""nginx's proxy_cache in front of the real edge: the bound holds for a real HTTP cache.

Short lifetimes (seconds) through EDGE_* variables; the bound is the edge's own
``worst_case_seconds`` for those settings (and what ``GET /v1/propagation`` reports). nginx
ignores the edge's ``Age``, so these settings keep the default chain formula.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import redis

from edge.propagation import worst_case_seconds
from edge.settings import EdgeSettings
from tests.e2e.conftest import StartEdge, StartNginx
from tests.e2e.publishing import UNKNOWN_WRITE_KEY, WRITE_KEY, cloud, device, publish
from tests.e2e.servers import Nginx, Reply, fetch

pytestmark = pytest.mark.slow

ENV = {
    "EDGE_REFRESH_INTERVAL": "1",
    "EDGE_MAX_AGE": "1",
    "EDGE_S_MAXAGE": "2",
    "EDGE_STALE_WHILE_REVALIDATE": "1",
    "EDGE_STALE_IF_ERROR": "60",
    "EDGE_NEGATIVE_TTL": "1",
    "EDGE_NOT_FOUND_MAX_AGE": "1",
}
SETTINGS_PATH = f"/v1/projects/{WRITE_KEY}/settings"
V1 = [device("amplitude", "amp-1")]
V2 = [device("amplitude", "amp-1"), device("braze", "braze-2"), cloud("mixpanel", "mp-2")]


# nginx keeps time in whole seconds and compares inclusively (ngx_http_file_cache.c: fresh
# while valid_sec >= now, valid_sec = ngx_time() + s-maxage): a copy can outlive its
# lifetimes by up to one second. Waits for expiry add that second.
NGINX_CLOCK_SLACK = 1


def bound() -> int:
    return worst_case_seconds(EdgeSettings.from_env(ENV))


def version_of(reply: Reply) -> int:
    assert reply.status == 200, (reply.status, reply.body[:200])
    return int(reply.headers["x-settings-version"])


def warm(nginx: Nginx, path: str = SETTINGS_PATH, timeout: float = 5.0) -> Reply:
    """Request until nginx answers from its cache (HIT); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        reply = fetch(nginx.url + path)
        if reply.headers.get("x-cache-status") == "HIT":
            return reply
        assert time.monotonic() < deadline, f"nginx never cached {path}:\n{nginx.logs()}"
        time.sleep(0.05)


def test_edge_reports_the_bound_these_tests_use(redis_client: redis.Redis,
                                                 start_edge: StartEdge) -> None:
    """GET /v1/propagation reports the worst case computed from the same EDGE_* settings."""
    edge = start_edge(ENV)

    reply = fetch(edge.url + "/v1/propagation")

    assert reply.status == 200
    slack = 2  # CLOCK_SLACK
    grace = 0.25 + 0.25  # EDGE_REDIS_TIMEOUT + EDGE_REDIS_CONNECT_TIMEOUT: the re-check grace
    assert json.loads(reply.body)["worst_case_seconds"] == bound() == math.ceil(
        1 + grace + (2 + 1) + (1 + 1)) + slack


def test_nginx_serves_a_published_change_within_the_bound(
    redis_client: redis.Redis, start_edge: StartEdge, start_nginx: StartNginx
) -> None:
    """After a publish nginx keeps serving the old bundle no longer than the computed bound."""
    publish(redis_client, V1, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(ENV)
    nginx = start_nginx(edge)
    assert version_of(warm(nginx)) == 1

    published_at = publish(redis_client, V2, version=2,
                           published_at=int(time.time())).published_at
    deadline = published_at + bound()
    last_old = first_new = None
    # Poll until one second past the bound: the old bundle must be gone and stay gone.
    while time.time() < deadline + 1:
        reply = fetch(nginx.url + SETTINGS_PATH)
        now = time.time()
        if version_of(reply) == 1:
            last_old = now
        elif first_new is None:
            first_new = now
        time.sleep(0.05)

    assert first_new is not None, f"nginx never served version 2:\n{nginx.logs()}"
    assert first_new <= deadline, f"new bundle first served {first_new - published_at:.2f}s " \
                                  f"after published_at, bound {bound()}s"
    assert last_old is None or last_old <= deadline, (
        f"old bundle served {last_old - published_at:.2f}s after published_at, bound {bound()}s"
    )
    assert last_old is None or last_old < first_new


def test_nginx_revalidates_with_the_edge_and_answers_304(
    redis_client: redis.Redis, start_edge: StartEdge, start_nginx: StartNginx
) -> None:
    """Conditional requests work through nginx, and nginx refreshes an expired copy by a 304."""
    publish(redis_client, V1, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(ENV)
    nginx = start_nginx(edge)
    cached = warm(nginx)
    etag = cached.headers["etag"]

    not_modified = fetch(nginx.url + SETTINGS_PATH, {"If-None-Match": etag})
    modified = fetch(nginx.url + SETTINGS_PATH, {"If-None-Match": '"some-other-tag"'})
    # Past s-maxage + stale-while-revalidate nginx may not serve its copy without asking.
    time.sleep(2 + 1 + NGINX_CLOCK_SLACK + 0.5)
    revalidated = fetch(nginx.url + SETTINGS_PATH)

    assert not_modified.status == 304
    assert not_modified.headers["etag"] == etag
    assert not_modified.body == b""
    assert modified.status == 200
    assert modified.body == cached.body
    assert revalidated.status == 200
    assert revalidated.headers["x-cache-status"] == "REVALIDATED", nginx.logs()
    assert revalidated.headers["etag"] == etag
    assert revalidated.body == cached.body
    assert nginx.access_log_has("cache=REVALIDATED upstream=304"), nginx.logs()


def test_nginx_serves_the_cached_bundle_while_the_edge_is_down(
    redis_client: redis.Redis, start_edge: StartEdge, start_nginx: StartNginx
) -> None:
    """With the edge stopped nginx keeps serving its copy (stale-if-error), and only that."""
    publish(redis_client, V1, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(ENV)
    nginx = start_nginx(edge)
    cached = warm(nginx)

    edge.stop()
    # Past s-maxage + stale-while-revalidate: only stale-if-error lets nginx answer.
    time.sleep(2 + 1 + NGINX_CLOCK_SLACK + 0.5)
    during_outage = fetch(nginx.url + SETTINGS_PATH)
    never_cached = fetch(nginx.url + f"/v1/projects/{UNKNOWN_WRITE_KEY}/settings")

    assert during_outage.status == 200
    assert during_outage.headers["x-cache-status"] == "STALE", nginx.logs()
    assert during_outage.headers["etag"] == cached.headers["etag"]
    assert during_outage.body == cached.body
    assert nginx.access_log_has("cache=STALE upstream=502"), nginx.logs()
    assert never_cached.status == 502
