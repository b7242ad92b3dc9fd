"""The edge's only Redis access: read a source's current pointer and one version's bytes.

Reads go through ``edge.keyspace`` so publisher and edge agree on every key, and read only
``keyspace.EDGE_FIELDS`` of a version: its gzip bytes and their metadata, not the JSON, which
would double the bytes a cold miss moves (the few clients that want JSON get it inflated from
the gzip bytes: edge/entry.py). Every Redis failure — refused, reset, timed out, or data the
keyspace cannot parse — becomes ``StoreUnavailable``, which the cache answers by serving the
copy it already holds; malformed data (or a key of the wrong type) is its subclass
``StoreCorrupt``, which does not stand for Redis as a whole, and a Redis without
``keyspace.LOADED_KEY`` answers an absent pointer with ``NotLoaded``, not "no such source".
Reads go over one pipelined connection (``edge.pipe``) with the client's timeouts and retry
policy (to the server Sentinel names, with ``EDGE_REDIS_SENTINELS``: edge/sentinel.py); for a
TLS URL, through the redis-py client. Short socket timeouts and no retry on
timeouts: a slow Redis must cost a request at most one timeout, and the cache (not the client)
decides when to try again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from edge import keyspace
from edge.pipe import settle
from edge.sentinel import LocatedPipe, located_client, pipe_for
from edge.settings import EdgeSettings

log = logging.getLogger("edge.store")


class StoreUnavailable(Exception):
    """Redis could not answer (down, slow, restarting) or answered something malformed."""


class StoreCorrupt(StoreUnavailable):
    """Redis answered, but one source's pointer or version is malformed (or of a type Redis
    refuses to read): that source's problem, not Redis's (the cache keeps reading every other
    key)."""


class NotLoaded(StoreUnavailable):
    """Redis holds no pointer for a source and no ``keyspace.LOADED_KEY`` either: it has not
    been loaded by a publisher (restarted empty, flushed, an empty replica), so the absence
    says nothing about the source. A Redis fault, not a deletion."""


def make_client(settings: EdgeSettings) -> aioredis.Redis:
    """A redis.asyncio client (hiredis parser when installed) with the edge's timeouts: to
    ``REDIS_URL``'s server, or with ``EDGE_REDIS_SENTINELS`` to the one the Sentinels name
    (edge/sentinel.py)."""
    if settings.redis_sentinels:
        return located_client(settings)
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        max_connections=settings.redis_max_connections,
        # one immediate retry on a refused/reset connection only: it reconnects a pooled
        # connection broken by a Redis restart; timeouts are never retried
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0,
    )


# Cold misses in one round trip: for each source, its pointer and the version it names, read
# atomically. Misses that arrive together (the same event-loop turn) share one call: redis-py
# costs far more per command than Redis does per key. The keys of one batch span hash slots:
# the edge reads one Redis (or a replica of it), not a Cluster.
# KEYS: current keys, then keyspace.LOADED_KEY; ARGV: the field count, the fields, then one
# version prefix per key.
# Reply: whether LOADED_KEY exists (1/0), then per key 1 + #fields values (false = absent),
# flat. A key Redis refuses to read (a wrong type) is that key's error alone: its pointer slot
# holds ``!`` and Redis's message, and the rest of the batch is read as usual.
_CURRENT_MANY = """
local nfields = tonumber(ARGV[1])
local fields = {unpack(ARGV, 2, nfields + 1)}
local nkeys = #KEYS - 1
local out = {redis.call('EXISTS', KEYS[nkeys + 1])}
for i = 1, nkeys do
  local base = 1 + (i - 1) * (nfields + 1)
  local pointer = redis.pcall('GET', KEYS[i])
  local values = false
  if type(pointer) == 'table' then
    pointer = '!' .. tostring(pointer.err)
  else
    local version = pointer and string.match(pointer, '^(%d+) ')
    if version then
      values = redis.pcall('HMGET', ARGV[nfields + 1 + i] .. version, unpack(fields))
      if values.err then
        pointer, values = '!' .. tostring(values.err), false
      end
    end
  end
  out[base + 1] = pointer
  for f = 1, nfields do
    out[base + 1 + f] = values and values[f] or false
  end
