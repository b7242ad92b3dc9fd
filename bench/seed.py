"""Putting the data set where the servers read it: SQLite, Redis, and files for nginx.

The normal path is the production one: the sources go into the publisher's SQLite store and
``settings-cdn-publisher republish --all`` compiles and publishes every one of them (that run
is also the republish measurement); the bench then reads the published bundles back from
Redis. ``publish_direct`` compiles with the same code and writes the same keys in pipelined
batches — for when only bundles, not a store, are wanted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import redis

from bench.dataset import MAX_JSON, MIN_JSON, Published, SourceFactory, compiled, write_key
from edge import keyspace


def _rows(args: tuple[int, int, int, str]
          ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The ``sources`` and ``destinations`` rows of sources ``start..stop-1``."""
    import random

    import orjson

    start, stop, workspace_id, now = args
    factory = _factory()
    sources: list[tuple[object, ...]] = []
    instances: list[tuple[object, ...]] = []
    for i in range(start, stop):
        spec = factory.build(i, random.Random(-1 - i).randint(MIN_JSON, MAX_JSON))
        src = spec.source
        sources.append((i + 1, workspace_id, src.slug, src.name, "web", src.write_key, now, now))
        instances.extend(
            (i + 1, inst.id, inst.catalog_slug, inst.display_name,
             inst.display_name.casefold(), inst.connection_mode, int(inst.enabled),
             orjson.dumps(inst.settings).decode(), now, now)
            for inst in spec.instances)
    return sources, instances


_FACTORY: list[SourceFactory] = []


def _factory() -> SourceFactory:
    """One ``SourceFactory`` per process (it reads the catalog once)."""
    if not _FACTORY:
        _FACTORY.append(SourceFactory())
    return _FACTORY[0]


def populate_store(db_path: Path, n: int, *, workers: int = 1, chunk: int = 10_000) -> None:
    """Create workspace ``bench`` with sources ``0..n-1`` and their instances (no publish).

    The schema comes from ``Store.open`` and the workspace from the Store API; the rows are
    bulk-inserted with ``executemany`` in one transaction, because the Store API's checks per
    row (~1 ms a source) would cost minutes at 100,000 sources. Rows are built ``chunk``
    sources at a time (by ``workers`` processes when more than one), so a million sources
    never sit in memory at once. The smoke test reads the sources back through the Store
    API, so a schema change breaks it loudly.
    """
    import multiprocessing
    import sqlite3

    from publisher.store import Store
    from publisher.store.schema import now_rfc3339

    with Store.open(str(db_path)) as store:
        ws = store.create_workspace("bench", "Bench")
    now = now_rfc3339()
    jobs = [(start, min(n, start + chunk), ws.id, now) for start in range(0, n, chunk)]
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sources, instances in (pool.imap(_rows, jobs) if pool else map(_rows, jobs)):
            conn.executemany(
                "INSERT INTO sources (id, workspace_id, slug, name, type, write_key, revision,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)", sources)
            conn.executemany(
                "INSERT INTO destinations (source_id, id, catalog_slug, display_name,"
                " display_key, connection_mode, enabled, settings, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", instances)
        conn.execute("COMMIT")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        conn.close()


def republish_all(db_path: Path, redis_url: str, log: Path, *, core: int | None,
                  timeout: float) -> tuple[float, int]:
    """Run ``settings-cdn-publisher republish --all``: (wall seconds, sources published).

    Stopped after ``timeout`` seconds: the count then says how far it got, from SQLite.
    """
    from bench.procs import pinned

    env = {**os.environ, "PUBLISHER_DB": str(db_path), "REDIS_URL": redis_url}
    script = Path(sys.executable).with_name("settings-cdn-publisher")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; from publisher.cli import main; sys.exit(main())"]
    argv = pinned([*command, "republish", "--all"], core)
    started = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = 0
    elapsed = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"republish --all exited with {code}\n{tail}")
    return elapsed, len(published_ids(db_path))


def published_ids(db_path: Path) -> set[int]:
    import sqlite3

    conn = sqlite3.connect(str(db_path))
    try:
        return {int(r[0]) for r in conn.execute("SELECT DISTINCT source_id FROM bundles")}
    finally:
        conn.close()


def publish_direct(client: redis.Redis, indices: Iterable[int], *, published_at: int,
                   batch: int = 500) -> list[Published]:
    """Compile sources ``indices`` and write their version-1 keys in pipelined batches."""
    out: list[Published] = []
    pipe = client.pipeline(transaction=False)
    for count, (_, p) in enumerate(compiled(indices, published_at=published_at), start=1):
        pipe.hset(keyspace.version_key(p.write_key, p.version),
                  mapping=p.to_hash())  # type: ignore[arg-type]
        pipe.zadd(keyspace.versions_key(p.write_key), {str(p.version): p.version})
        pipe.set(keyspace.current_key(p.write_key), keyspace.encode_pointer(p.version, p.etag))
        out.append(p)
        if count % batch == 0:
            pipe.execute()
    pipe.execute()
    return out


def unpublished(client: redis.Redis, keys: Sequence[str], batch: int = 2000) -> list[int]:
    """Indices of ``keys`` without a current pointer in Redis."""
    missing: list[int] = []
    for start in range(0, len(keys), batch):
        pipe = client.pipeline(transaction=False)
        for k in keys[start:start + batch]:
            pipe.exists(keyspace.current_key(k))
        missing.extend(start + n for n, found in enumerate(pipe.execute()) if not found)
    return missing


def _publish_chunk(args: tuple[str, list[int], int]) -> int:
    redis_url, indices, published_at = args
    client = redis.Redis.from_url(redis_url)
    try:
        return len(publish_direct(client, indices, published_at=published_at))
    finally:
        client.close()


def publish_parallel(redis_url: str, indices: list[int], *, published_at: int,
                     workers: int = 2) -> int:
    """``publish_direct`` split over worker processes (seeding only, nothing is measured)."""
    import multiprocessing

    chunks = [indices[k::workers * 4] for k in range(workers * 4)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return sum(pool.map(_publish_chunk, [(redis_url, c, published_at) for c in chunks if c]))


def read_back(client: redis.Redis, keys: Sequence[str], batch: int = 1000) -> list[Published]:
    """The current bundle of every key, as the edge would read it (pointer, then hash)."""
    result: list[Published] = []
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        pipe = client.pipeline(transaction=False)
        for k in chunk:
            pipe.get(keyspace.current_key(k))
        pointers = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for k, raw in zip(chunk, pointers, strict=True):
            if raw is None:
                raise RuntimeError(f"source {k} was not published (no {keyspace.current_key(k)})")
            version, _ = keyspace.decode_pointer(raw)
            pipe.hmget(keyspace.version_key(k, version), list(keyspace.FIELDS))
        for k, values in zip(chunk, pipe.execute(), strict=True):
            env = keyspace.Envelope.from_fields(k, values)
            if env is None:
                raise RuntimeError(f"source {k}: current version hash missing")
            result.append(env)
    return result


def bench_keys(n: int) -> list[str]:
    return [write_key(i) for i in range(n)]


def write_key_file(path: Path, rows: Iterable[tuple[str, str]]) -> Path:
    """A Lua key file: ``<path>\\t<etag>`` per line."""
    with path.open("w") as out:
        for p, etag in rows:
            out.write(f"{p}\t{etag}\n")
    return path
