"""The real @segment/analytics-next in Debian's headless Chromium, against the real edge.

A web source with two device-mode destinations (Amplitude, Braze — integrations key
``Appboy``) and a cloud-mode one (Mixpanel) is published with the real publisher; the edge
serves it, plus small stand-in integration scripts the test writes into EDGE_ASSETS_DIR.
The page sets ``cdnURL`` to the edge, or to nginx caching in front of it. Needs
``bash tests/e2e/setup.sh`` (node_modules) and Debian's ``chromium``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from edge.propagation import worst_case_seconds
from edge.settings import EdgeSettings
from tests.e2e.browser import Browser
from tests.e2e.conftest import StartEdge, StartNginx
from tests.e2e.integrations import script_url_path, write_integration
from tests.e2e.publishing import UNKNOWN_WRITE_KEY, WRITE_KEY, cloud, device, publish
from tests.e2e.servers import PageServer

pytestmark = pytest.mark.slow

ENV = {
    "EDGE_REFRESH_INTERVAL": "1",
    "EDGE_MAX_AGE": "1",
    "EDGE_S_MAXAGE": "2",
    "EDGE_STALE_WHILE_REVALIDATE": "1",
    "EDGE_NEGATIVE_TTL": "1",
    "EDGE_NOT_FOUND_MAX_AGE": "1",
}
# Integrations key -> the catalog's browser bundle version (the version directory requested).
AMPLITUDE, BRAZE, CUSTOMER_IO, MIXPANEL = (
    ("Amplitude", "3.3.3"), ("Appboy", "1.16.1"), ("Customer.io", "2.2.3"), ("Mixpanel", "3.2.1"),
)
BEFORE = [device("amplitude", "amp-key"), device("braze", "braze-key"),
          cloud("mixpanel", "mixpanel-key")]
AFTER = [device("amplitude", "amp-key"), device("customer-io", "cio-key"),
         cloud("braze", "braze-key"), cloud("mixpanel", "mixpanel-key")]


@pytest.fixture
def scripts(assets_dir: Path) -> None:
    """Stand-in scripts for every destination, so a wrong request would succeed, not 404."""
    for key, version in (AMPLITUDE, BRAZE, CUSTOMER_IO, MIXPANEL):
        write_integration(assets_dir, key, version)


def requested(visit: dict[str, Any], base: str) -> list[str]:
    return [r["url"].removeprefix(base) for r in visit["requests"] if r["url"].startswith(base)]


def page_url(page_server: PageServer, write_key: str, cdn: str) -> str:
    return f"{page_server.url}/index.html?{urlencode({'writeKey': write_key, 'cdn': cdn})}"


@pytest.mark.parametrize("via_nginx", [pytest.param(False, id="edge"),
                                       pytest.param(True, id="nginx")])
def test_analytics_next_loads_the_published_destinations_and_then_the_change(
    redis_client: redis.Redis, start_edge: StartEdge, start_nginx: StartNginx,
    page_server: PageServer, browser: Browser, scripts: None, via_nginx: bool,
) -> None:
    """Load resolves with the device-mode scripts requested, and a reload after the bound
    loads the new list."""
    publish(redis_client, BEFORE, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(ENV)
    cdn = start_nginx(edge).url if via_nginx else edge.url
    url = page_url(page_server, WRITE_KEY, cdn)

    first = browser.visit(url)

    assert first["loaded"] is True, first
    paths = requested(first, cdn)
    assert f"/v1/projects/{WRITE_KEY}/settings" in paths
    assert script_url_path(*AMPLITUDE) in paths
    assert script_url_path(*BRAZE) in paths
    assert not any("/mixpanel/" in p for p in paths), paths
    assert sorted(first["initialized"]) == ["Amplitude", "Appboy"]

    published_at = publish(redis_client, AFTER, version=2,
                           published_at=int(time.time())).published_at
    bound = worst_case_seconds(EdgeSettings.from_env(ENV))
    time.sleep(max(0.0, published_at + bound + 0.2 - time.time()))
    second = browser.visit(url)

    assert second["loaded"] is True, second
    paths = requested(second, cdn)
    assert script_url_path(*CUSTOMER_IO) in paths
    assert script_url_path(*BRAZE) not in paths
    assert not any("/mixpanel/" in p for p in paths), paths
    assert sorted(second["initialized"]) == ["Amplitude", "Customer.io"]


def test_analytics_next_fails_to_load_for_an_unknown_write_key(
    redis_client: redis.Redis, start_edge: StartEdge, page_server: PageServer,
    browser: Browser,
) -> None:
    """An unknown write key makes load reject with the edge's 404 text, as with Segment's CDN."""
    edge = start_edge(ENV)

    visit = browser.visit(page_url(page_server, UNKNOWN_WRITE_KEY, edge.url))

    assert visit["loaded"] is False
    assert visit["error"] == "Cannot GET - Invalid path or write key provided."
    assert visit["initialized"] == []
    assert not any("/next-integrations/" in u for u in requested(visit, edge.url))