end
return out
"""
# Keys per call. Small batches keep Redis and the edge busy at once: with one large batch every
# waiting request waits for the whole batch while the edge idles; 16 keys already spread the
# cost of a call over enough keys (bench/ measures the cold path).
MAX_BATCH = 16

_Current = tuple[tuple[int, str], keyspace.Stored | None] | None
_Pointer = tuple[int, str] | None
T = TypeVar("T")


class _Batcher(Generic[T]):
    """Reads asked for in one event-loop turn, answered by one Redis call per ``MAX_BATCH``.

    ``read`` gets the write keys and returns one result per key: a value, or the
    ``StoreUnavailable`` of that key alone. A failed call fails every key of its batch.
    """

    def __init__(self, name: str,
                 read: Callable[[list[str]], Awaitable[list[T | StoreUnavailable]]]) -> None:
        self.name = name
        self.read = read
        self._queued: list[tuple[str, asyncio.Future[T]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, write_key: str) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((write_key, future))
        return await future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), MAX_BATCH):
            task = asyncio.ensure_future(self._run(queued[start:start + MAX_BATCH]))
            self._running.add(task)  # keep a reference until done
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future[T]]]) -> None:
        try:
            results = await self.read([write_key for write_key, _ in batch])
        except (RedisError, OSError, TimeoutError) as exc:
            error = StoreUnavailable(f"redis {self.name} failed: {_describe(exc)}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except Exception as exc:  # a fault no Redis client names: still this batch's alone
            log.exception("redis %s failed", self.name)
            error = StoreUnavailable(f"redis {self.name} failed: {_describe(exc)}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException as exc:  # cancelled (shutdown): nobody may wait forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(f"read abandoned: {exc!r}"))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            settle(future, result)  # a StoreUnavailable is raised to its waiter alone


_FIELDS = [field.encode() for field in keyspace.EDGE_FIELDS]
_LOADED = keyspace.LOADED_KEY.encode()
_SCRIPT_ARGS = [b"%d" % len(_FIELDS), *_FIELDS]


class Store:
    """Implements ``edge.cache.BundleSource`` over a real Redis.

    Cold misses and pointer re-checks that arrive together (the same event-loop turn) share
    one Redis call each: a call costs the edge far more than Redis costs per key.
    ``pipelined=False`` reads through the redis-py client alone (what a TLS URL gets).
    """

    def __init__(self, client: aioredis.Redis, *, pipelined: bool = True) -> None:
        self.client = client
        self.pipe = pipe_for(client) if pipelined else None
        self._current_many = client.register_script(_CURRENT_MANY)
        self._sha = self._current_many.sha.encode()
        self._script = _CURRENT_MANY.encode()
        self._currents: _Batcher[_Current] = _Batcher("EVALSHA current", self._read_currents)
        self._pointers: _Batcher[_Pointer] = _Batcher("MGET pointers", self._read_pointers)
        # whether the last batch read found keyspace.LOADED_KEY (None: none read yet)
        self.loaded: bool | None = None

    async def aclose(self) -> None:
        """Close the pipelined connection (the client is its owner's to close)."""
        if self.pipe is not None:
            await self.pipe.aclose()

    async def current(self, write_key: str) -> _Current:
        """Pointer and the version it names in one round trip (a cold miss); ``None``: no such
        source.

        The version is ``None`` when the pointer names one that is gone (pruned).
        """
        return await self._currents.get(write_key)

    async def pointer(self, write_key: str) -> _Pointer:
        """The current ``(version, etag)`` of a source, ``None`` when it has none."""
        return await self._pointers.get(write_key)

    async def _read_currents(self, write_keys: list[str]) -> list[_Current | StoreUnavailable]:
        keys = [*(keyspace.current_key(write_key).encode() for write_key in write_keys), _LOADED]
        args = [*_SCRIPT_ARGS, *(keyspace.version_prefix(wk).encode() for wk in write_keys)]
        if self.pipe is not None:
            raw = await self.pipe.script(self._sha, self._script, keys, args)
        else:
            raw = await self._current_many(keys=keys, args=args)
        values = cast("list[bytes | int | None]", raw)
        width = 1 + len(_FIELDS)
        if len(values) != 1 + width * len(write_keys):
            error = StoreUnavailable(f"redis returned {len(values)} values for "
                                     f"{len(write_keys)} sources")
            return [error] * len(write_keys)
        loaded = self.loaded = values[0] == 1
        if not loaded:
            self._not_loaded()
        return [_decode_current(write_key, cast("list[bytes | None]",
                                                values[1 + i * width:1 + (i + 1) * width]),
                                loaded)
                for i, write_key in enumerate(write_keys)]

    async def _read_pointers(self, write_keys: list[str]) -> list[_Pointer | StoreUnavailable]:
        keys = [*(keyspace.current_key(wk).encode() for wk in write_keys), _LOADED]
        if self.pipe is not None:
            raw = await self.pipe.execute(b"MGET", *keys)
        else:
            raw = await self.client.mget(keys)
        values = cast("list[bytes | None]", raw)
        if len(values) != len(keys):
            error = StoreUnavailable(f"redis returned {len(values)} values for "
                                     f"{len(keys)} keys")
            return [error] * len(write_keys)
        loaded = self.loaded = values[-1] is not None
        if not loaded:
            self._not_loaded()
        return [_decode_pointer(write_key, value, loaded)
                for write_key, value in zip(write_keys, values, strict=False)]

    def _not_loaded(self) -> None:
        """A server without ``LOADED_KEY`` (a replica restarted empty, still syncing): with
        Sentinel, read another one from the next read on (edge/sentinel.py)."""
        if isinstance(self.pipe, LocatedPipe):
            self.pipe.unserving()

    async def stored(self, write_key: str, version: int) -> keyspace.Stored | None:
        """One published version, ``None`` when its hash does not exist (pruned)."""
        key = keyspace.version_key(write_key, version).encode()
        try:
            if self.pipe is not None:
                raw = await self.pipe.execute(b"HMGET", key, *_FIELDS)
            else:
                raw = await self.client.hmget(key, _FIELDS)
            values = cast("list[bytes | None]", raw)  # decode_responses=False: bytes
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):  # this source's data, not Redis as a whole
                raise StoreCorrupt(f"version {version} of {write_key!r}: {exc}") from exc
            raise StoreUnavailable(f"redis HMGET version failed: {_describe(exc)}") from exc
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis HMGET version failed: {_describe(exc)}") from exc
        try:
            return keyspace.Stored.from_fields(write_key, values)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreCorrupt(f"malformed version {version} of {write_key!r}: {exc}") from exc

    async def replication(self) -> dict[str, str]:
        """``INFO replication`` of the server read, as text fields (``role``,
        ``master_link_status``, ``master_last_io_seconds_ago``, ...): edge/replica_link.py."""
        try:
            if self.pipe is not None:
                raw = await self.pipe.execute(b"INFO", b"replication")
                return parse_info(raw.decode() if isinstance(raw, bytes) else str(raw))
            info = await self.client.info("replication")
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis INFO failed: {_describe(exc)}") from exc
        return {str(k): str(v) for k, v in info.items()}

    async def config(self, name: str) -> str | None:
        """One ``CONFIG GET`` value of the server read; ``None`` when it has no such
        parameter. Raises ``StoreUnavailable`` (also where ``CONFIG`` is not allowed)."""
        try:
            if self.pipe is not None:
                raw = await self.pipe.execute(b"CONFIG", b"GET", name.encode())
            else:
                raw = await self.client.config_get(name)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis CONFIG GET failed: {_describe(exc)}") from exc
        if isinstance(raw, dict):  # (RESP3, or redis-py's reply callback)
            raw = [item for pair in raw.items() for item in pair]
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in raw or []]
        return dict(zip(values[::2], values[1::2], strict=False)).get(name)

    async def ping(self) -> None:
        try:
            if self.pipe is not None:
                await self.pipe.execute(b"PING")
            else:
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis PING failed: {_describe(exc)}") from exc


