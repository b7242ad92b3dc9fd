"""``settings-cdn-edge assets sync``: fill the store with every script the published bundles name.

It reads every source's current bundle from Redis (``sc:{wk}:current``, then that version's
``json``, edge/keyspace.py) and, in each, every entry analytics-next would load as a classic
device-mode destination (client contract §3.2): not ``Segment.io``/``Segment*`` or
``Iterable``, ``bundlingStatus`` not ``unbundled``, ``type`` ``browser`` or ``browser`` among
``versionSettings.componentTypes``. Each names
``integrations/{path}/{version}/{path}.dynamic.js.gz`` (§3.3: ``version`` is
``versionSettings.override``, else ``versionSettings.version``, else ``latest``; ``path`` the
name lower-cased, its first ``.`` removed, whitespace runs as ``-``). A file the store lacks is
fetched from ``EDGE_ASSETS_UPSTREAM`` with the mirror's checks and stored the same way
(edge/mirror.py); one already stored is left alone, so a second run downloads nothing.

The scripts' own dependencies (``{cdn}/next-integrations{dep}.gz``, listed inside each script)
are not read here: the mirror fetches them on the first request.

Exit status: 0 when every named file is stored; 1 when one is missing upstream, could not be
fetched, or Redis could not be read; 2 for bad settings.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge import keyspace
from edge.assets import mirrorable, resolve
from edge.http import gunzip
from edge.mirror import Upstream, UpstreamError, UpstreamNotFound, fetch, store
from edge.settings import EdgeSettings

CONCURRENCY = 4  # upstream fetches at once
_WHITESPACE = re.compile(r"\s+")


def integration_path(name: str) -> str:
    """analytics-next's CDN folder of an integration name (loader.ts)."""
    return _WHITESPACE.sub("-", name.lower().replace(".", "", 1))


def _loads_in_browser(name: str, entry: Any) -> bool:
    if not isinstance(entry, dict) or name.startswith("Segment") or name == "Iterable":
        return False
    if entry.get("bundlingStatus") == "unbundled":
        return False
    version_settings = entry.get("versionSettings")
    components = version_settings.get("componentTypes") if isinstance(
        version_settings, dict) else None
    return entry.get("type") == "browser" or (
        isinstance(components, list) and "browser" in components)


def script_paths(document: Any) -> Iterator[str]:
    """Every classic destination script (relative to ``/next-integrations/``) a document names."""
    integrations = document.get("integrations") if isinstance(document, dict) else None
    if not isinstance(integrations, dict):
        return
    for name, entry in integrations.items():
        if not isinstance(name, str) or not _loads_in_browser(name, entry):
            continue
        version_settings = entry.get("versionSettings")
        version: Any = None
        if isinstance(version_settings, dict):
            version = version_settings.get("override") or version_settings.get("version")
        if not isinstance(version, str) or not version:
            version = "latest"
        path = integration_path(name)
        yield f"integrations/{path}/{version}/{path}.dynamic.js.gz"


@dataclass
class SyncReport:
    wanted: set[str] = field(default_factory=set)  # every path the bundles name
    present: set[str] = field(default_factory=set)
    fetched: dict[str, int] = field(default_factory=dict)  # path -> bytes stored
    missing: set[str] = field(default_factory=set)  # upstream 404
    failed: dict[str, str] = field(default_factory=dict)  # path -> why
    unsafe: set[str] = field(default_factory=set)  # a path the mirror never fetches
    problems: list[str] = field(default_factory=list)  # Redis and bundle problems

    @property
    def ok(self) -> bool:
        return not (self.missing or self.failed or self.unsafe or self.problems)


