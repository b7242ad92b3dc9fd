"""Session-wide real services and per-test isolation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from edge import keyspace
from tests.services import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (never the machine's shared one)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The private server's URL, flushed before each test, and marked loaded as a publisher
    marks a Redis it has brought in line with SQLite (``keyspace.LOADED_KEY``): an absent
    pointer is then a deleted source, 404."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.set(keyspace.LOADED_KEY, "0")
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