def parse_info(text: str) -> dict[str, str]:
    """The ``field:value`` lines of an ``INFO`` reply (section headers and blanks skipped)."""
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value.strip()
    return fields


def _describe(exc: BaseException) -> str:
    # (redis-py's exceptions have a repr without their message)
    return f"{type(exc).__name__}: {exc}"


def _decode_current(write_key: str, values: list[bytes | None], loaded: bool
                    ) -> _Current | StoreUnavailable:
    pointer = values[0]
    if pointer is None:
        return None if loaded else NotLoaded(f"redis holds no {keyspace.LOADED_KEY}: not "
                                             "loaded by a publisher")
    if pointer.startswith(b"!"):
        return StoreCorrupt(f"redis cannot read the keys of {write_key!r}: "
                            f"{pointer[1:200].decode(errors='replace')}")
    try:
        return keyspace.decode_pointer(pointer), keyspace.Stored.from_fields(write_key,
                                                                             values[1:])
    except (ValueError, UnicodeDecodeError) as exc:
        return StoreCorrupt(f"malformed pointer or version of {write_key!r}: {exc}")


def _decode_pointer(write_key: str, value: bytes | None, loaded: bool
                    ) -> _Pointer | StoreUnavailable:
    if value is None:
        # (MGET reads a key of another type as absent: the cache confirms an absent pointer
        # of a held source with ``current``, which tells the two apart)
        return None if loaded else NotLoaded(f"redis holds no {keyspace.LOADED_KEY}: not "
                                             "loaded by a publisher")
    try:
        return keyspace.decode_pointer(value)
    except (ValueError, UnicodeDecodeError):
        return StoreCorrupt(f"malformed pointer for {write_key!r}: {value[:80]!r}")