async def published_documents(client: aioredis.Redis, report: SyncReport
                              ) -> list[tuple[str, Any]]:
    """(write key, document) of every source's current bundle."""
    documents: list[tuple[str, Any]] = []
    async for raw_key in client.scan_iter(match=f"{keyspace.PREFIX}:{{*}}:current", count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        write_key = key[len(keyspace.PREFIX) + 2:-len("}:current")]
        pointer = await client.get(key)
        if pointer is None:
            continue  # unpublished meanwhile
        try:
            version, _ = keyspace.decode_pointer(pointer)
        except ValueError:
            report.problems.append(f"{key}: malformed pointer {pointer!r}")
            continue
        packed = await client.hget(keyspace.version_key(write_key, version), keyspace.F_GZIP)
        if packed is None:
            report.problems.append(f"{write_key}: version {version} has no gzip")
            continue
        try:
            # bounded: at most MAX_JSON bytes (the client answers bytes: no decode_responses)
            raw = gunzip(packed if isinstance(packed, bytes) else packed.encode())
        except ValueError as exc:
            report.problems.append(f"{write_key}: version {version}: {exc}")
            continue
        try:
            documents.append((write_key, orjson.loads(raw)))
        except orjson.JSONDecodeError:
            report.problems.append(f"{write_key}: version {version} holds malformed JSON")
    return documents


async def sync(settings: EdgeSettings, client: aioredis.Redis,
               paths: Iterable[str] | None = None) -> SyncReport:
    """Fetch into the store every script the published bundles (or ``paths``) name."""
    report = SyncReport()
    upstream = Upstream.parse(settings.assets_upstream)
    if paths is None:
        for _, document in await published_documents(client, report):
            report.wanted.update(script_paths(document))
    else:
        report.wanted.update(paths)
    todo: list[str] = []
    for path in sorted(report.wanted):
        if not mirrorable(path):
            report.unsafe.add(path)
        elif resolve(settings.assets_dir, path) is not None:
            report.present.add(path)
        else:
            todo.append(path)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(path: str) -> None:
        async with limit:
            try:
                body = await fetch(upstream, path, timeout=settings.assets_upstream_timeout,
                                   max_bytes=settings.assets_max_bytes)
            except UpstreamNotFound:
                report.missing.add(path)
                return
            except UpstreamError as exc:
                report.failed[path] = str(exc)
                return
            try:
                await asyncio.to_thread(store, settings.assets_dir, path, body)
            except OSError as exc:
                report.failed[path] = f"cannot store: {exc}"
                return
            report.fetched[path] = len(body)

    await asyncio.gather(*(one(path) for path in todo))
    return report


def print_report(report: SyncReport, settings: EdgeSettings, out: TextIO) -> None:
    upstream = Upstream.parse(settings.assets_upstream)
    for problem in report.problems:
        print(f"problem: {problem}", file=out)
    for path in sorted(report.fetched):
        print(f"fetched {path} ({report.fetched[path]} bytes)", file=out)
    for path in sorted(report.missing):
        print(f"missing upstream: {path} (404 at {upstream.url(path)})", file=out)
    for path in sorted(report.failed):
        print(f"failed: {path}: {report.failed[path]}", file=out)
    for path in sorted(report.unsafe):
        print(f"refused: {path!r} is not a plain path the mirror fetches", file=out)
    print(f"{len(report.wanted)} scripts named by the published bundles: "
          f"{len(report.present)} already stored, {len(report.fetched)} fetched, "
          f"{len(report.missing)} missing upstream, "
          f"{len(report.failed) + len(report.unsafe)} failed; store {settings.assets_dir}",
          file=out)


async def _run(settings: EdgeSettings) -> SyncReport:
    client = aioredis.Redis.from_url(settings.redis_url,
                                     socket_timeout=max(settings.redis_timeout, 5.0),
                                     socket_connect_timeout=max(
                                         settings.redis_connect_timeout, 5.0))
    try:
        return await sync(settings, client)
    finally:
        await client.aclose()


def main(settings: EdgeSettings, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not settings.assets_upstream:
        print("settings-cdn-edge assets sync: EDGE_ASSETS_UPSTREAM is empty: nothing to fetch "
              "from", file=err)
        return 2
    try:
        report = asyncio.run(_run(settings))
    except (RedisError, OSError) as exc:
        print(f"settings-cdn-edge assets sync: cannot read the bundles from Redis: {exc}",
              file=err)
        return 1
    print_report(report, settings, out)
    return 0 if report.ok else 1
