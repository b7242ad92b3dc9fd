"""Which Redis server the edge reads, as Redis Sentinel says (``EDGE_REDIS_SENTINELS``).

A ``Locator`` asks the Sentinels for the servers of ``EDGE_REDIS_SENTINEL_SERVICE`` and picks
one: with ``EDGE_REDIS_ROLE=replica`` a replica Sentinel holds healthy — one whose link to its
primary is up before one still syncing — or the primary while none is; with ``primary``, the
primary. It keeps its pick (``current``) for as long as the server answers and asks again
only when a connection to it fails, the server answers ``LOADING`` / ``MASTERDOWN``, or it
holds no ``sc:loaded`` (a replica restarted empty, before its sync: edge/keyspace.py); then
another server is preferred to the one that failed. While no Sentinel answers, it keeps the
server it had.

Both of a worker's ways to Redis follow one locator, so they read the same server: the
pipelined reader (``LocatedPipe``, every read) and the redis-py client (``LocatedPool``: the
instant-mode subscription; every read for a ``rediss://`` URL). Reading and subscribing on
one server matters: a replica applies a publish's writes before it forwards its message, so a
message never announces a version the server read next does not hold yet.

``REDIS_URL`` gives the servers' password, database and options; its host and port are not
used (Sentinel names the servers).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SlaveNotFoundError,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from edge.pipe import RedisPipe
from edge.redis_url import parse_sentinels
from edge.settings import EdgeSettings

log = logging.getLogger("edge.sentinel")

Address = tuple[str, int]

# Error replies of a server that cannot serve reads now, though its connection is fine: a
# replica loading its data set, or one whose link to its primary is down with
# ``replica-serve-stale-data no``. Another server may.
UNSERVING = ("LOADING", "MASTERDOWN")


class Locator:
    """The server to read; sticky, chosen again after a failure (see the module docstring)."""

    def __init__(self, sentinel: Sentinel, service: str, role: str) -> None:
        self.sentinel = sentinel
        self.service = service
        self.role = role
        self.current: Address | None = None
        self.avoid: Address | None = None  # the last server that failed, while others exist
        self.read: Address | None = None  # the last server picked (current: None after it failed)

    async def address(self) -> Address:
        """The server to connect to now; raises ``redis.ConnectionError`` when no Sentinel
        names one and none was held before."""
        candidates = await self._candidates()
        if not candidates:
            if self.current is not None:  # no Sentinel answers: keep what was read before
                return self.current
            raise SlaveNotFoundError(f"no Sentinel of {self._sentinels()} names a server of "
                                     f"service {self.service!r}")
        usable = [a for a in candidates if a != self.avoid] or candidates
        chosen = self.current if self.current in usable else random.choice(usable)
        if self.read is not None and chosen != self.read:
            log.warning("reading redis %s:%d (service %r, %s) instead of %s:%d", *chosen,
                        self.service, self.role, *self.read)
        self.current = self.read = chosen
        return chosen

    def failed(self, address: Address) -> None:
        """A connection to ``address`` failed, or it cannot serve reads: prefer another."""
        self.avoid = address
        if self.current == address:
            self.current = None

    async def _candidates(self) -> list[Address]:
        """Servers to read, best first: healthy replicas with their link up, then those
        syncing; the primary when no replica is healthy (or ``role`` is primary)."""
        if self.role == "replica":
            for sentinel in self.sentinel.sentinels:
                try:
                    replicas = await sentinel.sentinel_slaves(self.service)
                except (RedisError, OSError):
                    continue
                alive = [r for r in replicas if not (r["is_sdown"] or r["is_odown"]
                                                     or r.get("is_disconnected"))]
                linked = [r for r in alive if r.get("master-link-status") == "ok"]
                if linked or alive:
                    return [(str(r["ip"]), int(r["port"])) for r in linked or alive]
        try:
            host, port = await self.sentinel.discover_master(self.service)
        except MasterNotFoundError:
            return []
        return [(str(host), int(port))]

    def _sentinels(self) -> str:
        kw = [s.connection_pool.connection_kwargs for s in self.sentinel.sentinels]
        return ",".join(f"{k['host']}:{k['port']}" for k in kw)

    async def aclose(self) -> None:
        await self.sentinel.aclose()


class LocatedPipe(RedisPipe):
    """``RedisPipe`` to the locator's server: every new connection asks the locator, and a
    connection to a server the locator no longer picks is replaced."""

    def __init__(self, locator: Locator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.locator = locator

    async def execute(self, *args: bytes) -> Any:
        connection = self.connection
        if connection is not None and self.locator.current != (self.host, self.port):
            connection.fail(RedisConnectionError("the locator picked another redis"))
        try:
            return await super().execute(*args)
        except ResponseError as exc:
            if str(exc).startswith(UNSERVING):
                self.unserving()
            raise

    def unserving(self) -> None:
        """The server cannot serve reads now (an error reply, or no data loaded): read another
        one, if Sentinel names one, from the next command on."""
        self.locator.failed((self.host, self.port))
        if self.connection is not None:
            self.connection.fail(RedisConnectionError("redis cannot serve reads now"))

    async def _connect(self) -> Any:
        self.host, self.port = await self.locator.address()
        try:
            return await super()._connect()
        except RedisError:
            self.locator.failed((self.host, self.port))
            raise


class LocatedPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, connecting where the locator says; closing the pool closes
    the locator's Sentinel connections too."""

    def __init__(self, locator: Locator, **kwargs: Any) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            locator.service, locator.sentinel, is_master=False, **kwargs)
        self.locator = locator

    async def rotate_slaves(self) -> AsyncIterator[Address]:
        address = await self.locator.address()
        yield address
        self.locator.failed(address)  # (resumed only when connecting to it failed)
        raise SlaveNotFoundError(f"cannot connect to redis at {address[0]}:{address[1]}")

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # closing the client
            await self.locator.aclose()


