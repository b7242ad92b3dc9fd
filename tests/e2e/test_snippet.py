"""The classic snippet pointed at the edge, in Debian's headless Chromium, with real scripts.

The page is demo/page/index.html (what scripts/run serves): Segment's snippet inserting
``{edge}/analytics.js/v1/{writeKey}/analytics.min.js``, which the edge answers with the real
standalone build of @segment/analytics-next. The device-mode scripts are the ones demo/build.mjs
bundles from npm (Amplitude: Segment's classic integration; Braze: an adapter over the Braze
Web SDK). The browser reaches nothing but loopback: the vendors' own APIs fail, as offline.
Needs ``bash tests/e2e/setup.sh`` (both node_modules) and Debian's ``chromium``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from tests.e2e.browser import Browser
from tests.e2e.conftest import StartEdge
from tests.e2e.integrations import script_url_path
from tests.e2e.publishing import UNKNOWN_WRITE_KEY, WRITE_KEY, cloud, device, publish
from tests.e2e.servers import (
    ANALYTICS_UMD,
    NGINX,
    ROOT,
    PageServer,
    Process,
    fetch,
    require_program,
)
from tests.e2e.test_analytics_next import AMPLITUDE, BRAZE, ENV
from tests.services import free_port

pytestmark = pytest.mark.slow

DEMO = ROOT / "demo"
INSTANCES = [device("amplitude", "amp-key"), device("braze", "braze-key"),
             cloud("mixpanel", "mixpanel-key")]
SNIPPET_ENV = {**ENV, "EDGE_ANALYTICS_JS": str(ANALYTICS_UMD / "standalone.js")}


def build_scripts(edge_url: str, write_key: str, assets_dir: Path) -> list[dict[str, Any]]:
    """Run demo/build.mjs on the settings the edge serves, into the edge's assets dir."""
    settings = assets_dir.parent / "settings.json"
    settings.write_bytes(fetch(f"{edge_url}/v1/projects/{write_key}/settings").body)
    if not (DEMO / "node_modules" / "esbuild").is_dir():
        raise RuntimeError("demo/node_modules is missing: run `bash tests/e2e/setup.sh`")
    proc = subprocess.run(["node", str(DEMO / "build.mjs"), "--settings", str(settings),
                           "--out", str(assets_dir)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def counter(edge_url: str, route: str, status: int) -> int:
    text = fetch(f"{edge_url}/metrics").body.decode()
    found = re.search(rf'(?m)^edge_http_requests_total{{route="{route}",status="{status}"}} '
                      r"(\d+)", text)
    return int(found[1]) if found else 0


def from_edge(visit: dict[str, Any], edge_url: str) -> dict[str, int | None]:
    """Path -> status of every request the page made to the edge."""
    return {r["url"].removeprefix(edge_url): r["status"] for r in visit["requests"]
            if r["url"].startswith(edge_url + "/")}


def test_snippet_loads_analytics_js_and_device_mode_from_the_edge(
    redis_client: redis.Redis, start_edge: StartEdge, assets_dir: Path, browser: Browser,
) -> None:
    publish(redis_client, INSTANCES, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(SNIPPET_ENV)
    built = build_scripts(edge.url, WRITE_KEY, assets_dir)
    assert {b["key"] for b in built if "path" in b} == {"Amplitude", "Appboy"}, built
    url = "?" + urlencode({"edge": edge.url, "writeKey": WRITE_KEY})

    with PageServer(DEMO / "page") as page:
        first = browser.visit(f"{page.url}/{url}", result_var="demoResult")
        assert first["ready"] is True, first
        assert first["loaded"] is True
        assert sorted(first["registered"]) == ["Amplitude", "Appboy"], first
        assert sorted(first["initialized"]) == ["Amplitude", "Appboy"], first
        assert first["failedInitializations"] == [], first
        paths = from_edge(first, edge.url)
        assert paths[f"/analytics.js/v1/{WRITE_KEY}/analytics.min.js"] == 200, paths
        assert paths[f"/v1/projects/{WRITE_KEY}/settings"] == 200, paths
        amplitude, braze = script_url_path(*AMPLITUDE), script_url_path(*BRAZE)
        assert paths[amplitude] == 200 and paths[braze] == 200, paths
        assert any(p.startswith("/next-integrations/vendor/amplitude-js/") and s == 200
                   for p, s in paths.items()), paths
        assert any(p.startswith("/analytics-next/bundles/ajs-destination.bundle.") and s == 200
                   for p, s in paths.items()), paths
        assert not any("mixpanel" in r["url"] for r in first["requests"]), first["requests"]
        # Nothing was asked of Segment's CDN; the vendors' APIs are out of reach (offline).
        assert not any("cdn.segment.com" in r["url"] for r in first["requests"])
        outside = [r for r in first["requests"] if not r["url"].startswith("http://127.0.0.1")]
        assert all(r["failure"] for r in outside), outside

        settings_304 = counter(edge.url, "settings", 304)
        scripts_200 = counter(edge.url, "assets", 200)
        analytics_js_200 = counter(edge.url, "analytics_js", 200)
        time.sleep(float(ENV["EDGE_MAX_AGE"]) + float(ENV["EDGE_STALE_WHILE_REVALIDATE"]) + 0.5)
        second = browser.visit(f"{page.url}/{url}", result_var="demoResult")

    assert second["ready"] is True, second
    assert sorted(second["initialized"]) == ["Amplitude", "Appboy"], second
    assert second["failedInitializations"] == []
    # The settings were revalidated (304); scripts and analytics.js came from the browser cache.
    assert counter(edge.url, "settings", 304) == settings_304 + 1
    assert counter(edge.url, "assets", 200) == scripts_200
    assert counter(edge.url, "analytics_js", 200) == analytics_js_200


def test_snippet_with_an_unknown_write_key(
    redis_client: redis.Redis, start_edge: StartEdge, browser: Browser,
) -> None:
    """analytics.min.js of an unknown key is the CDN's 404: nothing loads."""
    publish(redis_client, INSTANCES, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(SNIPPET_ENV)
    url = "?" + urlencode({"edge": edge.url, "writeKey": UNKNOWN_WRITE_KEY})

    with PageServer(DEMO / "page") as page:
        visit = browser.visit(f"{page.url}/{url}", result_var="demoResult", timeout=25)

    assert visit["ready"] is False
    assert visit["loaded"] is False
    assert list(from_edge(visit, edge.url)) == [
        f"/analytics.js/v1/{UNKNOWN_WRITE_KEY}/analytics.min.js"], visit["requests"]
    assert counter(edge.url, "analytics_js", 404) == 1
    assert counter(edge.url, "analytics_js", 200) == 0


TLS_CONF = """
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location / {{ proxy_pass {upstream}; proxy_http_version 1.1; }}
    }}
}}
"""


@pytest.fixture
def tls_proxy(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Debian's nginx terminating TLS (a self-signed certificate) in front of an edge."""
    started: list[Process] = []

    def start(upstream: str) -> str:
        nginx = require_program(NGINX, "apt-get install nginx-light (or set NGINX_BIN)")
        d = tmp_path / "tls"
        d.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                       check=True, capture_output=True, timeout=60)
        port = free_port()
        (d / "nginx.conf").write_text(TLS_CONF.format(d=d, port=port, upstream=upstream))
        proc = Process("nginx-tls", [nginx, "-p", str(d), "-e", str(d / "error.log"),
                                     "-c", str(d / "nginx.conf")], log_dir=d)
        started.append(proc)
        proc.start(port)
        return f"https://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stop(signal.SIGQUIT)


def test_an_https_snippet_host_is_the_whole_switch(
    redis_client: redis.Redis, start_edge: StartEdge, assets_dir: Path, browser: Browser,
    tls_proxy: Callable[[str], str],
) -> None:
    """With the edge behind https, the snippet's script host alone moves analytics-next: no
    ``analytics._cdn``; settings, chunks and integration scripts all come from that host."""
    publish(redis_client, INSTANCES, version=1, published_at=int(time.time()) - 10)
    edge = start_edge(SNIPPET_ENV)
    build_scripts(edge.url, WRITE_KEY, assets_dir)
    cdn = tls_proxy(edge.url)
    url = "?" + urlencode({"edge": cdn, "writeKey": WRITE_KEY})

    with PageServer(DEMO / "page") as page:
        visit = browser.visit(f"{page.url}/{url}", result_var="demoResult")

    assert visit["ready"] is True, visit
    assert sorted(visit["initialized"]) == ["Amplitude", "Appboy"], visit
    assert visit["failedInitializations"] == []
    paths = from_edge(visit, cdn)
    assert f"/v1/projects/{WRITE_KEY}/settings" in paths, visit["requests"]
    assert script_url_path(*AMPLITUDE) in paths and script_url_path(*BRAZE) in paths, paths
    assert any(p.startswith("/analytics-next/bundles/") for p in paths), paths
    assert not any(r["url"].startswith(edge.url) for r in visit["requests"])
