"""The outage phase of ``bench/run``: the bench's own Redis frozen under the hot mix.

A fresh edge (default Redis timeout and retry interval, ``EDGE_REFRESH_INTERVAL`` shortened to
``outage_refresh`` so that the bundles it holds fall due for their re-check while Redis is
frozen) first loads every hot key once. Then bench/openloop.py sends the hot mix at a fixed
rate (open loop: a held-back answer cannot slow the requests after it down) for
``outage_before`` seconds of normal service, ``outage_frozen`` seconds with the bench's
redis-server stopped (SIGSTOP: its port still accepts connections, nothing is answered, as a
hung Redis behaves) and ``outage_recovery`` seconds after SIGCONT. A small share of the
requests (``outage_cold_share``) asks, once each, for published keys the edge does not hold,
reported apart. Each request belongs to the window its scheduled instant falls in; its latency
runs from that instant to the answer's last byte.
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report, scenarios, seed, servers
from bench.context import Setup
from bench.dataset import Published, settings_path
from bench.openloop import DRAIN_SECONDS
from bench.procs import pinned, run_state
from bench.report import OUTAGE_WINDOWS as WINDOWS

GOOD = (200, 304)
ROOT = Path(__file__).resolve().parent.parent
EDGE_COUNTERS = {"edge_cache_stale_serves_total": "stale_serves",
                 "edge_redis_errors_total": "redis_errors",
                 "edge_cache_refreshes_total": "refreshes",
                 "edge_unavailable_total": "unavailable"}


@dataclass(frozen=True)
class Window:
    requests: int
    bad: int  # answers other than 200 and 304, and requests that got no answer
    statuses: dict[str, int]  # "0": connection failed, "-1": no answer by the end
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    late_p99_ms: float | None  # the client's own lateness in sending (part of the latency)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list: the smallest value with at least q % of
    the values at or below it."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def window(latencies: list[float], statuses: list[int], late: list[float]) -> Window:
    ordered = [v * 1000 for v in sorted(latencies)]
    late_ms = [v * 1000 for v in sorted(late)]
    counts: dict[str, int] = {}
    for code in statuses:
        counts[str(code)] = counts.get(str(code), 0) + 1
    return Window(
        requests=len(ordered),
        bad=sum(1 for code in statuses if code not in GOOD),
        statuses=counts,
        p50_ms=percentile(ordered, 50) if ordered else None,
        p99_ms=percentile(ordered, 99) if ordered else None,
        max_ms=ordered[-1] if ordered else None,
        late_p99_ms=percentile(late_ms, 99) if late_ms else None,
    )


def summarize(record: dict[str, list[Any]], frozen_at: float,
              resumed_at: float) -> dict[str, dict[str, Window]]:
    """Per kind of key ("seen", "cold") and window, from bench/openloop.py's record; the two
    instants are seconds after its T0."""
    parts: dict[tuple[str, str], tuple[list[float], list[int], list[float]]] = {
        (kind, name): ([], [], []) for kind in ("seen", "cold") for name in WINDOWS}
    for sched, latency, status, cold, late in zip(
            record["sched"], record["latency"], record["status"], record["cold"],
            record["late"], strict=True):
        name = "before" if sched < frozen_at else "frozen" if sched < resumed_at else "recovery"
        lat, codes, lateness = parts["cold" if cold else "seen", name]
        lat.append(latency)
        codes.append(status)
        lateness.append(late)
    out: dict[str, dict[str, Window]] = {"seen": {}, "cold": {}}
    for (kind, name), (lat, codes, lateness) in parts.items():
        out[kind][name] = window(lat, codes, lateness)
    return out


def _edge_counters(port: int) -> dict[str, float]:
    try:
        text = servers.get(port, "/metrics", {"Accept-Encoding": "identity"}).body.decode()
    except (OSError, http.client.HTTPException):
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in EDGE_COUNTERS:
            found[EDGE_COUNTERS[name]] = float(value)
    return found


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.monotonic()))


def measure(s: Setup, published: list[Published]) -> None:
    cfg, procs, x = s.cfg, s.procs, s.results.extra
    redis_proc = s.redis
    if redis_proc is None:
        raise RuntimeError("the outage phase needs the bench's own redis-server")
    hot = published[:cfg.sources]
    cold = published[cfg.sources:]
    total = cfg.outage_before + cfg.outage_frozen + cfg.outage_recovery
    started = time.monotonic()
    cfg.log(f"scenario outage (Redis frozen {cfg.outage_frozen:g} s of {total:g} s; "
            f"{cfg.outage_rate:,} requests/s open loop over {len(hot):,} held keys, "
            f"{cfg.outage_cold_share:.0%} to {len(cold):,} keys not held; "
            f"EDGE_REFRESH_INTERVAL={cfg.outage_refresh:g})")
    hot_file = seed.write_key_file(s.work / "outage-hot.tsv",
                                   [(settings_path(p.write_key), p.etag) for p in hot])
    cold_file = seed.write_key_file(s.work / "outage-cold.tsv",
                                    [(settings_path(p.write_key), "") for p in cold])
    edge = servers.start_edge(procs, redis_url=s.redis_url, core=s.server_core, env={
        "EDGE_CACHE_MAX_ENTRIES": str(len(published) + 1_000),
        "EDGE_REFRESH_INTERVAL": str(cfg.outage_refresh)}, name="edge-outage")
    out = s.work / "outage.json"
    client_log = s.work / "openloop.log"
    client: subprocess.Popen[bytes] | None = None
    try:
        scenarios.load(s, edge, hot_file, "outage-hot")
        servers.check_bundle("edge-outage", servers.get(edge.port, settings_path(
            hot[0].write_key)), hot[0], hot[0].etag)
        argv = [sys.executable, "-m", "bench.openloop", "--port", str(edge.port),
                "--keys", str(hot_file), "--rate", str(cfg.outage_rate),
                "--duration", str(total), "--out", str(out)]
        if cold and cfg.outage_cold_share > 0:
            argv += ["--cold", str(cold_file), "--cold-share", str(cfg.outage_cold_share)]
        with client_log.open("wb") as err:
            client = subprocess.Popen(pinned(argv, s.load_core), cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=err,
                                      stdin=subprocess.DEVNULL)
        watchdog = threading.Timer(total + DRAIN_SECONDS + 60, client.kill)
        watchdog.start()
        try:
            assert client.stdout is not None
            first = client.stdout.readline().decode().split()
            if len(first) != 2 or first[0] != "T0":
                client.wait()
                raise RuntimeError(f"bench.openloop did not start: {first!r}\n"
                                   f"{client_log.read_text(errors='replace')[-2000:]}")
            t0 = float(first[1])
            _sleep_until(t0 + cfg.outage_before)
            procs.pause(redis_proc)
            frozen_at = time.monotonic() - t0
            state, deadline = run_state(redis_proc.pid), time.monotonic() + 1.0
            while state != "T" and time.monotonic() < deadline:  # SIGSTOP takes effect
                time.sleep(0.001)  # asynchronously
                state = run_state(redis_proc.pid)
            if state != "T":
                raise RuntimeError(f"redis-server (pid {redis_proc.pid}) is in state {state!r} "
                                   "after SIGSTOP, not stopped")
            _sleep_until(t0 + cfg.outage_before + cfg.outage_frozen)
            procs.resume(redis_proc)
            resumed_at = time.monotonic() - t0
            client.stdout.read()
            code = client.wait()
        finally:
            watchdog.cancel()
        if code != 0:
            raise RuntimeError(f"bench.openloop exited with {code}\n"
                               f"{client_log.read_text(errors='replace')[-2000:]}")
        counters = _edge_counters(edge.port)
    finally:
        procs.resume(redis_proc)
        if client is not None:
            if client.poll() is None:
                client.kill()
                client.wait()
            if client.stdout is not None:
                client.stdout.close()
        procs.stop(edge)
    record = json.loads(out.read_text())
    windows = summarize(record, frozen_at, resumed_at)
    seen = windows["seen"]
    x.update(
        outage_p99_seen_ms=seen["frozen"].p99_ms,
        outage_p99_seen_recovery_ms=seen["recovery"].p99_ms,
        outage_bad_seen=sum(w.bad for w in seen.values()),
        outage_frozen_seconds=resumed_at - frozen_at,
        outage_settings={"EDGE_REFRESH_INTERVAL": cfg.outage_refresh,
                         "rate": cfg.outage_rate, "cold_share": cfg.outage_cold_share},
        outage_windows={kind: {name: asdict(w) for name, w in by.items()}
                        for kind, by in windows.items()},
        outage_edge=counters,
    )
    x["outage_phase_seconds"] = time.monotonic() - started
    for line in report.outage_lines(x):
        cfg.log(f"  {line}")
    cfg.log(f"  outage phase: {x['outage_phase_seconds']:.0f} s; edge counters: " + (", ".join(
        f"{k} {v:,.0f}" for k, v in counters.items()) or "not read"))