def located_client(settings: EdgeSettings) -> aioredis.Redis:
    """A redis.asyncio client (the edge's timeouts and retry) on the server the Sentinels of
    ``settings`` name; the options of ``settings.redis_url`` but its address."""
    sentinel = Sentinel(
        parse_sentinels(settings.redis_sentinels),
        sentinel_kwargs={
            "password": settings.redis_sentinel_password or None,
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
        },
    )
    locator = Locator(sentinel, settings.redis_sentinel_service, settings.redis_role)
    kwargs = dict(ConnectionPool.from_url(settings.redis_url).connection_kwargs)
    ssl = settings.redis_url.startswith("rediss://")
    for key in ("host", "port", "path", "connection_class"):
        kwargs.pop(key, None)
    kwargs.update(  # the edge's, over any the URL's query sets (as make_client does)
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        max_connections=settings.redis_max_connections,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0,
    )
    # (ssl: the pool picks its TLS connection class from this flag)
    pool = LocatedPool(locator, ssl=ssl, **kwargs)
    return aioredis.Redis.from_pool(pool)


def pipe_for(client: aioredis.Redis) -> RedisPipe | None:
    """The pipelined reader for ``client``: a ``LocatedPipe`` for a located client (``None``
    over TLS), else ``RedisPipe.for_client``."""
    pool = client.connection_pool
    if not isinstance(pool, LocatedPool):
        return RedisPipe.for_client(client)
    if pool.connection_class is not SentinelManagedConnection:  # TLS: reads go through redis-py
        return None
    kw = pool.connection_kwargs
    return LocatedPipe(pool.locator, db=int(kw.get("db") or 0), username=kw.get("username"),
                       password=kw.get("password"), timeout=kw.get("socket_timeout"),
                       connect_timeout=kw.get("socket_connect_timeout"))


def following(client: aioredis.Redis) -> Locator | None:
    """The locator a client follows, if any (the subscription moves with it)."""
    pool = client.connection_pool
    return pool.locator if isinstance(pool, LocatedPool) else None

