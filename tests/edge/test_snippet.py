"""The classic snippet's script, /analytics.js/v1/{writeKey}/analytics.min.js, and its chunks."""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from edge.app import create_app
from edge.settings import EdgeSettings, SettingsError
from edge.snippet import NOT_CONFIGURED_BODY
from tests.edge.helpers import publish
from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
KNOWN = "snippetKnownKey01"
UNKNOWN = "snippetUnknownKey02"
SCRIPT = b"/* standalone */ window.analyticsWriteKey = '__WRITE_KEY__';" + b" " * 2000
CHUNK = b"/* ajs-destination chunk */"
CHUNK_NAME = "ajs-destination.bundle.40628baed746e9904edc.js"
NOT_FOUND = b"Cannot GET - Invalid path or write key provided."


def script_path(write_key: str) -> str:
    return f"/analytics.js/v1/{write_key}/analytics.min.js"


@pytest.fixture
def standalone(tmp_path: Path) -> Path:
    """A dist/umd folder: standalone.js, a chunk, and files that must not be served."""
    umd = tmp_path / "umd"
    umd.mkdir()
    (umd / "standalone.js").write_bytes(SCRIPT)
    (umd / CHUNK_NAME).write_bytes(CHUNK)
    (umd / (CHUNK_NAME + ".map")).write_bytes(b"{}")
    (umd / "index.js").write_bytes(b"/* the npm UMD build */")
    return umd / "standalone.js"


