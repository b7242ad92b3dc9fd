"""The /next-integrations/ pull-through mirror against a local upstream (never the internet)."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge.app import create_app
from edge.assets import mirrorable
from edge.metrics import Metrics
from edge.mirror import Mirror, Upstream, upstream_problem
from edge.mirror import store as mirror_store
from edge.settings import EdgeSettings, SettingsError
from tests.edge.upstream import Upstream as FakeUpstream
from tests.edge.upstream import script

AMP = "integrations/amplitude/8.1.0/amplitude.dynamic.js.gz"
HOTJAR = "integrations/hotjar/2.0.0/hotjar.dynamic.js.gz"
LATEST = "integrations/hotjar/latest/hotjar.dynamic.js.gz"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.files[AMP] = script("amplitude")
    server.files[HOTJAR] = script("hotjar")
    server.files[LATEST] = script("hotjarLatest")
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"  # not created: the mirror creates it with the first file


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(redis_url: str, store: Path, upstream: FakeUpstream
                ) -> Iterator[MakeClient]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = EdgeSettings(**{
            "redis_url": redis_url, "assets_dir": str(store), "assets_upstream": upstream.url,
            "assets_upstream_timeout": 0.5, **overrides})
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def files_in(root: Path) -> list[str]:
    """Every file under ``root`` (hidden temporary files included), relative."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def get(client: TestClient, relative: str, **headers: str) -> Any:
    with client.stream("GET", "/next-integrations/" + relative, headers=headers) as reply:
        reply.raw_body = b"".join(reply.iter_raw())
    return reply


def test_first_fetch_is_stored_then_served_without_upstream(
        make_client: MakeClient, upstream: FakeUpstream, store: Path) -> None:
    """A missing file is fetched once, stored, and served from the store from then on, as the
    bucket serves it (gzip-encoded JavaScript, immutable, any origin)."""
    client = make_client()

    first = get(client, AMP)
    upstream.stop()
    second = get(client, AMP)

    for reply in (first, second):
        assert reply.status_code == 200
        assert reply.raw_body == script("amplitude")
        assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
        assert reply.headers["content-encoding"] == "gzip"
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert reply.headers["access-control-allow-origin"] == "*"
    assert upstream.count(AMP) == 1
    assert (store / AMP).read_bytes() == script("amplitude")
    assert files_in(store) == [AMP]


def test_upstream_stopped_stored_files_served_unknown_ones_502(
        make_client: MakeClient, upstream: FakeUpstream) -> None:
    """With the upstream gone, stored files are served and a never-stored one is a 502 with
    Retry-After, not cached anywhere."""
    client = make_client(assets_retry_after=7)
    assert get(client, AMP).status_code == 200
    upstream.stop()

    stored = get(client, AMP)
    unknown = get(client, HOTJAR)

    assert stored.status_code == 200
    assert unknown.status_code == 502
    assert unknown.headers["retry-after"] == "7"
    assert unknown.headers["cache-control"] == "no-store"


def test_upstream_hang_is_504_within_the_timeout(
        make_client: MakeClient, upstream: FakeUpstream, store: Path) -> None:
    """A hung upstream gives 504 with Retry-After after EDGE_ASSETS_UPSTREAM_TIMEOUT; the path
    is then answered 504 without asking the upstream again, and nothing is stored."""
    upstream.modes["*"] = "hang"
    client = make_client(assets_upstream_timeout=0.3, assets_retry_after=30)

    first = get(client, HOTJAR)
    second = get(client, HOTJAR)

    assert first.status_code == second.status_code == 504
    assert first.headers["retry-after"] == "30"
    assert upstream.count(HOTJAR) == 1
    assert files_in(store) == []


def test_stored_file_served_while_upstream_hangs(
        make_client: MakeClient, upstream: FakeUpstream) -> None:
    """A stored file never waits on a hung upstream (a stale 'latest' one neither)."""
    client = make_client(assets_upstream_timeout=30, assets_latest_max_age=0)
    assert get(client, AMP).status_code == 200
    assert get(client, LATEST).status_code == 200
    upstream.modes["*"] = "hang"

    assert get(client, AMP).raw_body == script("amplitude")
    assert get(client, LATEST).raw_body == script("hotjarLatest")  # its refresh hangs behind


