"""``bench/scale``: the numbers docs/SIZING.md is built from, at a million sources.

One run, on processes it starts and stops by PID (its own ``redis-server``, the publisher's
``republish --all``, ``redis-benchmark``), loopback only, every step bounded in time:

1. **Store.** ``--sources`` web sources of the bench data set (bench/dataset.py) into the
   publisher's SQLite store (bench/seed.py), built by two processes.
2. **First publish.** ``settings-cdn-publisher republish --all`` on that store: every source
   is compiled, stored as version 1 and written to Redis — what a new deployment's first run
   costs. Redis's ``used_memory`` before and after gives the bytes per source with one
   version; ``MEMORY USAGE`` of a sample of sources splits it into pointer, history and
   version hash.
3. **Rebuild after a loss.** ``FLUSHALL``, then ``republish --all`` again: SQLite already holds
   every bundle, so this is the run that rebuilds a lost Redis (the 5-minute target).
4. **Kept versions.** ``--version-sample`` sources get versions 2 .. ``--keep-versions`` + 1
   through the publisher's own ``write_many`` (same script, same pruning): ``used_memory`` per
   added version, and proof that the history stops growing at
   ``PUBLISHER_REDIS_KEEP_VERSIONS``.
5. **``serve``'s own recovery.** ``FLUSHALL`` again, then ``settings-cdn-publisher serve``
   alone brings Redis back (its comparison at start, the outbox, then ``sc:loaded``): the time
   from its start until ``sc:loaded`` is set, what a Redis restarted empty costs when no
   operator runs ``republish --all`` (``--serve-timeout`` bounds it).
6. **Reads per Redis node.** ``redis-benchmark`` sends the edge's own calls — the batched
   cold-miss script (``EVALSHA``, 16 sources), the batched pointer re-check (``MGET`` of 16
   pointers and ``sc:loaded``) and a single ``GET`` — with Redis on one core and the
   benchmark on the other, and Redis's own CPU is read beside each rate: one benchmark
   process cannot keep Redis busy, so the rate divided by Redis's share of its core is
   reported as the ceiling of one Redis thread.

The results go to ``bench/results/scale-<date>-<time>.md`` and ``.json`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import seed
from bench.context import RESULTS_DIR
from bench.procs import Processes, cores, free_port, pinned, require_tool
from edge import keyspace
from edge.http import gunzip
from publisher.publish import Bundle, RedisPublisher

# The edge's batch of cold misses and of pointer re-checks (edge/store.py MAX_BATCH).
EDGE_BATCH = 16


@dataclass(frozen=True)
class ScaleConfig:
    sources: int = 1_000_000
    keep_versions: int = 2  # PUBLISHER_REDIS_KEEP_VERSIONS of the kept-versions step
    version_sample: int = 20_000  # sources given keep_versions + 1 versions
    memory_sample: int = 2_000  # sources whose keys MEMORY USAGE reads
    republish_timeout: float = 900.0  # each republish --all is stopped here
    serve_timeout: float = 900.0  # serve's recovery is stopped here (0: not measured)
    benchmark_requests: int = 200_000  # per redis-benchmark command
    benchmark_clients: int = 8
    benchmark_pipeline: int = 16  # calls in flight per connection, as the edge pipelines them
    fill_workers: int = 2
    results_dir: Path = RESULTS_DIR
    command: str = ""
    log: Callable[[str], None] = field(default=print)


def used_memory(client: redis.Redis) -> dict[str, int]:
    info = client.info("memory")
    return {k: int(info[k]) for k in ("used_memory", "used_memory_rss", "used_memory_dataset")}


def _republish(cfg: ScaleConfig, db: Path, redis_url: str, log: Path, core: int | None,
               what: str, out: dict[str, Any]) -> None:
    load = loadavg()
    seconds, done = seed.republish_all(db, redis_url, log, core=core,
                                       timeout=cfg.republish_timeout)
    out.update({f"{what}_seconds": seconds, f"{what}_sources": done,
                f"{what}_rate": done / seconds, f"{what}_loadavg": f"{load} -> {loadavg()}"})
    cfg.log(f"{what}: republish --all: {done:,} of {cfg.sources:,} sources in {seconds:.1f} s "
            f"({done / seconds:,.0f} sources/s)")


def loadavg() -> str:
    """The 1-minute load average: on a 2-core machine, above 2 means someone else's work
    shared the cores with the measurement."""
    return Path("/proc/loadavg").read_text().split()[0]


def _redis_count(client: redis.Redis) -> int:
    """Sources Redis serves: keys with a current pointer."""
    return sum(1 for _ in client.scan_iter(match="sc:{*}:current", count=10_000))


def memory_usage(client: redis.Redis, keys: list[str]) -> dict[str, float]:
    """Mean ``MEMORY USAGE`` (every field counted: SAMPLES 0) of each key of ``keys``'s
    sources, and the version hash's encoding."""
    parts: dict[str, list[int]] = {"pointer": [], "history": [], "version_hash": []}
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(keyspace.current_key(k), samples=0)
        pipe.memory_usage(keyspace.versions_key(k), samples=0)
        pipe.memory_usage(keyspace.version_key(k, 1), samples=0)
    answers = pipe.execute()
    for n, name in enumerate(parts):
        parts[name] = [int(a) for a in answers[n::3] if a is not None]
    out = {f"memory_usage_{name}_mean": statistics.fmean(v) for name, v in parts.items() if v}
    out["version_hash_encoding"] = client.object("encoding", keyspace.version_key(keys[0], 1))
    return out


