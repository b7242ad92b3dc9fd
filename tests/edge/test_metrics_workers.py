"""A real ``python -m edge`` with EDGE_WORKERS=2: every scrape, whichever worker answers it,
reports the requests of both, and no counter ever goes down, a worker's death included."""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.edge.helpers import publish
from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_200 = 'edge_http_requests_total{route="settings",status="200"}'
CONNECTIONS, PER_CONNECTION = 16, 5
N = CONNECTIONS * PER_CONNECTION
CONVERGE = 15.0  # bound on waiting for workers to start and publish (each second)


@dataclass
class Edge:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    tmp: Path  # the edge's TMPDIR: the parent's metrics directory is made there


@pytest.fixture
def edge(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Edge]:
    """Two uvicorn workers serving ``wk1``, both started."""
    publish(redis_client, "wk1")
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log = tmp_path / "edge.log"
    env = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(port),
           "EDGE_HOST": "127.0.0.1", "EDGE_WORKERS": "2", "TMPDIR": str(tmp),
           "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30)
        _wait_for(lambda: log.read_text().count("Application startup complete") >= 2,
                  lambda: "both workers started", log)
        yield Edge(proc, port, log, tmp)
    finally:
        stop_process(proc)


def _wait_for(condition: Callable[[], bool], what: Callable[[], str], log: Path,
              timeout: float = CONVERGE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what()}: not within {timeout}s; edge log:\n{log.read_text()}")


def _get(port: int, path: str, times: int = 1) -> list[http.client.HTTPResponse]:
    """``times`` GETs of ``path`` on one new connection (a new connection may reach either
    worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        replies = []
        for _ in range(times):
            conn.request("GET", path)
            reply = conn.getresponse()
            reply.read()
            replies.append(reply)
        return replies
    finally:
        conn.close()


def _scrape(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        reply = conn.getresponse()
        assert reply.status == 200
        text = reply.read().decode()
    finally:
        conn.close()
    return {
        s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                  if s.labels else ""): s.value
        for f in text_string_to_metric_families(text) for s in f.samples
    }


def _send_settings_requests(port: int) -> None:
    for _ in range(CONNECTIONS):
        assert [r.status for r in _get(port, "/v1/projects/wk1/settings", PER_CONNECTION)] == [
            200] * PER_CONNECTION


def _assert_never_decrease(scrapes: list[dict[str, float]]) -> None:
    for before, after in itertools.pairwise(scrapes):
        for name, value in before.items():
            if name.split("{")[0].endswith("_total"):
                assert after.get(name, 0) >= value, (name, before, after)


def _converge(edge: Edge, scrapes: list[dict[str, float]]) -> None:
    """Scrape until one reports all N settings requests (the other worker publishes every
    second), keeping every scrape."""

    def reports_all() -> bool:
        scrapes.append(_scrape(edge.port))
        return scrapes[-1].get(SETTINGS_200, 0) >= N

    _wait_for(reports_all, lambda: f"a scrape reporting all {N} settings requests (reported: "
              f"{sorted({s.get(SETTINGS_200, 0) for s in scrapes})})", edge.log)


def _workers(scrape: dict[str, float]) -> set[int]:
    return {int(name.split('worker="')[1].split('"')[0])
            for name in scrape if name.startswith("edge_redis_up{")}


def test_every_scrape_reports_the_requests_of_every_worker(edge: Edge) -> None:
    """N settings requests over several connections: once the workers have published, every
    scrape (each on a new connection, so either worker answers) reports exactly N, and no
    counter decreases from one scrape to the next."""
    _send_settings_requests(edge.port)
    scrapes: list[dict[str, float]] = []

    _converge(edge, scrapes)
    for _ in range(12):
        scrapes.append(_scrape(edge.port))

    assert [s[SETTINGS_200] for s in scrapes[-12:]] == [N] * 12
    _assert_never_decrease(scrapes)
    assert all(len(_workers(s)) == 2 for s in scrapes[-12:])  # redis_up: one per live worker


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def test_a_dead_worker_keeps_its_counts_and_the_directory_goes_at_exit(edge: Edge) -> None:
    """A worker killed (and replaced by uvicorn) keeps its counts in every later scrape; the
    metrics directory is removed when the edge stops."""
    _send_settings_requests(edge.port)
    scrapes: list[dict[str, float]] = []
    _converge(edge, scrapes)
    workers = _workers(scrapes[-1])
    assert len(workers) == 2 and workers <= _children(edge.proc.pid)
    (directory,) = edge.tmp.iterdir()
    victim = min(workers)

    os.kill(victim, signal.SIGKILL)  # a worker of the edge this test started
    _wait_for(lambda: len(_workers(_scrape(edge.port)) - {victim}) == 2,
              lambda: "a replacement worker publishing", edge.log)
    for _ in range(12):
        scrapes.append(_scrape(edge.port))
    stop_process(edge.proc)

    assert [s[SETTINGS_200] for s in scrapes[-12:]] == [N] * 12
    assert all(victim not in _workers(s) for s in scrapes[-12:])
    _assert_never_decrease(scrapes)
    assert edge.proc.returncode == 0
    assert not directory.exists()
