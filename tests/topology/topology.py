"""The scaled-out deployment on loopback, every part a real process.

One Redis primary and two replicas (``--replicaof``), three Sentinels watching them, the
publisher (``settings-cdn-publisher serve``, writing to the primary Sentinel names) with the
example workspace, and three edges in instant mode: ``fixed`` reads replica 1 through
``REDIS_URL`` with two workers, ``second`` reads replica 2 through ``REDIS_URL``, ``located``
reads a replica Sentinel names. Every process is stopped by the PID this module started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.e2e.servers import Process, Reply, fetch
from tests.services import RedisServer, SentinelServer, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "examples" / "workspace.json"
SERVICE = "scaled"
# settings-cdn-publisher, as this checkout's code (the console script may be another's)
PUBLISHER = [sys.executable, "-c", "import sys; from publisher.cli import main; sys.exit(main())"]
# every server: full syncs start at once (Redis 7 waits 5 s for more replicas by default)
REDIS_ARGS = ["--repl-diskless-sync-delay", "0"]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def info(port: int, section: str = "replication") -> dict[str, Any]:
    with redis.Redis(port=port, socket_timeout=1) as client:
        return dict(client.info(section))


def linked(port: int) -> bool:
    """A replica whose link to its primary is up and whose data set is loaded."""
    try:
        state = info(port)
    except redis.RedisError:
        return False
    return state.get("master_link_status") == "up" and not info(port, "persistence")["loading"]


@dataclass
class EdgeProc:
    name: str
    port: int
    process: Process
    workers: int = 1

    def warm(self, write_keys: list[str]) -> bool:
        """Ask for every source, then whether every worker holds them all (/metrics sums the
        live workers' caches, each published within a second)."""
        for write_key in write_keys * 3:  # (a new connection each: any worker may take it)
            self.get(write_key)
        sources = len(write_keys)
        reply = fetch(f"http://127.0.0.1:{self.port}/metrics", timeout=3)
        held = re.search(rb"^edge_cache_entries (\d+)", reply.body, re.MULTILINE)
        if held is not None and int(held.group(1)) >= sources * self.workers:
            return True
        return False

    def get(self, write_key: str, etag: str | None = None) -> Reply:
        headers = {"accept-encoding": "gzip"}
        if etag is not None:
            headers["if-none-match"] = etag
        return fetch(f"http://127.0.0.1:{self.port}/v1/projects/{write_key}/settings",
                     headers, timeout=3)


@dataclass
class Topology:
    tmp: Path
    primary: RedisServer
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]
    edges: list[EdgeProc] = field(default_factory=list)
    publisher: Process | None = None
    api_port: int = 0
    token: str = ""
    write_keys: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def primary_port(self) -> int:
        """The primary's port as the Sentinels agree on it."""
        ports = set()
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                ports.add(int(client.sentinel_get_master_addr_by_name(SERVICE)[1]))
        assert len(ports) == 1, f"the Sentinels disagree on the primary: {ports}"
        return ports.pop()

    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=10)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers={"authorization": f"Bearer {self.token}",
                                  "content-type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def set_amplitude_key(self, value: str) -> dict[str, Any]:
        """One write through the Config API: the website's Amplitude apiKey (a new version).
        Returns the write's ``bundle`` (version, etag, pending)."""
        status, body = self.api(
            "PATCH", "/v1beta/workspaces/acme/sources/website/destinations/amplitude",
            {"destination": {"config": [{"name": "apiKey", "value": value}]},
             "update_mask": {"paths": ["destination.config"]}})
        assert status == 200, (status, body)
        bundle: dict[str, Any] = body["bundle"]
        return bundle

    def publisher_cli(self, *args: str) -> str:
        done = subprocess.run([*PUBLISHER, *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


def start_topology(tmp: Path) -> Iterator[Topology]:
    """Start everything (replicas synced, Sentinels agreeing, the example workspace published
    and loaded, every edge serving it); stop it all afterwards."""
    primary = RedisServer(args=REDIS_ARGS)
    replicas = [RedisServer(args=[*REDIS_ARGS, "--replicaof", "127.0.0.1", str(primary.port)])
                for _ in range(2)]
    sentinels = [SentinelServer(primary.port, service=SERVICE) for _ in range(3)]
    topo = Topology(tmp, primary, replicas, sentinels)
    started: list[Callable[[], None]] = []
    try:
        for server in topo.servers():
            server.start()
            started.append(server.stop)
        wait_until(lambda: all(linked(r.port) for r in replicas), "replicas synced")
        for sentinel in sentinels:
            sentinel.start()
            started.append(sentinel.stop)
        wait_until(lambda: all(_sees(s.port, 2, 2) for s in sentinels),
                   "every Sentinel knows both replicas and the other Sentinels")
        topo.api_port = free_port()
        topo.env = {**os.environ, "PYTHONPATH": str(ROOT), "PUBLISHER_DB": str(tmp / "p.db"),
                    "REDIS_URL": "redis://127.0.0.1:1/0",  # (Sentinel names the servers)
                    "PUBLISHER_REDIS_SENTINELS": topo.sentinel_addresses,
                    "PUBLISHER_REDIS_SENTINEL_SERVICE": SERVICE,
                    "PUBLISHER_REDIS_TIMEOUT": "1", "PUBLISHER_RETRY_INTERVAL": "0.3",
                    "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(topo.api_port),
                    "EDGE_REFRESH_INTERVAL": "1"}
        topo.publisher_cli("apply", str(WORKSPACE))
        topo.token = topo.publisher_cli("token", "create", "acme", "--scope", "write").strip()
        topo.write_keys = [row["write_key"] for row in
                           json.loads(topo.publisher_cli("sources", "acme"))]
        topo.publisher = Process("publisher", [*PUBLISHER, "serve"], env=topo.env, cwd=ROOT,
                                 log_dir=tmp)
        topo.publisher.start(topo.api_port)
        started.append(topo.publisher.stop)
        edge_env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_HOST": "127.0.0.1",
                    "EDGE_INSTANT": "true", "EDGE_REFRESH_INTERVAL": "1",
                    "EDGE_REDIS_RETRY_INTERVAL": "0.2", "EDGE_LOG_LEVEL": "warning"}
        layouts = [
            ("fixed", {"REDIS_URL": replicas[0].url, "EDGE_WORKERS": "2"}),
            ("second", {"REDIS_URL": replicas[1].url}),
            ("located", {"EDGE_REDIS_SENTINELS": topo.sentinel_addresses,
                         "REDIS_URL": "redis://127.0.0.1:1/0",
                         "EDGE_REDIS_SENTINEL_SERVICE": SERVICE, "EDGE_REDIS_ROLE": "replica"}),
        ]
        for name, env in layouts:
            port = free_port()
            process = Process(f"edge-{name}", [sys.executable, "-m", "edge"], cwd=ROOT,
                              log_dir=tmp, env={**edge_env, **env, "EDGE_PORT": str(port)})
            topo.edges.append(EdgeProc(name, port, process, int(env.get("EDGE_WORKERS", "1"))))
        for edge in topo.edges:
            edge.process.start(edge.port)
            started.append(edge.process.stop)
        wait_until(lambda: all(edge.get(wk).status == 200 for edge in topo.edges
                               for wk in topo.write_keys), "every edge serves every source")
        for edge in topo.edges:  # every worker holds every source (each its own cache)
            wait_until(lambda edge=edge: edge.warm(topo.write_keys),  # type: ignore[misc]
                       f"every worker of edge {edge.name} holds every source")
        yield topo
    finally:
        for stop in reversed(started):
            stop()


def _sees(sentinel_port: int, replicas: int, others: int) -> bool:
    try:
        with redis.Redis(port=sentinel_port, socket_timeout=1) as client:
            state = client.sentinel_master(SERVICE)
    except redis.RedisError:
        return False
    return bool(state["num-slaves"] >= replicas and state["num-other-sentinels"] >= others)


def kill(server: RedisServer) -> None:
    """SIGKILL: no goodbye to replicas or clients."""
    if server.proc is not None:
        stop_process(server.proc, signal.SIGKILL)
        server.proc = None


class Watch:
    """Requests every live source from every edge, over and over, in a thread: plain and
    conditional (the last ETag each edge gave). Counts statuses per edge; anything but
    200/304 (a 404, a 503, a connection error) is kept with its moment."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.bad: list[tuple[float, str, str, str]] = []
        self.stale = 0
        self.stale_from: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        etags: dict[tuple[str, str], str] = {}
        turn = 0
        while not self._stop.is_set():
            turn += 1
            for edge in self.topo.edges:
                for wk in self.topo.write_keys:
                    etag = etags.get((edge.name, wk)) if turn % 2 else None
                    try:
                        reply = edge.get(wk, etag)
                    except OSError as exc:
                        self.bad.append((time.monotonic(), edge.name, wk, repr(exc)))
                        continue
                    self.statuses[edge.name, reply.status] += 1
                    if reply.status not in (200, 304):
                        self.bad.append((time.monotonic(), edge.name, wk,
                                         f"{reply.status} {reply.body[:100]!r}"))
                    if "etag" in reply.headers:
                        etags[edge.name, wk] = reply.headers["etag"]
                    if "x-settings-stale" in reply.headers:
                        self.stale += 1
                        self.stale_from[edge.name] += 1
            time.sleep(0.01)
