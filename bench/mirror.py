"""The ``mirror`` phase: the edge serving stored ``/next-integrations/`` files against nginx.

A local upstream (a thread of this process, loopback) holds ``FILES`` destination scripts of
Segment-like sizes; one request per file makes the edge's mirror fetch and store each of them
(the real pull-through path, never the internet). Then ``wrk`` (bench/lua/hot.lua: a Zipf mix
over the files, browser headers) measures mirror hits — the edge serving a file from its store —
and nginx serving the very same store directory with the same headers (``Content-Encoding:
gzip``, immutable ``Cache-Control``, CORS), interleaved round after round, both on the server
core. It prints ``ratio mirror-hit edge/nginx = X`` (medians of req/s) and records the runs
as scenario ``mirror-hit``.

    python -m bench.mirror [--duration S] [--rounds R]   (alone: starts its own Redis)
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import random
import shutil
import statistics
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import servers
from bench.procs import Proc, Processes, cores, free_port, require_tool
from bench.report import Run
from bench.wrk import run as run_wrk

if TYPE_CHECKING:
    from bench.context import Setup

FILES = 40  # destination scripts
TREE = "/next-integrations/"


def scripts(count: int = FILES, seed: int = 7) -> dict[str, bytes]:
    """``count`` gzipped scripts, 5-60 KB of JavaScript-like text each (Segment's
    ``*.dynamic.js.gz`` compress to about that)."""
    rng = random.Random(seed)
    words = ["function", "return", "var", "this", "window", "document", "analytics", "track",
             "identify", "page", "prototype", "undefined", "null", "push", "length", "options"]
    files = {}
    for i in range(count):
        name = f"dest{i:02d}"
        size = rng.randint(5_000, 60_000)
        text = " ".join(rng.choice(words) + str(rng.randint(0, 99)) for _ in range(size // 7))
        files[f"integrations/{name}/1.{i}.0/{name}.dynamic.js.gz"] = gzip.compress(
            text.encode(), mtime=0)
    return files


@contextmanager
def upstream(files: dict[str, bytes]) -> Iterator[str]:
    """A loopback HTTP server answering ``/next-integrations/<path>`` from ``files``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = files.get(self.path[len(TREE):]) if self.path.startswith(TREE) else None
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def nginx_conf(workdir: Path, port: int, store: Path) -> Path:
    """nginx serving ``store`` at ``/next-integrations/`` with the edge's asset headers."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx-mirror.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx-mirror.pid;
error_log {workdir}/nginx-mirror-error.log warn;
events {{ worker_connections 4096; use epoll; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    open_file_cache max=1000 inactive=600s;
    open_file_cache_valid 3600s;
    types {{ text/javascript gz; }}
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location {TREE} {{
            alias {store}/;
            add_header Content-Encoding gzip;
            add_header Cache-Control "public, max-age=31536000, immutable";
            add_header Access-Control-Allow-Origin "*";
        }}
        location / {{ return 404; }}
    }}
}}
""")
    return conf


def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=servers.BROWSER_HEADERS)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def _check(name: str, port: int, files: dict[str, bytes]) -> None:
    for path, body in files.items():
        status, headers, got = _get(port, TREE + path)
        if status != 200 or got != body or headers.get("content-encoding") != "gzip":
            raise RuntimeError(f"{name}: {TREE}{path} answered {status} "
                               f"({len(got)} bytes, {headers}), not the stored file")


def measure(s: Setup, files: dict[str, bytes] | None = None) -> float:
    """Run the phase on ``s``'s servers' core; returns the edge/nginx req/s ratio."""
    cfg, procs, w = s.cfg, s.procs, s.work
    files = files if files is not None else scripts()
    store = w / "mirror-store"
    with upstream(files) as url:
        edge = servers.start_edge(procs, redis_url=s.redis_url, core=s.server_core, env={
            "EDGE_ASSETS_DIR": str(store), "EDGE_ASSETS_UPSTREAM": url}, name="edge-mirror")
        _check("edge (first requests: mirror fetches)", edge.port, files)
    stored = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    if stored != sorted(files):
        raise RuntimeError(f"the mirror stored {stored}, not the {len(files)} files")
    _check("edge (mirror hits, upstream gone)", edge.port, files)
    store.chmod(0o755)  # nginx's worker runs as another user
    for directory in store.rglob("*"):
        if directory.is_dir():
            directory.chmod(0o755)
    port = free_port()
    conf = nginx_conf(w, port, store)
    nginx = procs.start("nginx-mirror", [require_tool("nginx", "apt-get install nginx-light"),
                                         "-c", str(conf), "-p", str(w), "-e",
                                         str(w / "nginx-mirror.log")],
                        port=port, core=s.server_core)
    _check("nginx", nginx.port, files)
    keyfile = w / "mirror-keys.tsv"
    keyfile.write_text("".join(f"{TREE}{path}\t\n" for path in files))
    targets: dict[str, Proc] = {"edge": edge, "nginx": nginx}
    cfg.log(f"scenario mirror-hit ({len(files)} stored scripts, "
            f"{sum(map(len, files.values())) // len(files):,} B average)")
    rates: dict[str, list[float]] = {"edge": [], "nginx": []}
    for rnd in range(-1 if cfg.warmup else 0, cfg.rounds):
        for target, proc in targets.items():
            result = run_wrk(f"http://127.0.0.1:{proc.port}", "hot.lua", [str(keyfile)],
                             connections=cfg.connections,
                             duration=cfg.warmup if rnd < 0 else cfg.duration,
                             core=s.load_core, server=proc, server_core=s.server_core)
            if result.status_errors or result.socket_errors:
                raise RuntimeError(f"mirror-hit {target}: {result.status_errors} bad statuses, "
                                   f"{result.socket_errors} socket errors")
            if rnd < 0:
                continue
            s.results.runs.append(Run("mirror-hit", target, rnd, result))
            rates[target].append(result.rps)
            cfg.log(f"  mirror-hit r{rnd + 1:<3} {target:<8} {result.rps:>10,.0f} req/s  "
                    f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                    f"{result.bytes_per_request:7,.0f} B/resp  server {result.server_cpu:4.0%}")
    procs.stop(nginx)
    procs.stop(edge)
    ratio = statistics.median(rates["edge"]) / statistics.median(rates["nginx"])
    s.results.extra["mirror_hit_ratio"] = ratio
    cfg.log(f"ratio mirror-hit edge/nginx = {ratio:.2f}")
    return ratio


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    from bench.context import BenchConfig, Setup

    p = argparse.ArgumentParser(prog="python -m bench.mirror", description=__doc__)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args(argv)
    server_core, load_core = cores()
    affinity = os.sched_getaffinity(0)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    work = Path(tempfile.mkdtemp(prefix="sc-bench-mirror-"))
    work.chmod(0o755)
    procs = Processes(work)
    rport = free_port()
    cfg = BenchConfig(duration=args.duration, rounds=args.rounds,
                      connections=args.connections, log=log)
    s = Setup(cfg, work, work, procs, server_core, load_core, f"redis://127.0.0.1:{rport}/0")
    try:
        redis_bin = os.environ.get("REDIS_SERVER_BIN") or require_tool(
            "redis-server", "apt-get install redis-server (or set REDIS_SERVER_BIN)")
        procs.start("redis", [redis_bin, "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(work)],
                    port=rport, core=load_core)
        measure(s)
    finally:
        procs.stop_all()
        os.sched_setaffinity(0, affinity)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
