"""Instant mode: follow the publish channel and re-check a bundle the moment it changes.

The subscription is a best-effort accelerator on top of the refresh interval, never a
replacement: while it is down the edge falls back to re-checking pointers every
``EDGE_REFRESH_INTERVAL``, and after every (re)subscribe it expires all held entries, because
publishes made while it was away were missed.

With ``EDGE_REDIS_SENTINELS`` it subscribes on the server the reads go to (edge/sentinel.py),
and moves when they move: a replica forwards a publish's message after applying its writes,
so the read a message starts finds the version it names.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge import keyspace
from edge.cache import BundleCache
from edge.sentinel import following

log = logging.getLogger("edge.instant")


class Subscription:
    """Follows ``keyspace.PUBLISHED_CHANNEL``; ``up`` says whether it is live right now."""

    def __init__(
        self, client: aioredis.Redis, cache: BundleCache, *, retry_interval: float
    ) -> None:
        self.client = client
        self.cache = cache
        self.retry_interval = max(retry_interval, 0.05)
        self.up = False
        self.ready = asyncio.Event()  # set after each successful subscribe (tests wait on it)
        self.locator = following(client)

    def handle(self, data: bytes | str) -> None:
        try:
            write_key, version = keyspace.decode_message(data)
        except ValueError:
            log.warning("ignoring malformed publish message %r", data)
            return
        if self.cache.expire(write_key, version):
            self.cache.metrics.instant_rechecks += 1

    async def run(self) -> None:
        while True:
            moved = False
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(keyspace.PUBLISHED_CHANNEL)
                connection = pubsub.connection
                where = None if connection is None else (connection.host, connection.port)
                self.cache.expire_all()
                self.up = True
                self.ready.set()
                while self.locator is None or self.locator.current in (None, where):
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
                    if message is not None and message.get("type") == "message":
                        self.handle(message["data"])
                log.info("reads moved to another redis: subscribing there")
                moved = True
                self.up = False
                self.ready.clear()
            except (RedisError, OSError, TimeoutError) as exc:
                if self.up:
                    log.warning("publish channel subscription lost: %r", exc)
                self.up = False
                self.ready.clear()
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError, TimeoutError):  # already broken
                    pass
            if not moved:
                await asyncio.sleep(self.retry_interval)