def kept_versions(cfg: ScaleConfig, client: redis.Redis, keys: list[str]) -> dict[str, Any]:
    """Versions 2 .. keep_versions + 1 of ``keys`` through the publisher's ``write_many``:
    ``used_memory`` per version added, and the history's length at the end."""
    stored: list[tuple[str, Bundle]] = []
    for start in range(0, len(keys), 1_000):
        pipe = client.pipeline(transaction=False)
        chunk = keys[start:start + 1_000]
        for k in chunk:
            pipe.hmget(keyspace.version_key(k, 1), ["gzip", "etag", "published_at"])
        for k, (gz, etag, at) in zip(chunk, pipe.execute(), strict=True):
            stored.append((k, Bundle(version=1, etag=etag.decode(), published_at=int(at),
                                     revision=1, json=gunzip(gz), gzip=gz)))
    writer = RedisPublisher(client, keep_versions=cfg.keep_versions)
    before = used_memory(client)["used_memory"]
    out: dict[str, Any] = {"versions_sources": len(keys), "versions_keep": cfg.keep_versions}
    for version in range(2, cfg.keep_versions + 2):
        # The same bytes as a new version: Redis keeps every version whole, so the bytes a
        # version costs do not depend on how much it differs from the one before.
        writer.write_many((k, Bundle(version=version, etag=b.etag, published_at=b.published_at,
                                     revision=version, json=b.json, gzip=b.gzip))
                          for k, b in stored)
        if version == cfg.keep_versions:
            full = used_memory(client)["used_memory"]
            out["versions_bytes_per_added_version"] = (
                (full - before) / (len(keys) * (cfg.keep_versions - 1)))
    after = used_memory(client)["used_memory"]
    out["versions_bytes_after_one_more"] = (after - full) / len(keys)
    out["versions_history_lengths"] = sorted({int(client.zcard(keyspace.versions_key(k)))
                                              for k in keys[:100]})
    out["versions_bytes_per_source_at_keep"] = None  # filled in by run() from the totals
    return out