def test_upstream_404_passed_on_briefly_and_not_stored(
        make_client: MakeClient, upstream: FakeUpstream, store: Path) -> None:
    """The upstream's 404 is a 404 with the short max-age, remembered (no second fetch), and
    nothing is written to the store."""
    client = make_client(assets_negative_ttl=9)
    path = "integrations/nosuch/1.0.0/nosuch.dynamic.js.gz"

    first = get(client, path)
    second = get(client, path)

    assert first.status_code == second.status_code == 404
    assert first.headers["cache-control"] == "public, max-age=9"
    assert upstream.count(path) == 1
    assert files_in(store) == []


def test_upstream_404_forgotten_after_negative_ttl_zero(
        make_client: MakeClient, upstream: FakeUpstream) -> None:
    """With EDGE_ASSETS_NEGATIVE_TTL=0 a 404 is not remembered: the file appearing upstream
    is fetched on the next request."""
    client = make_client(assets_negative_ttl=0)
    path = "integrations/late/1.0.0/late.dynamic.js.gz"
    assert get(client, path).status_code == 404

    upstream.files[path] = script("late")

    assert get(client, path).status_code == 200
    assert upstream.count(path) == 2


@pytest.mark.parametrize(
    ("mode", "max_bytes"),
    [
        pytest.param("truncate", 1 << 20, id="truncated"),
        pytest.param("oversize", 1000, id="content-length-over-cap"),
        pytest.param("chunked", 30, id="chunked-over-cap"),
        pytest.param("html", 1 << 20, id="html-error-page"),
        pytest.param("redirect", 1 << 20, id="redirect-not-followed"),
        pytest.param("500", 1 << 20, id="server-error"),
    ],
)
def test_refused_upstream_answers_are_never_stored(
        make_client: MakeClient, upstream: FakeUpstream, store: Path, mode: str,
        max_bytes: int) -> None:
    """A truncated, oversized, mistyped, redirected or failed answer is a 502 and leaves no
    file (not even a temporary one) in the store."""
    upstream.modes[HOTJAR] = mode
    client = make_client(assets_max_bytes=max_bytes)

    reply = get(client, HOTJAR)

    assert reply.status_code == 502
    assert "retry-after" in reply.headers
    assert upstream.count(HOTJAR) == 1
    assert files_in(store) == []


def test_chunked_answer_is_stored(make_client: MakeClient, upstream: FakeUpstream,
                                  store: Path) -> None:
    """A complete chunked answer is stored whole."""
    upstream.modes[HOTJAR] = "chunked"
    client = make_client()

    assert get(client, HOTJAR).raw_body == script("hotjar")
    assert (store / HOTJAR).read_bytes() == script("hotjar")


def test_not_gzip_data_in_a_gz_file_is_refused(
        make_client: MakeClient, upstream: FakeUpstream, store: Path) -> None:
    """A .gz path whose body is not gzip data is not stored."""
    upstream.files[HOTJAR] = b"window.x=1;"
    client = make_client()

    assert get(client, HOTJAR).status_code == 502
    assert files_in(store) == []


def test_no_client_header_goes_upstream(make_client: MakeClient,
                                        upstream: FakeUpstream) -> None:
    """The upstream sees the mirror's own request, none of the client's headers."""
    client = make_client()

    get(client, AMP, cookie="session=secret", authorization="Bearer t", **{"x-forwarded-for":
                                                                          "10.0.0.1"})

    (seen,) = upstream.headers
    assert not {"cookie", "authorization", "x-forwarded-for"} & set(seen)
    assert seen["host"] == f"127.0.0.1:{upstream.port}"
    assert upstream.requests == {"/next-integrations/" + AMP: 1}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/next-integrations/%2e%2e/secret.js", id="encoded-dotdot"),
        pytest.param("/next-integrations/integrations/%2e%2e/%2e%2e/x.js", id="deep-dotdot"),
        pytest.param("/next-integrations/.env", id="hidden"),
        pytest.param("/next-integrations/a/.git/config", id="hidden-deep"),
        pytest.param("/next-integrations/a%3Fq=1", id="query-char"),
        pytest.param("/next-integrations/a%23frag", id="fragment-char"),
        pytest.param("/next-integrations/a%20b.js", id="space"),
        pytest.param("/next-integrations/a//b.js", id="empty-segment"),
        pytest.param("/next-integrations/" + "a" * 300 + ".js", id="too-long"),
        pytest.param("/next-integrations/a%00b", id="nul"),
    ],
)
def test_unsafe_paths_are_404_without_upstream(make_client: MakeClient, upstream: FakeUpstream,
                                               path: str) -> None:
    """Paths that are not plain names are 404 and never fetched."""
    client = make_client()

    assert client.get(path).status_code == 404
    assert upstream.total == 0


