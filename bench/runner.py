"""``bench/run``: every phase of the benchmark, bounded in time, on processes it owns.

Phases: seed (SQLite -> ``republish --all`` -> Redis, timed), files for nginx, the servers
(edge, edge-asgi, nginx, ASGI limit, protocol limit) on the server core with ``wrk`` on the
other, interleaved rounds per scenario, nginx ``proxy_cache`` hits, the cold path, the edge's
memory with every bundle cached, Redis frozen under load, and the Config API write -> edge
latency (the HTTP and memory phases are bench/scenarios.py, the frozen Redis
bench/outage.py, the latency bench/propagation.py; what they share, bench/context.py). The
orchestrator itself is pinned to the load core so it never takes CPU from the server it
measures.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import redis

from bench import mirror, outage, propagation, scenarios, seed, topology, webapp
from bench.context import PHASES, RESULTS_DIR, BenchConfig, Setup
from bench.dataset import Published
from bench.procs import Processes, cores, free_port, require_tool
from bench.report import Results

__all__ = ["PHASES", "RESULTS_DIR", "BenchConfig", "Setup", "bench_nginx_dir", "main_log", "run"]


def _seed(s: Setup) -> list[Published]:
    """The sources into SQLite, ``republish --all`` into Redis (timed), read back."""
    cfg, x = s.cfg, s.results.extra
    client = redis.Redis.from_url(s.redis_url)
    keys = seed.bench_keys(cfg.total_sources)
    t0 = time.perf_counter()
    db = s.work / "publisher.db"
    seed.populate_store(db, cfg.total_sources)
    x["store_fill_seconds"] = time.perf_counter() - t0
    cfg.log(f"seed: {cfg.total_sources:,} sources in SQLite in {x['store_fill_seconds']:.1f} s")
    seconds, done = seed.republish_all(db, s.redis_url, s.work / "republish.log",
                                       core=s.server_core, timeout=cfg.republish_timeout)
    x.update(republish_sources=done, republish_seconds=seconds, republish_rate=done / seconds)
    cfg.log(f"seed: republish --all: {done:,} of {cfg.total_sources:,} sources in {seconds:.1f} "
            f"s ({done / seconds:,.0f} sources/s)")
    if done < cfg.total_sources:
        s.results.notes.append(
            f"republish --all was stopped after {seconds:.0f} s with {done:,} of "
            f"{cfg.total_sources:,} sources published (projected "
            f"{cfg.total_sources * seconds / max(1, done):.0f} s for all); the rest were "
            "compiled by the same code and written directly")
        # From Redis, not SQLite: the stopped run may have recorded a bundle it never wrote.
        rest = seed.unpublished(client, keys)
        t0 = time.perf_counter()
        seed.publish_parallel(s.redis_url, rest, published_at=int(time.time()))
        cfg.log(f"seed: {len(rest):,} remaining sources published directly in "
                f"{time.perf_counter() - t0:.1f} s")
    published = seed.read_back(client, keys)
    client.close()
    sizes = sorted(len(p.json) for p in published)
    x.update(json_bytes_median=statistics.median(sizes), json_bytes_min=sizes[0],
             json_bytes_max=sizes[-1],
             gzip_bytes_median=statistics.median(len(p.gzip) for p in published))
    return published


MEMORY_FS = Path("/dev/shm")
# 90,000 bundles as settings + settings.gz, each file at least one 4 KiB tmpfs page (JSON of
# 1.5-8.6 KB: up to 3): about 1 GB, plus the two caches' 20,000 files
NGINX_FILES_ROOM = 2 * 2**30


def bench_nginx_dir(memory_fs: Path = MEMORY_FS) -> Path:
    """A new directory for nginx's files and caches: on tmpfs (``memory_fs``) when it has
    room, else beside the work directory.

    On disk, the ~200,000 small files the bench writes — and deletes at the end, of this run
    and the one before — were written back by kernel threads during the measurements (seen
    here: up to 60 % of the server core, and 40 % of the load core, taken by other
    processes). nginx reads them from memory either way (the page cache).
    """
    parent: Path | None = None
    try:
        room = os.statvfs(memory_fs)
        if room.f_bavail * room.f_frsize >= NGINX_FILES_ROOM and os.access(memory_fs, os.W_OK):
            parent = memory_fs
    except OSError:
        pass
    directory = Path(tempfile.mkdtemp(prefix="sc-bench-nginx-", dir=parent))
    directory.chmod(0o755)  # nginx workers run as an unprivileged user and must read it
    return directory


def run(cfg: BenchConfig) -> Results:
    server_core, load_core = cores()
    affinity = os.sched_getaffinity(0)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    work = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user and must read the files
    procs = Processes(work)
    rport = free_port()
    nginx_dir = bench_nginx_dir()
    s = Setup(cfg, work, nginx_dir, procs, server_core, load_core,
              f"redis://127.0.0.1:{rport}/0")
    x = s.results.extra
    x.update(server_core=server_core, load_core=load_core, workdir=str(work),
             nginx_dir=str(nginx_dir),
             loadavg_start=Path("/proc/loadavg").read_text().split()[:3])
    started = time.monotonic()
    try:
        # Redis shares the load core: the edge's cold path waits on it but does not pay its CPU.
        redis_bin = os.environ.get("REDIS_SERVER_BIN") or require_tool(
            "redis-server", "apt-get install redis-server (or set REDIS_SERVER_BIN)")
        s.redis = procs.start("redis", [redis_bin,
                              "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(work)],
                    port=rport, core=load_core)
        published = _seed(s)
        if {"http", "proxy", "cold"} & set(cfg.phases):
            scenarios.http(s, published)
        if "outage" in cfg.phases:
            outage.measure(s, published)
        if "memory" in cfg.phases:
            scenarios.memory(s, published)
        if "api" in cfg.phases:
            propagation.measure(s)
            webapp.measure(s)  # the web app's render times (in-process, no load)
        if "mirror" in cfg.phases:  # stored /next-integrations/ files: edge vs nginx
            mirror.measure(s)
        if "topology" in cfg.phases:  # primary, replicas, Sentinels, edges: bench/topology.py
            topology.measure(s)
    finally:
        procs.stop_all()
        os.sched_setaffinity(0, affinity)
        if not os.environ.get("BENCH_KEEP_WORKDIR"):
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(nginx_dir, ignore_errors=True)
        x["seconds_total"] = time.monotonic() - started
        x["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return s.results


def main_log(stream: TextIO | None = None) -> Callable[[str], None]:
    """A progress log to ``stream``, or to whatever ``sys.stdout`` is when a line is logged."""
    def log(line: str) -> None:
        out = stream if stream is not None else sys.stdout
        out.write(line + "\n")
        out.flush()

    return log
