"""Static CDN paths (/next-integrations/...) served from EDGE_ASSETS_DIR, safely (the mirror
off: EDGE_ASSETS_UPSTREAM empty; tests/edge/test_mirror.py covers it)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from edge import assets
from edge.app import create_app
from edge.settings import EdgeSettings

SCRIPT = b"window['amplitudeDeps']=[];window['amplitudeLoader']=function(){};"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "assets"
    versioned = base / "integrations" / "amplitude" / "3.0.1"
    latest = base / "integrations" / "amplitude" / "latest"
    for folder in (versioned, latest):
        folder.mkdir(parents=True)
        (folder / "amplitude.dynamic.js.gz").write_bytes(gzip.compress(SCRIPT, mtime=0))
    (base / "manifest-latest.json").write_bytes(b"{}")
    (base / ".secret").write_bytes(b"hidden")
    (tmp_path / "outside.txt").write_bytes(b"outside")
    (base / "escape.js").symlink_to(tmp_path / "outside.txt")
    return base


@pytest.fixture
def client(root: Path, redis_url: str) -> Iterator[TestClient]:
    settings = EdgeSettings(redis_url=redis_url, assets_dir=str(root), assets_upstream="")
    with TestClient(create_app(settings)) as c:
        yield c


def test_versioned_gzip_script(client: TestClient) -> None:
    """A versioned .js.gz is served gzip-encoded as JavaScript, immutable, to any origin."""
    path = "/next-integrations/integrations/amplitude/3.0.1/amplitude.dynamic.js.gz"
    with client.stream("GET", path) as reply:
        raw = b"".join(reply.iter_raw())

    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert reply.headers["content-encoding"] == "gzip"
    assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert reply.headers["access-control-allow-origin"] == "*"
    assert gzip.decompress(raw) == SCRIPT


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("integrations/amplitude/latest/amplitude.dynamic.js.gz", id="latest-dir"),
        pytest.param("manifest-latest.json", id="latest-manifest"),
    ],
)
def test_latest_paths_are_short_lived(client: TestClient, path: str) -> None:
    """Moving 'latest' aliases get the short max-age, not immutable."""
    reply = client.get("/next-integrations/" + path)

    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "public, max-age=120"


def test_conditional_asset_304(client: TestClient) -> None:
    """An asset revalidated with its ETag gets 304."""
    path = "/next-integrations/manifest-latest.json"
    etag = client.get(path).headers["etag"]

    reply = client.get(path, headers={"if-none-match": etag})

    assert reply.status_code == 304
    assert reply.headers["etag"] == etag


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/next-integrations/%2e%2e/outside.txt", id="encoded-dotdot"),
        pytest.param("/next-integrations/integrations/%2e%2e/%2e%2e/%2e%2e/outside.txt",
                     id="encoded-dotdot-deep"),
        pytest.param("/next-integrations/..%2foutside.txt", id="encoded-slash"),
        pytest.param("/next-integrations/.secret", id="hidden-file"),
        pytest.param("/next-integrations/escape.js", id="symlink-out"),
        pytest.param("/next-integrations/integrations/amplitude/3.0.1/", id="directory"),
        pytest.param("/next-integrations/integrations", id="directory-no-slash"),
        pytest.param("/next-integrations/nope.js", id="missing"),
        pytest.param("/next-integrations/a%5c..%5coutside.txt", id="backslash"),
        pytest.param("/next-integrations/a%00b", id="nul"),
    ],
)
def test_hostile_or_missing_paths_404(client: TestClient, path: str) -> None:
    """Traversal, hidden, symlinked-out, directory and missing paths are 404."""
    reply = client.get(path)

    assert reply.status_code == 404
    assert b"outside" not in reply.content and b"hidden" not in reply.content


def test_no_store_and_no_upstream_means_404(redis_url: str, tmp_path: Path) -> None:
    """A store not created yet and no upstream: the asset paths are 404, nothing created."""
    store = tmp_path / "not-yet"
    settings = EdgeSettings(redis_url=redis_url, assets_dir=str(store), assets_upstream="")
    with TestClient(create_app(settings)) as client:
        assert client.get("/next-integrations/manifest-latest.json").status_code == 404
    assert not store.exists()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("a/b.js", "a/b.js", id="plain"),
        pytest.param("../x", None, id="dotdot"),
        pytest.param("a/./b", None, id="dot"),
        pytest.param("a//b", None, id="empty-segment"),
        pytest.param("a/", None, id="trailing-slash"),
        pytest.param(".git/config", None, id="hidden"),
        pytest.param("a\\b", None, id="backslash"),
    ],
)
def test_safe_relative(path: str, expected: str | None) -> None:
    """Only plain segment names pass the path check."""
    assert assets.safe_relative(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("x.dynamic.js.gz", ("text/javascript", True), id="js-gz"),
        pytest.param("x.js", ("text/javascript", False), id="js"),
        pytest.param("manifest-latest.json.gz", ("application/json", True), id="json-gz"),
        pytest.param("blob", ("application/octet-stream", False), id="unknown"),
    ],
)
def test_media_type(path: str, expected: tuple[str, bool]) -> None:
    """Content type is that of the compressed content, and .gz means gzip-encoded."""
    assert assets.media_type(path) == expected