def test_only_the_tree_is_mirrored(make_client: MakeClient, upstream: FakeUpstream) -> None:
    """Other paths are never fetched from the upstream."""
    client = make_client()

    assert client.get("/analytics.js/v1/wk/analytics.min.js").status_code == 404
    assert client.get("/next-integrations").status_code == 404
    assert upstream.total == 0


def test_disabled_upstream_is_never_contacted(make_client: MakeClient,
                                              upstream: FakeUpstream) -> None:
    """EDGE_ASSETS_UPSTREAM empty: the store alone, a missing file 404."""
    client = make_client(assets_upstream="")

    assert get(client, AMP).status_code == 404
    assert upstream.total == 0


def test_latest_is_fetched_again_after_its_max_age(
        make_client: MakeClient, upstream: FakeUpstream, store: Path) -> None:
    """A stored 'latest' file older than EDGE_ASSETS_LATEST_MAX_AGE is served as stored while
    one background fetch replaces it; the next request gets the new file."""
    client = make_client(assets_latest_max_age=60)
    assert get(client, LATEST).raw_body == script("hotjarLatest")
    upstream.files[LATEST] = script("hotjarNewer")
    assert get(client, LATEST).raw_body == script("hotjarLatest")  # fresh: no fetch
    assert upstream.count(LATEST) == 1
    old = time.time() - 120
    os.utime(store / LATEST, (old, old))

    stale = get(client, LATEST)
    deadline = time.monotonic() + 10
    while (store / LATEST).read_bytes() != script("hotjarNewer") and time.monotonic() < deadline:
        time.sleep(0.02)
    fresh = get(client, LATEST)

    assert stale.raw_body == script("hotjarLatest")
    assert stale.headers["cache-control"] == "public, max-age=60"
    assert fresh.raw_body == script("hotjarNewer")
    assert upstream.count(LATEST) == 2


def test_versioned_file_is_never_fetched_again(
        make_client: MakeClient, upstream: FakeUpstream, store: Path) -> None:
    """A stored versioned file is immutable: however old, it is not fetched again."""
    client = make_client(assets_latest_max_age=0)
    get(client, AMP)
    os.utime(store / AMP, (0, 0))

    get(client, AMP)

    assert upstream.count(AMP) == 1


def test_metrics_count_hits_fetches_errors_and_bytes(
        make_client: MakeClient, upstream: FakeUpstream) -> None:
    """/metrics counts mirror hits, upstream fetches, 404s, errors and bytes stored."""
    upstream.modes["integrations/broken/1/broken.dynamic.js.gz"] = "truncate"
    upstream.files["integrations/broken/1/broken.dynamic.js.gz"] = script("broken")
    client = make_client()
    get(client, AMP)
    get(client, AMP)
    get(client, "integrations/none/1/none.dynamic.js.gz")
    get(client, "integrations/broken/1/broken.dynamic.js.gz")

    text = client.get("/metrics").text

    assert "edge_mirror_hits_total 1\n" in text
    assert "edge_mirror_fetches_total 3\n" in text
    assert "edge_mirror_upstream_not_found_total 1\n" in text
    assert "edge_mirror_upstream_errors_total 1\n" in text
    assert f"edge_mirror_stored_bytes_total {len(script('amplitude'))}\n" in text
    assert 'edge_http_requests_total{route="assets",status="502"} 1' in text


def test_concurrent_first_requests_share_one_fetch(upstream: FakeUpstream, store: Path) -> None:
    """Twenty concurrent requests for one missing file in one worker: one upstream fetch, and
    every caller gets the stored file."""
    upstream.delay = 0.2
    mirror = Mirror(str(store), Upstream.parse(upstream.url), timeout=5, max_bytes=1 << 20,
                    negative_ttl=5, retry_after=5, metrics=Metrics())

    async def many() -> list[Any]:
        return await asyncio.gather(*(mirror.obtain(AMP) for _ in range(20)))

    outcomes = asyncio.run(many())

    assert upstream.count(AMP) == 1
    assert {(o.kind, o.path) for o in outcomes} == {("stored", str(store / AMP))}
    assert mirror.metrics.mirror_fetches == 1


