"""The publisher's Redis client: ``REDIS_URL``'s server, or the primary Redis Sentinel names.

With ``PUBLISHER_REDIS_SENTINELS`` the client is redis-py's ``Sentinel.master_for``: each new
connection asks the Sentinels for the primary of ``PUBLISHER_REDIS_SENTINEL_SERVICE``, and a
connection to a server that is no longer the primary (``READONLY``) is dropped, so after a
failover the next write reaches the promoted replica. What the failover cost is repaired by
the same comparison that follows a Redis restart (publisher/retry.py): the promoted replica has
another ``run_id``, so ``serve`` compares every source with it and publishes what it lacks —
writes made during the failover (pending) and the ones the old primary took but had not
replicated yet. ``REDIS_URL`` gives the password, database and options; its host and port are
not used.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import Sentinel

from edge.redis_url import masked_url, parse_sentinels
from publisher.settings import PublisherSettings

CONNECT_TIMEOUT = 2.0  # at most, for a server and a Sentinel alike


def make_client(settings: PublisherSettings) -> redis.Redis:
    """A sync client with the publisher's timeouts, to the server ``settings`` name."""
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": min(CONNECT_TIMEOUT, settings.redis_timeout),
    }
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **timeouts)
    sentinel = Sentinel(
        parse_sentinels(settings.redis_sentinels),
        sentinel_kwargs={"password": settings.redis_sentinel_password or None, **timeouts},
    )
    kwargs = dict(redis.ConnectionPool.from_url(settings.redis_url).connection_kwargs)
    for key in ("host", "port", "path", "connection_class"):
        kwargs.pop(key, None)
    kwargs.update(timeouts)
    client: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_service, redis_class=redis.Redis,
        ssl=settings.redis_url.startswith("rediss://"), **kwargs)
    return client


def describe(settings: PublisherSettings) -> str:
    """Where the publisher writes, for messages (no password)."""
    if settings.redis_sentinels:
        return (f"the primary of Sentinel service {settings.redis_sentinel_service!r} "
                f"({settings.redis_sentinels})")
    return masked_url(settings.redis_url)
