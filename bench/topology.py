"""The ``topology`` phase: the scaled-out deployment (docs/DEPLOYMENT.md, "Scaled out") under
writes and a primary failure, every part a real process on loopback.

A Redis primary, two replicas and three Sentinels (``down-after-milliseconds`` 1000); the
publisher's Config API (``settings-cdn-publisher serve``, writing to the primary Sentinel
names) with the example workspace; three edges in instant mode with their default refresh
interval, two reading replica 1 and one reading replica 2 (``REDIS_URL``). Redis and the
Sentinels and the publisher run on the load core, the edges on the server core.

* **write → every edge**: ``changes`` writes, one after the other, each a ``PATCH`` of the
  website's Amplitude ``apiKey`` (a new version of one source). From just before the write,
  one thread per edge asks its edge for the source with the old ETag in ``If-None-Match``
  (304 until it serves the new version); a write's time is the slowest edge's. Prints
  ``topology write→every-edge p50 = X ms`` and ``... p99 = Y ms``.
* **failover → first write served**: the primary SIGKILLed, writes go on every ``GAP``
  (accepted as ``pending`` while there is no primary; ``serve`` publishes them when Sentinel
  has promoted a replica), while one thread per edge records when its edge first serves each
  ETag. The time from the kill until every edge has served a write made after it:
  ``topology failover → first write served = Z s``.

    python -m bench.topology [--changes N]   (alone: nothing but these processes)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis

from bench import servers
from bench.procs import Proc, Processes, cores, free_port, require_tool

if TYPE_CHECKING:
    from bench.context import Setup

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "examples" / "workspace.json"
SERVICE = "bench-topology"
PUBLISHER = [sys.executable, "-c", "import sys; from publisher.cli import main; sys.exit(main())"]
WRITE_PATH = "/v1beta/workspaces/acme/sources/website/destinations/amplitude"
WEBSITE = "acmeWebsiteWriteKey0001"  # the source WRITE_PATH changes
SETTINGS_PATH = f"/v1/projects/{WEBSITE}/settings"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
GAP = 0.05  # seconds between two writes during the failover
DEADLINE = 10.0  # seconds: a write not served by every edge by then counts as lost
FAILOVER_DEADLINE = 60.0
START_TIMEOUT = 30.0


def _wait(check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"topology: not within {timeout:g} s: {what}")
        time.sleep(0.05)


def _redis_ok(port: int, check: Callable[[redis.Redis], bool]) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
            return check(client)
    except redis.RedisError:
        return False


def _linked(client: redis.Redis) -> bool:
    return bool(client.info("replication").get("master_link_status") == "up")


def _sentinel_sees_all(client: redis.Redis) -> bool:
    state: dict[str, Any] = client.sentinel_master(SERVICE)  # type: ignore[assignment]
    return bool(state["num-slaves"] >= 2 and state["num-other-sentinels"] >= 2)


class Topology:
    """The processes of the phase (all started through ``procs``, stopped by PID)."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        self.procs = s.procs
        self.dir = s.work / "topology"
        self.dir.mkdir(exist_ok=True)
        self.started: list[Proc] = []
        self.primary: Proc | None = None
        self.replica_ports: list[int] = []
        self.sentinel_ports: list[int] = []
        self.edge_ports: list[int] = []
        self.api_port = 0
        self.token = ""
        self.env: dict[str, str] = {}

    def _start(self, name: str, argv: list[str], port: int, core: int | None,
               env: dict[str, str] | None = None) -> Proc:
        proc = self.procs.start(name, argv, port=port, core=core, env=env)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.started):
            self.procs.stop(proc)
        self.started.clear()

    def start(self) -> None:
        s = self.s
        redis_bin = os.environ.get("REDIS_SERVER_BIN") or require_tool(
            "redis-server", "apt-get install redis-server (or set REDIS_SERVER_BIN)")

        def redis_argv(port: int, *more: str) -> list[str]:
            data = self.dir / f"redis-{port}"
            data.mkdir()
            return [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(data),
                    "--repl-diskless-sync-delay", "0", *more]

        primary_port = free_port()
        self.primary = self._start("topology-primary", redis_argv(primary_port), primary_port,
                                   s.load_core)
        for i in (1, 2):
            port = free_port()
            self._start(f"topology-replica{i}", redis_argv(
                port, "--replicaof", "127.0.0.1", str(primary_port)), port, s.load_core)
            self.replica_ports.append(port)
        _wait(lambda: all(_redis_ok(p, _linked) for p in self.replica_ports), "replicas synced")
        for i in (1, 2, 3):
            port = free_port()
            conf = self.dir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 2\n")
            self._start(f"topology-sentinel{i}", [redis_bin, str(conf), "--sentinel"], port,
                        s.load_core)
            self.sentinel_ports.append(port)
        _wait(lambda: all(_redis_ok(p, _sentinel_sees_all) for p in self.sentinel_ports),
              "every Sentinel knows both replicas and the other Sentinels")
        self.api_port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT),
                    "PUBLISHER_DB": str(self.dir / "publisher.db"),
                    "REDIS_URL": "redis://127.0.0.1:1/0",  # (Sentinel names the servers)
                    "PUBLISHER_REDIS_SENTINELS": self.sentinels,
                    "PUBLISHER_REDIS_SENTINEL_SERVICE": SERVICE,
                    "PUBLISHER_REDIS_TIMEOUT": "1", "PUBLISHER_RETRY_INTERVAL": "0.3",
                    "PUBLISHER_RATE_LIMIT": "1000000",
                    "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(self.api_port)}
        self._cli("apply", str(WORKSPACE))
        self.token = self._cli("token", "create", "acme", "--scope", "write").strip()
        self._start("topology-publisher", [*PUBLISHER, "serve"], self.api_port, s.load_core,
                    self.env)
        for i, replica in enumerate((0, 0, 1), 1):  # two edges on replica 1, one on replica 2
            edge = servers.start_edge(
                self.procs, redis_url=f"redis://127.0.0.1:{self.replica_ports[replica]}/0",
                core=s.server_core, name=f"topology-edge{i}",
                env={"EDGE_INSTANT": "true", "EDGE_WORKERS": "1", "PYTHONPATH": str(ROOT)})
            self.started.append(edge)
            self.edge_ports.append(edge.port)
        _wait(lambda: all(_status(port) == 200 for port in self.edge_ports),
              "every edge serves the website's settings")

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def _cli(self, *args: str) -> str:
        done = subprocess.run([*PUBLISHER, *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"settings-cdn-publisher {' '.join(args)} failed: "
                               f"{done.stderr[-2000:]}")
        return done.stdout

    def primary_port(self) -> int | None:
        """The primary as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as client:
                    found = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        return None


def _status(port: int) -> int:
    try:
        return _get(port, {}).status
    except OSError:
        return 0


class _Reply:
    def __init__(self, status: int, etag: str | None) -> None:
        self.status, self.etag = status, etag


def _get(port: int, headers: dict[str, str],
         conn: http.client.HTTPConnection | None = None) -> _Reply:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", SETTINGS_PATH, headers={"Accept-Encoding": "gzip", **headers})
        resp = c.getresponse()
        resp.read()
        return _Reply(resp.status, resp.getheader("etag"))
    finally:
        if own:
            c.close()


class Writer:
    """``PATCH``es of the website's Amplitude apiKey on one keep-alive connection."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn: http.client.HTTPConnection | None = None

    def write(self, value: str, timeout: float = 10.0) -> dict[str, Any]:
        """The write's ``bundle`` (version, etag, pending); raises on anything but 200."""
        body = orjson.dumps({"destination": {"config": [{"name": "apiKey", "value": value}]},
                             "update_mask": {"paths": ["destination.config"]}})
        for attempt in (1, 2):  # once more on a dropped keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self.conn.request("PATCH", WRITE_PATH, body=body, headers={
                    "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            if resp.status != 200:
                raise RuntimeError(f"Config API PATCH answered {resp.status}: {data[:300]!r}")
            bundle: dict[str, Any] = json.loads(data)["bundle"]
            return bundle
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _watch_change(port: int, old_etag: str, started: float, out: dict[int, tuple[float, str]]
                  ) -> None:
    """Poll one edge with ``If-None-Match: old_etag`` until it serves another version."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        while time.perf_counter() - started < DEADLINE:
            reply = _get(port, {"If-None-Match": old_etag}, conn)
            if reply.status == 200 and reply.etag != old_etag:
                out[port] = (time.perf_counter() - started, reply.etag or "")
                return
            time.sleep(0.001)
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()


def write_to_every_edge(topo: Topology, writer: Writer, changes: int) -> list[float]:
    """Seconds from each write's start to the slowest edge serving it."""
    old = _get(topo.edge_ports[0], {}).etag or ""
    _wait(lambda: all(_get(p, {}).etag == old for p in topo.edge_ports),
          "every edge serves the same version")
    times: list[float] = []
    for n in range(changes):
        seen: dict[int, tuple[float, str]] = {}
        started = time.perf_counter()
        watchers = [threading.Thread(target=_watch_change, args=(p, old, started, seen),
                                     daemon=True) for p in topo.edge_ports]
        for w in watchers:
            w.start()
        bundle = writer.write(f"bench-topology-{n}-{time.time_ns()}")
        for w in watchers:
            w.join(DEADLINE + 5)
        if bundle["pending"] or len(seen) < len(topo.edge_ports) or any(
                etag != bundle["etag"] for _, etag in seen.values()):
            topo.s.results.notes.append(
                f"topology: write {n} not served by every edge within {DEADLINE:g} s "
                f"(pending {bundle['pending']}, served by {len(seen)} edges)")
        else:
            times.append(max(t for t, _ in seen.values()))
        old = bundle["etag"]
        time.sleep(0.01)
    return times


class _FirstSeen(threading.Thread):
    """Asks one edge for the source over and over; the first moment it served each ETag."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.first: dict[str, float] = {}
        self.bad = 0  # answers but 200 (and connection errors)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set():
            try:
                reply = _get(self.port, {}, conn)
            except (OSError, http.client.HTTPException):
                self.bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                time.sleep(0.01)
                continue
            if reply.status != 200:
                self.bad += 1
            elif reply.etag and reply.etag not in self.first:
                self.first[reply.etag] = time.perf_counter()
            time.sleep(0.005)
        conn.close()


def failover(topo: Topology, writer: Writer) -> dict[str, Any]:
    """Kill the primary; write every ``GAP``; until every edge served a write made after."""
    assert topo.primary is not None
    old_primary = topo.primary_port()
    stop = threading.Event()
    watchers = [_FirstSeen(port, stop) for port in topo.edge_ports]
    for w in watchers:
        w.start()
    time.sleep(0.2)
    after: dict[str, float] = {}  # etag of each write made after the kill: when it was made
    pending = errors = 0
    promoted: float | None = None
    served: float | None = None
    killed = time.perf_counter()
    topo.procs.stop(topo.primary, signal.SIGKILL)
    topo.started.remove(topo.primary)
    topo.primary = None
    try:
        n = 0
        while time.perf_counter() - killed < FAILOVER_DEADLINE:
            began = time.perf_counter()
            try:
                bundle = writer.write(f"bench-failover-{n}-{time.time_ns()}")
                after[bundle["etag"]] = began
                pending += bool(bundle["pending"])
            except (OSError, RuntimeError, http.client.HTTPException):
                errors += 1
            n += 1
            if promoted is None and topo.primary_port() not in (None, old_primary):
                promoted = time.perf_counter() - killed
            firsts = [min((t for etag, t in w.first.items() if etag in after), default=None)
                      for w in watchers]
            if all(t is not None for t in firsts):
                served = max(t for t in firsts if t is not None) - killed
                break
            time.sleep(max(0.0, GAP - (time.perf_counter() - began)))
    finally:
        stop.set()
        for w in watchers:
            w.join(10)
    return {"served_s": served, "promoted_s": promoted, "writes": len(after),
            "pending": pending, "errors": errors,
            "bad_answers": sum(w.bad for w in watchers)}


def _percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(s: Setup) -> None:
    x, log = s.results.extra, s.cfg.log
    topo = Topology(s)
    writer: Writer | None = None
    try:
        topo.start()
        writer = Writer(topo.api_port, topo.token)
        times = write_to_every_edge(topo, writer, s.cfg.changes)
        if times:
            x["topology_p50_ms"] = _percentile(times, 50) * 1000
            x["topology_p99_ms"] = _percentile(times, 99) * 1000
            x["topology_slowest_ms"] = [round(v * 1000, 1) for v in sorted(times)[-5:]]
            x["topology_writes"] = len(times)
            log(f"topology write→every-edge p50 = {x['topology_p50_ms']:.1f} ms")
            log(f"topology write→every-edge p99 = {x['topology_p99_ms']:.1f} ms "
                f"(over {len(times)} writes, 3 edges on 2 replicas)")
        result = failover(topo, writer)
        x.update({f"topology_failover_{k}": v for k, v in result.items()})
        served = result["served_s"]
        if served is None:
            s.results.notes.append(f"topology: after the primary was killed, not every edge "
                                   f"served a new write within {FAILOVER_DEADLINE:g} s")
        log(f"topology failover → first write served = "
            f"{'n/a' if served is None else f'{served:.2f}'} s (Sentinel promoted a replica "
            f"after {result['promoted_s'] or float('nan'):.2f} s; {result['writes']} writes "
            f"during, {result['pending']} accepted as pending, {result['errors']} failed; "
            f"{result['bad_answers']} edge answers but 200)")
    finally:
        if writer is not None:
            writer.close()
        topo.stop()


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    from bench.context import BenchConfig, Setup

    p = argparse.ArgumentParser(prog="python -m bench.topology", description=__doc__)
    p.add_argument("--changes", type=int, default=200, help="writes measured (%(default)s)")
    args = p.parse_args(argv)
    server_core, load_core = cores()
    affinity = os.sched_getaffinity(0)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    work = Path(tempfile.mkdtemp(prefix="sc-bench-topology-"))
    procs = Processes(work)
    cfg = BenchConfig(changes=args.changes, log=log)
    s = Setup(cfg, work, work, procs, server_core, load_core, "")
    try:
        measure(s)
    finally:
        procs.stop_all()
        os.sched_setaffinity(0, affinity)
        shutil.rmtree(work, ignore_errors=True)
    for note in s.results.notes:
        log(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