def _benchmark(cfg: ScaleConfig, port: int, core: int | None, client: redis.Redis,
               name: str, argv: list[str]) -> dict[str, float]:
    """One ``redis-benchmark`` command: its rate and the share of a core Redis used."""
    tool = require_tool("redis-benchmark", "apt-get install redis-tools")
    cpu0 = client.info("cpu")
    t0 = time.perf_counter()
    done = subprocess.run(
        pinned([tool, "-h", "127.0.0.1", "-p", str(port), "-c", str(cfg.benchmark_clients),
                "-P", str(cfg.benchmark_pipeline), "-n", str(cfg.benchmark_requests), "--csv",
                *argv], core),
        capture_output=True, text=True, timeout=300, check=True)
    wall = time.perf_counter() - t0
    cpu1 = client.info("cpu")
    busy = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_sys", "used_cpu_user"))
    rows = [line.split('","') for line in done.stdout.splitlines() if line.startswith('"')]
    rate = float(rows[-1][1].strip('"'))
    # One client process on one core cannot keep Redis busy with these replies: the rate is
    # a lower bound, and rate / Redis's share of its core the ceiling of one Redis thread.
    return {f"bench_{name}_calls_per_s": rate, f"bench_{name}_redis_cpu": busy / wall,
            f"bench_{name}_ceiling_calls_per_s": rate / max(busy / wall, 1e-9)}


def read_capacity(cfg: ScaleConfig, port: int, core: int | None, client: redis.Redis,
                  keys: list[str]) -> dict[str, float]:
    """The edge's three Redis calls, each alone, as fast as Redis answers them."""
    from edge.store import _CURRENT_MANY, _SCRIPT_ARGS

    sha = client.script_load(_CURRENT_MANY)
    batch = keys[:EDGE_BATCH]
    script = ["EVALSHA", sha, str(EDGE_BATCH + 1),
              *(keyspace.current_key(k) for k in batch), keyspace.LOADED_KEY,
              *(a.decode() for a in _SCRIPT_ARGS), *(keyspace.version_prefix(k) for k in batch)]
    mget = ["MGET", *(keyspace.current_key(k) for k in batch), keyspace.LOADED_KEY]
    out: dict[str, float] = {}
    for name, argv in (("evalsha16", script), ("mget16", mget),
                       ("get", ["GET", keyspace.current_key(batch[0])])):
        out.update(_benchmark(cfg, port, core, client, name, argv))
        cfg.log(f"reads: {name}: {out[f'bench_{name}_calls_per_s']:,.0f} calls/s, Redis at "
                f"{out[f'bench_{name}_redis_cpu']:.0%} of a core (ceiling "
                f"{out[f'bench_{name}_ceiling_calls_per_s']:,.0f} calls/s)")
    return out


