"""The edge's only Redis access: read a source's current pointer and one version's envelope.

Reads go through ``edge.keyspace`` so publisher and edge agree on every key. Every Redis
failure — refused, reset, timed out, or data the keyspace cannot parse — becomes
``StoreUnavailable``, which the cache answers by serving the copy it already holds. The
client is built with short socket timeouts and no retry on timeouts: a slow Redis must cost a
request at most one timeout, and the cache (not redis-py) decides when to try again.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from edge import keyspace
from edge.settings import EdgeSettings


class StoreUnavailable(Exception):
    """Redis could not answer (down, slow, restarting) or answered something malformed."""


def make_client(settings: EdgeSettings) -> aioredis.Redis:
    """A redis.asyncio client (hiredis parser when installed) with the edge's timeouts."""
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


# A cold miss in one round trip: the pointer and the version it names, read atomically (the
# version key is built from the same hash tag, so it lives in the pointer's slot).
_CURRENT = """
local pointer = redis.call('GET', KEYS[1])
if not pointer then return false end
local version = string.match(pointer, '^(%d+) ')
if not version then return {pointer} end
local v = redis.call('HMGET', ARGV[1] .. version, unpack(ARGV, 2))
return {pointer, v[1], v[2], v[3], v[4], v[5], v[6]}
"""


class Store:
    """Implements ``edge.cache.BundleSource`` over a real Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._current = client.register_script(_CURRENT)

    async def current(
        self, write_key: str
    ) -> tuple[tuple[int, str], keyspace.Envelope | None] | None:
        """Pointer and envelope in one round trip (a cold miss); ``None``: no such source.

        The envelope is ``None`` when the pointer names a version that is gone (pruned).
        """
        try:
            raw = await self._current(keys=[keyspace.current_key(write_key)],
                                      args=[keyspace.version_prefix(write_key),
                                            *keyspace.FIELDS])
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis EVALSHA current failed: {exc!r}") from exc
        if raw is None:
            return None
        values = cast("list[bytes | None]", raw)
        try:
            pointer = keyspace.decode_pointer(cast(bytes, values[0]))
            envelope = (keyspace.Envelope.from_fields(write_key, values[1:])
                        if len(values) == 1 + len(keyspace.FIELDS) else None)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreUnavailable(f"malformed pointer or version of {write_key!r}") from exc
        return pointer, envelope

    async def pointer(self, write_key: str) -> tuple[int, str] | None:
        """The current ``(version, etag)`` of a source, ``None`` when it has none."""
        try:
            raw = await self.client.get(keyspace.current_key(write_key))
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis GET pointer failed: {exc!r}") from exc
        if raw is None:
            return None
        try:
            return keyspace.decode_pointer(raw)
        except ValueError as exc:
            raise StoreUnavailable(f"malformed pointer for {write_key!r}: {raw!r}") from exc

    async def envelope(self, write_key: str, version: int) -> keyspace.Envelope | None:
        """One stored version, ``None`` when that version hash does not exist (pruned)."""
        try:
            raw = await self.client.hmget(
                keyspace.version_key(write_key, version), list(keyspace.FIELDS)
            )
            values = cast("list[bytes | None]", raw)  # decode_responses=False: bytes
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis HMGET version failed: {exc!r}") from exc
        try:
            return keyspace.Envelope.from_fields(write_key, values)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreUnavailable(f"malformed version {version} of {write_key!r}") from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis PING failed: {exc!r}") from exc
