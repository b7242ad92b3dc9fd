"""Config write -> new version served by the edge: p50/p99 with and without instant mode.

For each of ``changes`` sources (already cached by the edge) one write changes a device-mode
setting, so the bundle bytes change; a watcher polls the edge with the old ETag in
``If-None-Match`` (304 until the edge serves the new version) and records the time from the
start of the write to the first 200 with the new ETag. Writes start ``GAP`` apart, so the
polling run overlaps its changes instead of waiting out the refresh interval 200 times.

The write goes through the Config API over HTTP when the publisher has one (``publisher.api``),
else through ``Service.mutate`` in this process — the same write path the API calls; the
results say which.
"""

from __future__ import annotations

import dataclasses
import gc
import http.client
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench import servers
from bench.context import Setup
from bench.dataset import settings_path, write_key
from bench.procs import free_port

GAP = 0.05  # seconds between two writes
DEADLINE = 30.0  # a change not visible by then counts as lost


def _service(db: str, redis_url: str) -> Any:
    from publisher.service import build_service
    from publisher.settings import PublisherSettings

    settings = PublisherSettings.from_env({"PUBLISHER_DB": db, "REDIS_URL": redis_url})
    return build_service(settings)


def _target(svc: Any, i: int) -> tuple[Any, str, str]:
    """(source, instance id, setting): a public string setting of a device-mode instance."""
    source = svc.store.get_source_by_write_key(write_key(i))
    for inst in svc.store.list_instances(source.id):
        specs = svc.catalog.get(inst.catalog_slug).settings
        names = [k for k, v in inst.settings.items() if isinstance(v, str) and not specs[k].secret]
        if inst.connection_mode == "DEVICE" and names:
            return source, inst.id, names[0]
    raise RuntimeError(f"source {source.slug} has no public device-mode string setting")


def _service_writer(svc: Any) -> Callable[[int, int], None]:
    """Change source ``i`` in-process through ``Service.mutate``."""

    def write(i: int, n: int) -> None:
        source, inst_id, name = _target(svc, i)

        def change(instances: list[Any]) -> list[Any]:
            return [dataclasses.replace(inst, settings={**inst.settings,
                                                        name: f"bench-change-{n}"})
                    if inst.id == inst_id else inst for inst in instances]

        result = svc.mutate(source, change)
        if not result.changed or result.pending:
            raise RuntimeError(f"write to {source.slug} did not publish: {result}")

    return write


def _api_writer(svc: Any, conn: http.client.HTTPConnection, token: str,
                n: int) -> Callable[[int, int], None]:
    """Change source ``i`` with ``PATCH .../destinations/{id}`` on the Config API."""
    targets = {i: _target(svc, i) for i in range(n)}  # looked up before the clock starts

    def write(i: int, n: int) -> None:
        source, inst_id, name = targets[i]
        body = orjson.dumps({"destination": {"config": [{"name": name,
                                                         "value": f"bench-change-{n}"}]},
                             "update_mask": {"paths": ["destination.config"]}})
        conn.request("PATCH", f"/v1beta/workspaces/bench/sources/{source.slug}/destinations/"
                     f"{inst_id}", body=body, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"Config API PATCH of {source.slug}/{inst_id} answered "
                               f"{resp.status}: {data[:300]!r}")

    return write