def test_cancelled_caller_does_not_cancel_the_fetch(upstream: FakeUpstream,
                                                    store: Path) -> None:
    """A client that goes away leaves the fetch running for the others (and the store)."""
    upstream.delay = 0.2
    mirror = Mirror(str(store), Upstream.parse(upstream.url), timeout=5, max_bytes=1 << 20,
                    negative_ttl=5, retry_after=5)

    async def scenario() -> Any:
        gone = asyncio.create_task(mirror.obtain(AMP))
        await asyncio.sleep(0.05)
        gone.cancel()
        return await mirror.obtain(AMP)

    outcome = asyncio.run(scenario())

    assert outcome.kind == "stored"
    assert upstream.count(AMP) == 1


@pytest.mark.parametrize(
    ("url", "target"),
    [
        pytest.param("https://cdn.segment.com", "/next-integrations/a/b.js.gz", id="origin"),
        pytest.param("http://h:8000/mirror/", "/mirror/next-integrations/a/b.js.gz",
                     id="with-path"),
    ],
)
def test_upstream_target(url: str, target: str) -> None:
    """Fetches go to <upstream>/next-integrations/<path>."""
    assert Upstream.parse(url).target("a/b.js.gz") == target


@pytest.mark.parametrize(
    "value",
    ["ftp://cdn.example", "cdn.segment.com", "https://", "https://u:p@cdn.example",
     "https://cdn.example/?x=1", "https://cdn.example/#f", "http://h:99999"],
)
def test_bad_upstream_setting_stops_the_edge(value: str) -> None:
    """EDGE_ASSETS_UPSTREAM must be a plain http(s) URL: anything else is a settings error."""
    assert upstream_problem(value)
    with pytest.raises(SettingsError, match="EDGE_ASSETS_UPSTREAM="):
        EdgeSettings.from_env({"EDGE_ASSETS_UPSTREAM": value})


def test_empty_upstream_disables_and_unset_is_segment() -> None:
    """Unset: Segment's public CDN; empty: the mirror is off."""
    assert EdgeSettings.from_env({}).assets_upstream == "https://cdn.segment.com"
    assert EdgeSettings.from_env({"EDGE_ASSETS_UPSTREAM": ""}).assets_upstream == ""
    assert EdgeSettings.from_env({"EDGE_ASSETS_UPSTREAM": "  "}).assets_upstream == ""


def test_assets_dir_may_not_exist_yet_but_must_not_be_a_file(tmp_path: Path) -> None:
    """The store is created with its first file; a path naming a file is refused."""
    (tmp_path / "file").write_bytes(b"")
    assert EdgeSettings(assets_dir=str(tmp_path / "later" / "assets")).assets_dir
    with pytest.raises(SettingsError, match="is not a directory"):
        EdgeSettings(assets_dir=str(tmp_path / "file"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("integrations/google-analytics/2.18.1/google-analytics.dynamic.js.gz",
                     True, id="script"),
        pytest.param("vendor/commons.59560acdd69ed701c941.js.gz", True, id="chunk"),
        pytest.param("integrations/Z29vZ2xlLWFuYWx5dGljcw/latest/x.js.gz", True, id="base64"),
        pytest.param("a/../b", False, id="dotdot"),
        pytest.param("a/.hidden", False, id="hidden"),
        pytest.param("a b", False, id="space"),
        pytest.param("a?b", False, id="query"),
    ],
)
def test_mirrorable(path: str, expected: bool) -> None:
    assert mirrorable(path) is expected


def test_store_never_exposes_a_partial_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """While a file is being written and synced, its path holds nothing or the previous
    complete version; the new one appears whole, and no temporary file is left."""
    root = tmp_path / "store"
    seen: list[bytes | None] = []
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the data's sync, not the directory's
            target = root / AMP
            seen.append(target.read_bytes() if target.exists() else None)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    old, new = b"\x1f\x8bold" * 1000, b"\x1f\x8bnew" * 2000

    mirror_store(str(root), AMP, old)
    mirror_store(str(root), AMP, new)

    assert (root / AMP).read_bytes() == new
    assert len(seen) == 2 and set(seen) <= {None, old}
    assert files_in(root) == [AMP]
