"""The mirror in real ``python -m edge`` processes on loopback, against a local upstream."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.edge.upstream import Upstream as FakeUpstream
from tests.edge.upstream import script
from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
AMP = "integrations/amplitude/8.1.0/amplitude.dynamic.js.gz"
BIG = "integrations/big/1.0.0/big.dynamic.js.gz"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.files[AMP] = script("amplitude")
    # ~1 MB of gzip: many writes, so a reader racing the writer would see a partial file
    server.files[BIG] = gzip.compress(os.urandom(1 << 20), mtime=0)
    yield server
    server.stop()


StartEdge = Callable[..., str]


@pytest.fixture
def start_edge(redis_url: str, tmp_path: Path, upstream: FakeUpstream) -> Iterator[StartEdge]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(store: Path, **extra: str) -> str:
        port = free_port()
        env = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(port),
               "EDGE_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT), "EDGE_ASSETS_DIR": str(store),
               "EDGE_ASSETS_UPSTREAM": upstream.url, "TMPDIR": str(tmp_path), **extra}
        with open(tmp_path / f"edge-{port}.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "edge"], env=env, cwd=ROOT,
                                          stdout=log, stderr=subprocess.STDOUT))
        wait_for_port(port)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        stop_process(proc)


def fetch_all(urls: list[str]) -> list[httpx.Response]:
    def one(url: str) -> httpx.Response:
        return httpx.get(url, headers={"accept-encoding": "identity"}, timeout=10)

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(one, urls))


def files_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_concurrent_first_requests_one_upstream_fetch(
        start_edge: StartEdge, upstream: FakeUpstream, tmp_path: Path) -> None:
    """Sixteen concurrent first requests to one single-worker edge: one upstream fetch, every
    answer the complete file."""
    upstream.delay = 0.3
    edge = start_edge(tmp_path / "store")

    replies = fetch_all([f"{edge}/next-integrations/{AMP}"] * 16)

    assert [r.status_code for r in replies] == [200] * 16
    assert {r.headers["content-encoding"] for r in replies} == {"gzip"}
    assert upstream.count(AMP) == 1


def test_edges_sharing_a_store_never_serve_a_partial_file(
        start_edge: StartEdge, upstream: FakeUpstream, tmp_path: Path) -> None:
    """Two edges (one of two workers) sharing one store, hit at once for a 1 MB file: every
    answer is the whole file, and the store ends with that file and no temporary one."""
    store = tmp_path / "store"
    upstream.delay = 0.2
    one = start_edge(store)
    two = start_edge(store, EDGE_WORKERS="2")

    urls = [f"{edge}/next-integrations/{BIG}" for edge in (one, two) for _ in range(12)]
    replies = fetch_all(urls)

    expected = upstream.files[BIG]
    assert [r.status_code for r in replies] == [200] * len(urls)
    assert all(int(r.headers["content-length"]) == len(expected) for r in replies)
    assert all(r.content == gzip.decompress(expected) for r in replies)
    assert 1 <= upstream.count(BIG) <= 3  # at most one fetch per worker
    assert files_in(store) == [BIG]
    assert (store / BIG).read_bytes() == expected


def test_upstream_hung_or_stopped(start_edge: StartEdge, upstream: FakeUpstream,
                                  tmp_path: Path) -> None:
    """A stored file is served while the upstream hangs; a file never stored gets 504 with
    Retry-After after the upstream timeout, and 502 once the upstream's port is closed."""
    edge = start_edge(tmp_path / "store", EDGE_ASSETS_UPSTREAM_TIMEOUT="0.5",
                      EDGE_ASSETS_RETRY_AFTER="0")
    assert httpx.get(f"{edge}/next-integrations/{AMP}").status_code == 200
    upstream.modes["*"] = "hang"

    stored = httpx.get(f"{edge}/next-integrations/{AMP}", timeout=10)
    hung = httpx.get(f"{edge}/next-integrations/{BIG}", timeout=10)
    upstream.stop()
    stopped = httpx.get(f"{edge}/next-integrations/{BIG}", timeout=10)

    assert stored.status_code == 200
    assert hung.status_code == 504
    assert hung.headers["retry-after"] == "0"
    assert stopped.status_code == 502
    assert not (tmp_path / "store" / BIG).exists()
