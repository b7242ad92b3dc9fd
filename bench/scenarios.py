"""The HTTP and memory phases of ``bench/run``: the servers side by side under ``wrk``.

The edge, the edge through its ASGI app, nginx static, the ASGI limit and the protocol limit
run on the server core; ``wrk`` runs on the load core, round after round, the servers
interleaved in each round (hot 200, 304, latency at 8 connections, unknown keys), then
nginx ``proxy_cache`` in front of the edge, the cold path, and the edge's memory with every
bundle held. bench/runner.py sets up, seeds and calls these in order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import nginx as ngx
from bench import seed, servers
from bench.context import Setup
from bench.dataset import Published, settings_path, unknown_key
from bench.limit import write_bundle_file
from bench.procs import Proc, free_port, require_tool, rss_bytes, wait_for_port
from bench.report import Run
from bench.wrk import run as run_wrk

COLD_SECONDS = 3.0  # longest cold round


def _wrk(s: Setup, scenario: str, target: str, proc: Proc, script: str, args: list[str], *,
         connections: int | None = None, rnd: int = 0, record: bool = True,
         duration: float | None = None, marker: Path | None = None) -> None:
    result = run_wrk(f"http://127.0.0.1:{proc.port}", script, args,
                     connections=connections or s.cfg.connections,
                     duration=duration or s.cfg.duration, core=s.load_core, server=proc,
                     server_core=s.server_core, marker=marker)
    if record:
        s.results.runs.append(Run(scenario, target, rnd, result))
    tag = f"{scenario} r{rnd + 1}" if record else f"{scenario} (warm-up)"
    s.cfg.log(f"  {tag:<22} {target:<12} {result.rps:>10,.0f} req/s  p50 {result.p50_ms:6.2f} "
              f"ms  p99 {result.p99_ms:6.2f} ms  {result.bytes_per_request:6,.0f} B/resp  "
              f"server {result.server_cpu:4.0%}  wrk {result.wrk_cpu:4.0%}")


def load(s: Setup, proc: Proc, keyfile: Path, name: str, *, identity: bool = False) -> None:
    """Request every key of ``keyfile`` once (wrk stops after one pass), accepting gzip or,
    with ``identity``, not."""
    marker = s.work / f"{name}.done"
    marker.unlink(missing_ok=True)
    _wrk(s, f"load {name}", "", proc, "walk.lua",
         [str(keyfile), str(marker), *(["identity"] if identity else [])], record=False,
         duration=120, marker=marker)


def _settle(s: Setup, what: str) -> None:
    """Write back what the bench just wrote before measuring anything (the store, and nginx's
    files when no tmpfs had room: 1.4 GB dirty together at 100k sources, seen here): left to
    the kernel's flusher, 30 s later, the writeback ran on both cores during the scenarios."""
    t0 = time.perf_counter()
    os.sync()
    s.cfg.log(f"sync: {what} written back in {time.perf_counter() - t0:.1f} s")