@pytest.fixture
def client(standalone: Path, redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    publish(redis_client, KNOWN)
    settings = EdgeSettings(redis_url=redis_url, analytics_js=str(standalone),
                            analytics_js_max_age=120)
    with TestClient(create_app(settings)) as c:
        yield c


def test_known_key_gets_the_standalone_build_gzip(client: TestClient) -> None:
    with client.stream("GET", script_path(KNOWN), headers={"accept-encoding": "gzip"}) as reply:
        raw = b"".join(reply.iter_raw())

    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert reply.headers["content-encoding"] == "gzip"
    assert reply.headers["content-length"] == str(len(raw))
    assert reply.headers["cache-control"] == "public, max-age=120"
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["vary"] == "Accept-Encoding"
    assert reply.headers["etag"].startswith('"') and not reply.headers["etag"].startswith('W/')
    assert len(raw) < len(SCRIPT)
    assert gzip.decompress(raw) == SCRIPT


def test_known_key_identity(client: TestClient) -> None:
    reply = client.get(script_path(KNOWN), headers={"accept-encoding": "identity"})

    assert reply.status_code == 200
    assert "content-encoding" not in reply.headers
    assert reply.content == SCRIPT
    assert reply.headers["content-length"] == str(len(SCRIPT))


def test_same_bytes_and_etag_for_every_known_key(client: TestClient,
                                                  redis_client: redis.Redis) -> None:
    publish(redis_client, "snippetOtherKey03")
    one = client.get(script_path(KNOWN))
    other = client.get(script_path("snippetOtherKey03"))

    assert other.status_code == 200
    assert other.content == one.content
    assert other.headers["etag"] == one.headers["etag"]


@pytest.mark.parametrize("key", [UNKNOWN, "bad{key}", "a" * 300])
def test_unknown_key_is_the_cdn_404(client: TestClient, key: str) -> None:
    reply = client.get(script_path(key))

    assert reply.status_code == 404
    assert reply.content == NOT_FOUND
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["cache-control"].startswith("public, max-age=")


def test_unpublished_key_is_404(client: TestClient, redis_client: redis.Redis) -> None:
    """A key whose pointer was never set is unknown, whatever else Redis holds."""
    redis_client.set("unrelated", "x")
    assert client.get(script_path("neverPublishedKey4")).status_code == 404


def test_if_none_match_is_304(client: TestClient) -> None:
    etag = client.get(script_path(KNOWN)).headers["etag"]

    reply = client.get(script_path(KNOWN), headers={"if-none-match": etag,
                                                     "accept-encoding": "gzip"})

    assert reply.status_code == 304
    assert reply.content == b""
    assert reply.headers["etag"] == etag
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["cache-control"] == "public, max-age=120"
    assert client.get(script_path(KNOWN),
                      headers={"if-none-match": '"other"'}).status_code == 200


def test_if_none_match_for_an_unknown_key_is_still_404(client: TestClient) -> None:
    etag = client.get(script_path(KNOWN)).headers["etag"]
    assert client.get(script_path(UNKNOWN), headers={"if-none-match": etag}).status_code == 404


def test_head(client: TestClient) -> None:
    reply = client.head(script_path(KNOWN), headers={"accept-encoding": "gzip"})

    assert reply.status_code == 200
    assert reply.content == b""
    assert reply.headers["content-encoding"] == "gzip"
    assert int(reply.headers["content-length"]) == len(gzip.compress(SCRIPT, 9, mtime=0))
    assert client.head(script_path(UNKNOWN)).status_code == 404


def test_preflight(client: TestClient) -> None:
    reply = client.options(script_path(KNOWN), headers={"origin": "https://shop.example",
                                                        "access-control-request-method": "GET"})
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == "*"


def test_chunks_beside_the_standalone_build(client: TestClient) -> None:
    reply = client.get(f"/analytics-next/bundles/{CHUNK_NAME}",
                       headers={"accept-encoding": "gzip"})

    assert reply.status_code == 200
    assert reply.content == CHUNK  # (the test client decodes gzip)
    assert reply.headers["content-encoding"] == "gzip"
    assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert reply.headers["access-control-allow-origin"] == "*"
    again = client.get(f"/analytics-next/bundles/{CHUNK_NAME}",
                       headers={"if-none-match": reply.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("name", ["standalone.js", "index.js", CHUNK_NAME + ".map",
                                  "missing.bundle.0.js", "..%2Fstandalone.js"])
def test_only_chunks_are_served_as_chunks(client: TestClient, name: str) -> None:
    assert client.get(f"/analytics-next/bundles/{name}").status_code == 404


def test_requests_are_counted(client: TestClient) -> None:
    client.get(script_path(KNOWN))
    client.get(script_path(UNKNOWN))
    metrics = client.get("/metrics").text
    assert 'edge_http_requests_total{route="analytics_js",status="200"} 1' in metrics
    assert 'edge_http_requests_total{route="analytics_js",status="404"} 1' in metrics


def test_unset_means_404_saying_so(redis_url: str, redis_client: redis.Redis,
                                   caplog: pytest.LogCaptureFixture) -> None:
    publish(redis_client, KNOWN)
    with caplog.at_level(logging.WARNING, logger="edge.snippet"):
        app = create_app(EdgeSettings(redis_url=redis_url))
    assert "EDGE_ANALYTICS_JS is not set" in caplog.text
    with TestClient(app) as c:
        for path in (script_path(KNOWN), f"/analytics-next/bundles/{CHUNK_NAME}"):
            reply = c.get(path)
            assert reply.status_code == 404
            assert reply.content == NOT_CONFIGURED_BODY
            assert reply.headers["access-control-allow-origin"] == "*"


def test_a_missing_file_stops_the_edge(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"EDGE_ANALYTICS_JS=.*is not a readable file"):
        EdgeSettings.from_env({"EDGE_ANALYTICS_JS": str(tmp_path / "absent.js")})
    with pytest.raises(SettingsError, match="is not a readable file"):
        EdgeSettings.from_env({"EDGE_ANALYTICS_JS": str(tmp_path)})


def test_a_missing_file_exits_2_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE_ANALYTICS_JS": str(tmp_path / "absent.js"),
           "PYTHONPATH": str(ROOT), "EDGE_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, "-m", "edge"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "EDGE_ANALYTICS_JS" in proc.stderr


def _get(port: int, path: str, method: str = "GET",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def test_real_socket(standalone: Path, redis_url: str, redis_client: redis.Redis,
                     tmp_path: Path) -> None:
    """settings-cdn-edge's own HTTP protocol on a real socket: 200 gzip and identity, 304,
    HEAD, 404."""
    publish(redis_client, KNOWN)
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(port),
           "EDGE_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT),
           "EDGE_ANALYTICS_JS": str(standalone)}
    with open(tmp_path / "edge.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        status, headers, body = _get(port, script_path(KNOWN), headers={"Accept-Encoding": "gzip"})
        assert (status, headers["content-encoding"]) == (200, "gzip")
        assert gzip.decompress(body) == SCRIPT
        status, headers, body = _get(port, script_path(KNOWN))
        assert (status, body) == (200, SCRIPT)
        assert "content-encoding" not in headers
        status, _, body = _get(port, script_path(KNOWN),
                               headers={"If-None-Match": headers["etag"]})
        assert (status, body) == (304, b"")
        status, headers, body = _get(port, script_path(KNOWN), method="HEAD")
        assert (status, body, headers["content-length"]) == (200, b"", str(len(SCRIPT)))
        assert _get(port, script_path(UNKNOWN))[::2] == (404, NOT_FOUND)
    finally:
        stop_process(proc)