def _watch(port: int, path: str, old_etag: str, started: float, pause: float,
           out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Accept-Encoding": "gzip", "If-None-Match": old_etag}
    try:
        while time.perf_counter() - started < DEADLINE:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200 and resp.getheader("etag") != old_etag:
                out.append(time.perf_counter() - started)
                return
            time.sleep(pause)
    finally:
        conn.close()


def _run(s: Setup, writer: Callable[[int, int], None], *, instant: bool) -> list[float]:
    cfg = s.cfg
    n = min(cfg.changes, cfg.sources)
    env = {"EDGE_INSTANT": "true" if instant else "false",
           "EDGE_REFRESH_INTERVAL": str(cfg.poll_refresh)}
    edge = servers.start_edge(s.procs, redis_url=s.redis_url, core=s.server_core, env=env,
                              name="edge-instant" if instant else "edge-polling")
    try:
        etags = {}
        for i in range(n):  # cache every source first: the change must replace a cached copy
            answer = servers.get(edge.port, settings_path(write_key(i)))
            etags[i] = answer.headers["etag"]
        time.sleep(0.2)  # instant mode: let the subscription settle
        seen: list[float] = []
        watchers = []
        for i in range(n):
            started = time.perf_counter()
            writer(i, int(time.time() * 1000) + i)
            w = threading.Thread(target=_watch, daemon=True, args=(
                edge.port, settings_path(write_key(i)), etags[i], started,
                0.001 if instant else 0.02, seen))
            w.start()
            watchers.append(w)
            time.sleep(max(0.0, GAP - (time.perf_counter() - started)))
        for w in watchers:
            w.join(DEADLINE + 5)
        if len(seen) < n:
            s.results.notes.append(f"{'instant' if instant else 'polling'}: {n - len(seen)} of "
                                   f"{n} changes not served within {DEADLINE:g} s")
        return seen
    finally:
        s.procs.stop(edge)


def _percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(s: Setup) -> None:
    x = s.results.extra
    db = str(s.work / "publisher.db")
    svc = _service(db, s.redis_url)
    n = min(s.cfg.changes, s.cfg.sources)
    conn: http.client.HTTPConnection | None = None
    try:
        from publisher.api.auth import create_token

        token = create_token(svc, "bench", "write", "bench")
        port = free_port()
        s.procs.start("publisher-api", [sys.executable, "-c",
                                        "import sys; from publisher.cli import main; "
                                        "sys.exit(main())", "serve"],
                      port=port, core=s.load_core, env={
                          "PUBLISHER_DB": db, "REDIS_URL": s.redis_url,
                          "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(port),
                          "PUBLISHER_RATE_LIMIT": "1000000"})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        writer = _api_writer(svc, conn, token, n)
        x["api_write_path"] = "Config API PATCH over HTTP (publisher serve, on the load core)"
    except ImportError:
        writer = _service_writer(svc)
        x["api_write_path"] = "Service.mutate in-process (no Config API in this build)"
    # The watchers run in this process, which holds every bundle and every earlier phase's
    # results: frozen, a full collection of those cannot be timed as the publisher's. The
    # phase's collections are counted and the longest recorded, to tell a stall of this
    # harness from one of the system. (A full run once read p99 230 ms, five writes of 200
    # at 150-280 ms, against 8-13 ms in other runs; the next one, recording without the
    # freeze, saw 11 collections of at most 0.3 ms: it is unlikely to have been this.)
    gc.collect()
    gc.freeze()
    pauses: list[float] = []
    started = [0.0]

    def timed(phase: str, _: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(timed)
    try:
        for mode, instant in (("instant", True), ("polling", False)):
            seen = _run(s, writer, instant=instant)
            if seen:
                x[f"{mode}_p50_ms"] = _percentile(seen, 50) * 1000
                x[f"{mode}_p99_ms"] = _percentile(seen, 99) * 1000
                # the tail, to tell one slow write from a slow mode
                x[f"{mode}_slowest_ms"] = [round(v * 1000, 1) for v in sorted(seen)[-5:]]
                how = mode if instant else f"{mode}, refresh {s.cfg.poll_refresh:g} s"
                p50, p99 = x[f"{mode}_p50_ms"], x[f"{mode}_p99_ms"]
                s.cfg.log(f"write -> edge ({how}): p50 {p50:.1f} ms, p99 {p99:.1f} ms over "
                          f"{len(seen)} changes")
    finally:
        gc.callbacks.remove(timed)
        gc.unfreeze()
        x["harness_gc_collections"] = len(pauses)
        x["harness_gc_longest_ms"] = round(max(pauses, default=0.0) * 1000, 1)
        if conn is not None:
            conn.close()
        if svc.publisher is not None:
            svc.publisher.client.close()
        svc.store.close()
