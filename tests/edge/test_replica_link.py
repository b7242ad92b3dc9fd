"""A replica cut off from its primary, as the edge sees it: the replication state read from a
real replica (edge/replica_link.py), and the cache's answers while the link is down — stale-
marked, a source the replica lacks unavailable rather than unknown — and after it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from edge import keyspace
from edge.cache import BundleCache, Unavailable
from edge.replica_link import DEFAULT_PING_PERIOD, ReplicaLink, link_up
from edge.store import Store
from tests.edge.helpers import ManualClock, publish
from tests.services import RedisServer, free_port

pytestmark = pytest.mark.anyio


def test_link_state_from_info_replication() -> None:
    assert link_up({"role": "master", "connected_slaves": "2"}) is None
    assert link_up({"role": "slave", "master_link_status": "up",
                    "master_last_io_seconds_ago": "3"}) is True
    assert link_up({"role": "slave", "master_link_status": "down",
                    "master_last_io_seconds_ago": "-1"}) is False
    # nothing from the primary for over twice its ping period (a frozen primary): down
    assert link_up({"role": "slave", "master_link_status": "up",
                    "master_last_io_seconds_ago": "21"}, ping_period=10) is True
    assert link_up({"role": "slave", "master_link_status": "up",
                    "master_last_io_seconds_ago": "22"}, ping_period=10) is False
    assert link_up({"role": "slave", "master_link_status": "up",
                    "master_last_io_seconds_ago": "4"}, ping_period=1) is False


@pytest.fixture(scope="module")
def replica(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A replica of the session's Redis, its primary pinging every 3 s."""
    with RedisServer(args=["--replicaof", "127.0.0.1", str(redis_server.port),
                           "--repl-ping-replica-period", "3"]) as server:
        yield server


@pytest.fixture
def linked_replica(replica: RedisServer, redis_server: RedisServer,
                   redis_url: str) -> Iterator[RedisServer]:
    """The replica, linked to the (flushed, loaded) primary and holding its data."""
    with redis.Redis(port=replica.port) as client:
        client.replicaof("127.0.0.1", str(redis_server.port))
        deadline = time.monotonic() + 10
        while not (client.info("replication")["master_link_status"] == "up"
                   and client.exists(keyspace.LOADED_KEY)):
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.025)
    yield replica


def cut_off(replica: RedisServer) -> None:
    """Point the replica at a port nobody listens on: its link is down at once, and it keeps
    serving what it holds (``replica-serve-stale-data yes``)."""
    redis.Redis(port=replica.port).replicaof("127.0.0.1", str(free_port()))


@pytest.fixture
async def store_on() -> AsyncIterator[dict[str, Store]]:
    """The stores a test opens (``open_store``), closed after it."""
    made: dict[str, Store] = {}
    yield made
    for store in made.values():
        await store.aclose()
        await store.client.aclose()


def open_store(made: dict[str, Store], url: str, pipelined: bool) -> Store:
    """A store on ``url`` reading through its pipe, or through redis-py (TLS URLs)."""
    store = made[url] = Store(aioredis.Redis.from_url(url), pipelined=pipelined)
    return store


def make_cache(store: Store, clock: ManualClock) -> BundleCache:
    return BundleCache(store, cache_control="public, max-age=60", clock=clock,
                       refresh_interval=30.0, max_entries=100, negative_ttl=5.0,
                       negative_max_entries=10, retry_interval=1.0)


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipe", "client"])
async def test_replication_state_of_a_primary_and_a_replica(
        linked_replica: RedisServer, redis_url: str, pipelined: bool,
        store_on: dict[str, Store]) -> None:
    clock = ManualClock()
    primary = open_store(store_on, redis_url, pipelined)
    on_primary = ReplicaLink(primary, make_cache(primary, clock), interval=1)
    assert await on_primary.check() is None
    assert on_primary.cache.replica_link is None

    store = open_store(store_on, linked_replica.url, pipelined)
    cache = make_cache(store, clock)
    link = ReplicaLink(store, cache, interval=1)
    assert await link.check() is True
    assert link.ping_period == 3.0 != DEFAULT_PING_PERIOD  # the replica's own setting
    assert cache.replica_link is True
    cut_off(linked_replica)
    assert await link.check() is False
    assert cache.replica_link is False


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipe", "client"])
async def test_cut_off_replica_answers_stale_and_never_unknown(
        linked_replica: RedisServer, redis_server: RedisServer, redis_client: redis.Redis,
        pipelined: bool, store_on: dict[str, Store]) -> None:
    """While the link is down: the held bundle within its refresh interval, and one read from
    the replica meanwhile, are stale-marked; a source the replica lacks is unavailable (503),
    not unknown (404). Linked again: fresh answers, and an absent source is unknown again."""
    for wk in ("heldWriteKey", "laterWriteKey"):
        publish(redis_client, wk)
    assert redis_client.wait(1, 2000) == 1  # both writes reached the replica
    clock = ManualClock()
    store = open_store(store_on, linked_replica.url, pipelined)
    cache = make_cache(store, clock)
    link = ReplicaLink(store, cache, interval=1)
    assert await link.check() is True
    held = await cache.get("heldWriteKey")
    assert held is not None and not held.stale

    cut_off(linked_replica)
    assert await link.check() is False
    again = await cache.get("heldWriteKey")  # within its refresh interval
    assert again is held and again.stale
    later = await cache.get("laterWriteKey")
    assert later is not None and later.stale
    with pytest.raises(Unavailable):
        await cache.get("createdAfterTheCutWriteKey")
    clock.advance(31)  # a re-check against the cut-off replica: answered stale, at once
    assert (await cache.get("heldWriteKey")) is held and held.stale
    await cache.idle()
    assert (await cache.get("heldWriteKey")) is held and held.stale

    redis.Redis(port=linked_replica.port).replicaof("127.0.0.1", str(redis_server.port))
    deadline = time.monotonic() + 10
    while not await link.check():
        assert time.monotonic() < deadline, "the replica did not link again"
        await asyncio.sleep(0.025)
    assert cache.replica_link is True
    await cache.get("heldWriteKey")  # re-checks every held entry (missed publishes)
    await cache.idle()
    fresh = await cache.get("heldWriteKey")
    assert fresh is not None and not fresh.stale
    assert await cache.get("createdAfterTheCutWriteKey") is None