def http(s: Setup, published: list[Published]) -> None:
    """Files for nginx, the servers, then the HTTP scenarios of ``s.cfg.phases``."""
    cfg, procs, w = s.cfg, s.procs, s.work
    hot = published[:cfg.sources]
    cold = published[cfg.sources:cfg.sources + cfg.cold_keys] or hot
    unknown = [unknown_key(i) for i in range(cfg.unknown_keys)]
    sample = sorted(hot, key=lambda p: len(p.json))[len(hot) // 2]
    s.results.extra.update(limit_bundle_json=len(sample.json), limit_bundle_gzip=len(sample.gzip))

    t0 = time.perf_counter()
    served = published[:cfg.sources + cfg.cold_keys]
    n = s.nginx_dir
    nginx_etags = ngx.write_files(n / "www", served)
    ngx.write_version_map(n / "versions.map", served)
    cfg.log(f"files: {len(served):,} bundles for nginx in {time.perf_counter() - t0:.1f} s")
    _settle(s, "the store and the files")

    edge_env = {"EDGE_CACHE_MAX_ENTRIES": str(len(published) + 1_000)}
    edge = servers.start_edge(procs, redis_url=s.redis_url, core=s.server_core, env=edge_env)
    seen = servers.probe_edge(edge, sample, unknown[0])
    # The same edge with every request through its ASGI app (EDGE_FAST_PATH=false): what the
    # edge's own code costs over the bare server, without the inline answers.
    edge_asgi = servers.start_edge(procs, redis_url=s.redis_url, core=s.server_core,
                                   env={**edge_env, "EDGE_FAST_PATH": "false"}, name="edge-asgi")
    servers.probe_edge(edge_asgi, sample, unknown[0])
    write_bundle_file(w / "limit.json", body=sample.gzip, headers=seen.ok, etag=sample.etag)
    limit = servers.start_limit(procs, w / "limit.json", core=s.server_core)
    servers.probe_reference("asgi-limit", limit, sample, sample.etag, None)
    plimit = servers.start_limit(procs, w / "limit.json", core=s.server_core, protocol=True)
    servers.probe_reference("protocol-limit", plimit, sample, sample.etag, None)

    standard = {"content-type", "content-encoding", "etag", "last-modified", "vary",
                "cache-control", "access-control-allow-origin", seen.version_header}
    layout = ngx.NginxLayout(workdir=n, root=n / "www", static_port=free_port(),
                             proxy_port=free_port(), proxy_ttl_port=free_port(),
                             edge_port=edge.port,
                             cache_control=seen.cache_control,
                             not_found_cache_control=seen.not_found_cache_control,
                             version_header=seen.version_header)
    conf = ngx.write_config(layout, {k: v for k, v in seen.ok if k not in standard})
    nginx = procs.start("nginx", [require_tool("nginx", "apt-get install nginx-light"),
                                  "-c", str(conf), "-p", str(n), "-e", str(w / "nginx.log")],
                        port=layout.static_port, core=s.server_core)
    wait_for_port(layout.proxy_port, proc=nginx.popen, name="nginx proxy")
    servers.probe_reference("nginx", nginx, sample, nginx_etags[sample.write_key], unknown[0])

    def keys(name: str, rows: list[tuple[str, str]]) -> Path:
        return seed.write_key_file(w / f"{name}.tsv", rows)

    files = {
        "edge": keys("hot-edge", [(settings_path(p.write_key), p.etag) for p in hot]),
        "nginx": keys("hot-nginx", [(settings_path(p.write_key), nginx_etags[p.write_key])
                                    for p in hot]),
        "asgi-limit": keys("hot-limit", [(settings_path(p.write_key), sample.etag)
                                         for p in hot]),
    }
    cold_file = keys("cold", [(settings_path(p.write_key), "") for p in cold])
    unknown_file = keys("unknown", [(settings_path(k), "") for k in unknown])
    files["edge-asgi"] = files["edge"]
    files["protocol-limit"] = files["asgi-limit"]
    targets = {"edge": edge, "edge-asgi": edge_asgi, "nginx": nginx, "asgi-limit": limit,
               "protocol-limit": plimit}
    three = ["edge", "nginx", "asgi-limit"]

    if "http" in cfg.phases:
        load(s, edge, files["edge"], "edge-hot")
        load(s, edge_asgi, files["edge"], "edge-asgi-hot")
        plan = [("hot-200", "hot.lua", None, list(targets)),
                ("304", "revalidate.lua", None, list(targets)),
                ("latency-8c", "hot.lua", cfg.latency_connections, three),
                ("unknown", "unknown.lua", None, ["edge", "nginx"])]
        for scenario, script, conns, names in plan:
            cfg.log(f"scenario {scenario}")
            for rnd in range(-1 if cfg.warmup else 0, cfg.rounds):  # -1: unrecorded warm-up
                for name in names:
                    args = [str(unknown_file)] if scenario == "unknown" else [str(files[name])]
                    _wrk(s, scenario, name, targets[name], script, args, connections=conns,
                         rnd=rnd, record=rnd >= 0, duration=cfg.warmup if rnd < 0 else None)
    if "proxy" in cfg.phases:
        cfg.log("scenario proxy-hit (nginx proxy_cache in front of the edge)")
        # nginx-proxy obeys the edge's Cache-Control (the target); nginx-proxy-ttl keeps the
        # same lifetime from its own configuration (bench/nginx.py says what that gives up).
        proxies = [Proc("nginx-proxy", nginx.popen, layout.proxy_port, nginx.log),
                   Proc("nginx-proxy-ttl", nginx.popen, layout.proxy_ttl_port, nginx.log)]
        for proxy in proxies:
            load(s, proxy, files["edge"], proxy.name)
            hit = servers.get(proxy.port, settings_path(sample.write_key))
            servers.expect(hit.headers.get("x-cache-status") == "HIT",
                           f"{proxy.name}: a cache HIT", hit)
        _settle(s, "nginx's cache files")
        for rnd in range(cfg.rounds):
            for target, mix in ((proxies[0], "edge"), (nginx, "nginx"), (proxies[1], "edge")):
                _wrk(s, "proxy-hit", target.name, target, "hot.lua", [str(files[mix])], rnd=rnd)
    if "cold" in cfg.phases:
        cfg.log(f"scenario cold ({len(cold):,} keys the edge has not cached)")
        for rnd in range(cfg.rounds):
            procs.stop(edge)  # a fresh edge: nothing cached
            edge = servers.start_edge(procs, redis_url=s.redis_url, core=s.server_core,
                                      env=edge_env)
            for name, target in (("edge", edge), ("nginx", nginx)):
                # A round ends after one pass at the latest: a key requested twice is a hit.
                marker = w / f"cold-{name}.done"
                marker.unlink(missing_ok=True)
                # At most 3 s: at the edge's ~21k misses/s one pass over the 80,000 cold keys
                # takes ~4 s, and the requests after a pass are hits.
                _wrk(s, "cold", name, target, "walk.lua", [str(cold_file), str(marker)],
                     rnd=rnd, marker=marker, duration=min(cfg.duration, COLD_SECONDS))
            done = s.results.runs[-2].result.requests
            if done > len(cold):
                s.results.notes.append(f"cold round {rnd + 1}: {done:,} requests over "
                                       f"{len(cold):,} cold keys — some were hits")
    procs.stop(edge)
    procs.stop(edge_asgi)
    procs.stop(limit)
    procs.stop(plimit)
    procs.stop(nginx)


def memory(s: Setup, published: list[Published]) -> None:
    """The edge's RSS with every bundle held: first as gzip-accepting clients leave it (the
    gzip bytes alone), then after each was also asked for uncompressed (the JSON kept too)."""
    cfg, x = s.cfg, s.results.extra
    cfg.log(f"memory: edge RSS with {len(published):,} bundles cached")
    edge = servers.start_edge(s.procs, redis_url=s.redis_url, core=s.server_core, env={
        "EDGE_CACHE_MAX_ENTRIES": str(len(published) + 1_000)}, name="edge-memory")
    servers.get(edge.port, settings_path(published[0].write_key))
    x["rss_empty_bytes"] = rss_bytes(edge.pid)
    all_keys = seed.write_key_file(s.work / "all.tsv",
                                   [(settings_path(p.write_key), "") for p in published])
    load(s, edge, all_keys, "memory")
    x.update(rss_bytes=rss_bytes(edge.pid), rss_bundles=len(published),
             held_bytes=sum(len(p.gzip) for p in published))
    load(s, edge, all_keys, "memory-identity", identity=True)
    x.update(rss_identity_bytes=rss_bytes(edge.pid),
             held_identity_bytes=sum(len(p.json) + len(p.gzip) for p in published))
    for rss, held, what in (("rss_bytes", "held_bytes", "gzip"),
                            ("rss_identity_bytes", "held_identity_bytes", "gzip + json")):
        cfg.log(f"  RSS {x['rss_empty_bytes'] / 2**20:.0f} MiB empty, {x[rss] / 2**20:.0f} MiB "
                f"with {len(published):,} bundles of {x[held] / 2**20:.0f} MiB ({what})")
    s.procs.stop(edge)