def serve_recovery(cfg: ScaleConfig, procs: Processes, db: Path, redis_url: str,
                   client: redis.Redis, core: int | None, x: dict[str, Any]) -> None:
    """FLUSHALL, then ``serve`` alone until it sets ``sc:loaded`` (or ``serve_timeout``)."""
    client.flushall()
    port = free_port()
    load = loadavg()
    t0 = time.perf_counter()
    serve = procs.start("publisher-serve", [sys.executable, "-c",
                                            "import sys; from publisher.cli import main; "
                                            "sys.exit(main())", "serve"],
                        port=port, core=core, timeout=120, env={
                            "PUBLISHER_DB": str(db), "REDIS_URL": redis_url,
                            "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(port),
                            "PUBLISHER_RETRY_INTERVAL": "1"})
    deadline = t0 + cfg.serve_timeout
    while not client.exists(keyspace.LOADED_KEY) and time.perf_counter() < deadline:
        time.sleep(0.5)
    seconds = time.perf_counter() - t0
    loaded = bool(client.exists(keyspace.LOADED_KEY))
    served = _redis_count(client)
    procs.stop(serve)
    x.update(serve_recovery_seconds=seconds, serve_recovery_loaded=loaded,
             serve_recovery_sources=served, serve_recovery_loadavg=f"{load} -> {loadavg()}")
    cfg.log(f"serve: {'set' if loaded else 'did NOT set'} {keyspace.LOADED_KEY} after "
            f"{seconds:.1f} s; Redis serves {served:,} of {cfg.sources:,} sources")
    if not loaded:  # the steps after this one want every source in Redis
        _republish(cfg, db, redis_url, db.with_name("republish-after-serve.log"), core,
                   "after_serve", x)


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def run(cfg: ScaleConfig, x: dict[str, Any]) -> None:
    """The steps of the module docstring; ``x`` gets each result as it is measured (what a
    failed run measured is kept)."""
    server_core, load_core = cores()
    affinity = os.sched_getaffinity(0)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    work = Path(tempfile.mkdtemp(prefix="sc-scale-"))
    procs = Processes(work)
    x.update(sources=cfg.sources, server_core=server_core, load_core=load_core,
             loadavg_start=loadavg())
    started = time.monotonic()
    try:
        port = free_port()
        redis_url = f"redis://127.0.0.1:{port}/0"
        redis_bin = os.environ.get("REDIS_SERVER_BIN") or require_tool(
            "redis-server", "apt-get install redis-server (or set REDIS_SERVER_BIN)")
        # Redis on the load core, as in bench/run; the publisher on the server core.
        procs.start("redis", [redis_bin, "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(work)],
                            port=port, core=load_core)
        # FLUSHALL of gigabytes and the big pipelines take seconds: no short socket timeout
        client = redis.Redis.from_url(redis_url, socket_timeout=600)
        db = work / "publisher.db"
        t0 = time.perf_counter()
        seed.populate_store(db, cfg.sources, workers=cfg.fill_workers)
        x["store_fill_seconds"] = time.perf_counter() - t0
        x["store_bytes_configuration"] = db_bytes(db)
        cfg.log(f"store: {cfg.sources:,} sources in SQLite in {x['store_fill_seconds']:.0f} s "
                f"({x['store_bytes_configuration'] / 2**20:,.0f} MiB)")

        empty = used_memory(client)
        _republish(cfg, db, redis_url, work / "republish-first.log", server_core, "first", x)
        x["store_bytes_with_bundles"] = db_bytes(db)
        full = used_memory(client)
        served = _redis_count(client)
        x.update(redis_empty=empty, redis_one_version=full, redis_sources=served,
                 redis_bytes_per_source_one_version=(
                     (full["used_memory"] - empty["used_memory"]) / max(1, served)))
        cfg.log(f"redis: {served:,} sources, used_memory {full['used_memory'] / 2**20:,.0f} MiB "
                f"(rss {full['used_memory_rss'] / 2**20:,.0f} MiB): "
                f"{x['redis_bytes_per_source_one_version']:,.0f} B a source with one version")
        keys = seed.bench_keys(cfg.sources)
        sample = random.Random(7).sample(keys[:served] if served < cfg.sources else keys,
                                         min(cfg.memory_sample, served))
        x.update(memory_usage(client, sample))
        x["bundle_json_mean"], x["bundle_gzip_mean"] = _bundle_means(client, sample)

        t0 = time.perf_counter()
        client.flushall()  # synchronous: Redis answers nothing else meanwhile
        x["flushall_seconds"] = time.perf_counter() - t0
        cfg.log(f"redis: FLUSHALL of {served:,} sources took {x['flushall_seconds']:.1f} s")
        x["redis_after_flush"] = used_memory(client)
        _republish(cfg, db, redis_url, work / "republish-rebuild.log", server_core, "rebuild",
                   x)
        x["rebuild_redis_sources"] = _redis_count(client)

        if cfg.serve_timeout > 0:
            serve_recovery(cfg, procs, db, redis_url, client, load_core, x)
        x.update(read_capacity(cfg, port, server_core, client, sample))
        x.update(kept_versions(cfg, client, keys[:min(cfg.version_sample, served)]))
        per_version = x["versions_bytes_per_added_version"]
        x["versions_bytes_per_source_at_keep"] = (
            x["redis_bytes_per_source_one_version"] + (cfg.keep_versions - 1) * per_version)
        cfg.log(f"versions: {per_version:,.0f} B per kept version; history lengths "
                f"{x['versions_history_lengths']} after {cfg.keep_versions + 1} versions; "
                f"{x['versions_bytes_after_one_more']:,.0f} B a source for the one beyond")
        client.close()
    finally:
        procs.stop_all()
        os.sched_setaffinity(0, affinity)
        x["seconds_total"] = time.monotonic() - started
        x["loadavg_end"] = loadavg()
        if not os.environ.get("BENCH_KEEP_WORKDIR"):
            shutil.rmtree(work, ignore_errors=True)


def _bundle_means(client: redis.Redis, keys: list[str]) -> tuple[float, float]:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hget(keyspace.version_key(k, 1), "gzip")
    packed = pipe.execute()
    return (statistics.fmean(len(gunzip(gz)) for gz in packed),
            statistics.fmean(len(gz) for gz in packed))


def render(cfg: ScaleConfig, x: dict[str, Any], info: dict[str, str]) -> str:
    def mib(n: float) -> str:
        return f"{n / 2**20:,.0f} MiB"

    lines = [f"# settings-cdn scale run — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
             f"Command: `{cfg.command}`", "", *(f"- {k}: {v}" for k, v in info.items()),
             f"- total {x.get('seconds_total', 0):.0f} s", "", "## Results", ""]
    for k, v in x.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} {mib(vv)}" for kk, vv in v.items())
        lines.append(f"- {k}: {v:,.1f}" if isinstance(v, float) else
                     f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}")
    lines.append("")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    d = ScaleConfig()
    p = argparse.ArgumentParser(prog="bench/scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, default=d.sources, help="(%(default)s)")
    p.add_argument("--keep-versions", type=int, default=d.keep_versions, help="(%(default)s)")
    p.add_argument("--version-sample", type=int, default=d.version_sample,
                   help="sources given more versions (%(default)s)")
    p.add_argument("--republish-timeout", type=float, default=d.republish_timeout,
                   help="seconds each republish --all may take (%(default)s)")
    p.add_argument("--serve-timeout", type=float, default=d.serve_timeout,
                   help="seconds serve's recovery may take; 0: not measured (%(default)s)")
    p.add_argument("--benchmark-requests", type=int, default=d.benchmark_requests,
                   help="calls per redis-benchmark command (%(default)s)")
    p.add_argument("--results-dir", type=Path, default=d.results_dir)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("sources", "keep_versions", "version_sample", "benchmark_requests"):
        if getattr(args, name) < (2 if name == "keep_versions" else 1):
            parser().error(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    if args.serve_timeout < 0:
        parser().error(f"--serve-timeout must be >= 0, got {args.serve_timeout}")
    if args.republish_timeout <= 0:
        parser().error(f"--republish-timeout must be > 0, got {args.republish_timeout}")
    from bench.__main__ import machine
    from bench.runner import main_log

    cfg = ScaleConfig(sources=args.sources, keep_versions=args.keep_versions,
                      version_sample=min(args.version_sample, args.sources),
                      memory_sample=min(ScaleConfig.memory_sample, args.sources),
                      republish_timeout=args.republish_timeout,
                      serve_timeout=args.serve_timeout,
                      benchmark_requests=args.benchmark_requests, results_dir=args.results_dir,
                      command=shlex.join(["bench/scale", *(argv if argv is not None
                                                           else sys.argv[1:])]),
                      log=main_log())
    info = machine()
    x: dict[str, Any] = {}
    try:
        run(cfg, x)
    finally:  # a failed run still leaves what it measured
        text = render(cfg, x, info)
        print()
        print(text)
        cfg.results_dir.mkdir(parents=True, exist_ok=True)
        out = cfg.results_dir / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.md"
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"machine": info, "results": x},
                                                       indent=1, default=str))
        print(f"results written to {out} (and {out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
