"""Starting the three servers under test and checking they answer what the bench expects.

A probe is one real request per server before any load: status, ETag and body are checked
(an ETag that does not match would turn the 304 scenario into a 200 one, silently), and the
edge's own headers are copied to the references so that all three send the same ones.
"""

from __future__ import annotations

import gzip
import http.client
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.dataset import Published, settings_path
from bench.procs import Proc, Processes, free_port

VENV_BIN = Path(sys.executable).parent
# The uvicorn flags the edge runs with (edge/cli.py); the ASGI limit gets the same ones. The
# edge's protocol class answers only the edge's own cache hits inline: under the limit (no
# edge runtime in the lifespan state) it is uvicorn's httptools protocol, unchanged.
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "edge.server:EdgeHttpProtocol", "--no-access-log",
                 "--no-server-header", "--no-proxy-headers", "--log-level", "warning",
                 "--lifespan", "on")
BROWSER_HEADERS = {"Accept-Encoding": "gzip, deflate, br, zstd",
                   "Origin": "https://shop.example", "User-Agent": "settings-cdn-bench"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def get(port: int, path: str, headers: Mapping[str, str] | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={**BROWSER_HEADERS, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def expect(cond: bool, what: str, answer: Answer) -> None:
    if not cond:
        raise RuntimeError(f"probe failed: {what}; got {answer.status} {answer.headers} "
                           f"{answer.body[:200]!r}")


def check_bundle(name: str, answer: Answer, bundle: Published, etag: str) -> None:
    expect(answer.status == 200, f"{name}: 200 for {bundle.write_key}", answer)
    expect(answer.headers.get("etag") == etag, f"{name}: ETag {etag}", answer)
    expect(answer.headers.get("content-encoding") == "gzip", f"{name}: gzip", answer)
    expect(gzip.decompress(answer.body) == bundle.json, f"{name}: body is the bundle", answer)


def start_edge(procs: Processes, *, redis_url: str, core: int | None,
               env: Mapping[str, str] | None = None, name: str = "edge") -> Proc:
    port = free_port()
    return procs.start(name, [str(VENV_BIN / "settings-cdn-edge")], port=port, core=core, env={
        "EDGE_HOST": "127.0.0.1", "EDGE_PORT": str(port), "REDIS_URL": redis_url,
        "EDGE_LOG_LEVEL": "warning", **(env or {})})


def start_limit(procs: Processes, bundle_file: Path, *, core: int | None,
                protocol: bool = False) -> Proc:
    """The ASGI limit, or with ``protocol`` the protocol limit (bench/limit.py)."""
    port = free_port()
    flags = list(UVICORN_FLAGS)
    if protocol:
        flags[flags.index("--http") + 1] = "bench.limit:ConstantProtocol"
    return procs.start("protocol-limit" if protocol else "asgi-limit", [
        sys.executable, "-m", "uvicorn", "--factory", "bench.limit:create_app",
        "--host", "127.0.0.1", "--port", str(port), *flags,
    ], port=port, core=core, env={"BENCH_LIMIT_BUNDLE": str(bundle_file)})


@dataclass(frozen=True)
class EdgeHeaders:
    """What the edge sends, for the references to copy."""

    ok: list[tuple[str, str]]  # 200 headers of the probed bundle, minus per-connection ones
    cache_control: str
    not_found_cache_control: str
    version_header: str


def probe_edge(edge: Proc, bundle: Published, unknown_key: str) -> EdgeHeaders:
    answer = get(edge.port, settings_path(bundle.write_key))
    check_bundle("edge", answer, bundle, bundle.etag)
    missing = get(edge.port, settings_path(unknown_key))
    expect(missing.status == 404, "edge: 404 for an unknown key", missing)
    not_modified = get(edge.port, settings_path(bundle.write_key),
                       {"If-None-Match": bundle.etag})
    expect(not_modified.status == 304, "edge: 304 for a matching If-None-Match", not_modified)
    version_header = next((k for k, v in answer.headers.items()
                           if "version" in k and v == str(bundle.version)), "")
    expect(bool(version_header), "edge: a header carrying the bundle version", answer)
    ok = [(k, v) for k, v in answer.headers.items()
          if k not in ("date", "server", "content-length", "connection", "keep-alive")]
    return EdgeHeaders(ok=ok, cache_control=answer.headers.get("cache-control", ""),
                       not_found_cache_control=missing.headers.get("cache-control", "no-cache"),
                       version_header=version_header)


def probe_reference(name: str, proc: Proc, bundle: Published, etag: str,
                    unknown_key: str | None) -> None:
    check_bundle(name, get(proc.port, settings_path(bundle.write_key)), bundle, etag)
    not_modified = get(proc.port, settings_path(bundle.write_key), {"If-None-Match": etag})
    expect(not_modified.status == 304, f"{name}: 304 for a matching If-None-Match",
           not_modified)
    if unknown_key is not None:
        missing = get(proc.port, settings_path(unknown_key))
        expect(missing.status == 404, f"{name}: 404 for an unknown key", missing)
