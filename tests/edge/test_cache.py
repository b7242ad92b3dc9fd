"""BundleCache against a real redis-server, with an injected clock and counted reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest
import redis
import redis.asyncio as aioredis

from edge import keyspace
from edge import store as store_module
from edge.cache import BundleCache, Unavailable
from edge.keyspace import Envelope, Stored
from edge.store import Store, StoreUnavailable
from tests.edge.helpers import ManualClock, document, publish, unpublish
from tests.services import free_port

pytestmark = pytest.mark.anyio


class CountingSource:
    """The real Store, counting pointer and version reads (and able to fail on demand)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pointers = 0
        self.envelopes = 0
        self.currents = 0  # one-round-trip reads (pointer and bytes)
        self.gate: anyio.Event | None = None  # when set, reads wait for it (to overlap misses)
        self.fail = False

    async def pointer(self, write_key: str) -> tuple[int, str] | None:
        self.pointers += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("test: redis down")
        return await self.store.pointer(write_key)

    async def stored(self, write_key: str, version: int) -> Stored | None:
        self.envelopes += 1
        return await self.store.stored(write_key, version)

    async def current(
        self, write_key: str
    ) -> tuple[tuple[int, str], Stored | None] | None:
        """One round trip that reads the pointer and, when there is one, the version."""
        self.pointers += 1
        self.currents += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("test: redis down")
        found = await self.store.current(write_key)
        if found is not None and found[1] is not None:
            self.envelopes += 1
        return found


@pytest.fixture(params=["pipe", "client"])
async def source(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[CountingSource]:
    """Both ways the store reads: its pipelined connection, and redis-py (TLS URLs)."""
    client = aioredis.Redis.from_url(redis_url)
    store = Store(client, pipelined=request.param == "pipe")
    assert (store.pipe is not None) == (request.param == "pipe")
    yield CountingSource(store)
    await store.aclose()
    await client.aclose()


def stored(env: Envelope) -> Stored:
    """What the edge reads of a published version."""
    return Stored(env.write_key, env.version, env.etag, env.published_at, env.gzip)


def make_cache(source: CountingSource, clock: ManualClock, **overrides: float) -> BundleCache:
    options: dict[str, float] = {
        "refresh_interval": 30.0, "max_entries": 100, "negative_ttl": 5.0,
        "negative_max_entries": 10, "retry_interval": 1.0,
    }
    options.update(overrides)
    return BundleCache(
        source, cache_control="public, max-age=60", clock=clock,
        refresh_interval=options["refresh_interval"], max_entries=int(options["max_entries"]),
        negative_ttl=options["negative_ttl"],
        negative_max_entries=int(options["negative_max_entries"]),
        retry_interval=options["retry_interval"],
    )


async def test_hit_within_refresh_interval_reads_nothing(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Within the refresh interval a held bundle is served without any Redis read."""
    env = publish(redis_client, "wk1")
    clock = ManualClock()
    cache = make_cache(source, clock)

    first = await cache.get("wk1")
    clock.advance(29.9)
    second = await cache.get("wk1")

    assert first is second
    assert first is not None and first.gzip == env.gzip and first.identity()[1] == env.json
    assert (source.pointers, source.envelopes) == (1, 1)
    assert cache.metrics.cache_hits == 1


async def test_refresh_reads_only_the_pointer_when_unchanged(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """After the interval only the pointer is re-read, and the same entry is re-verified."""
    publish(redis_client, "wk1")
    clock = ManualClock()
    cache = make_cache(source, clock)
    first = await cache.get("wk1")

    clock.advance(30.0)
    again = await cache.get("wk1")

    assert again is first
    assert again is not None and again.checked_at == clock.now and again.age(clock.now) == 0
    assert (source.pointers, source.envelopes) == (2, 1)


async def test_refresh_fetches_bytes_when_version_changed(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A moved pointer makes the refresh fetch the new version's bytes."""
    publish(redis_client, "wk1")
    clock = ManualClock()
    cache = make_cache(source, clock)
    await cache.get("wk1")
    new = publish(redis_client, "wk1", document("wk1", Amplitude={"apiKey": "x"}), version=2)

    clock.advance(10)
    still_old = await cache.get("wk1")
    clock.advance(20)
    fresh = await cache.get("wk1")

    assert still_old is not None and still_old.version == 1
    assert fresh is not None and (fresh.version, fresh.gzip) == (2, new.gzip)
    assert (source.pointers, source.envelopes) == (2, 2)


async def test_concurrent_misses_share_one_read(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Fifty concurrent misses of one key cause one pointer read and one envelope read."""
    publish(redis_client, "wk1")
    cache = make_cache(source, ManualClock())
    source.gate = anyio.Event()
    results: list[object] = []

    async def fetch() -> None:
        results.append(await cache.get("wk1"))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(fetch)
        await anyio.wait_all_tasks_blocked()
        source.gate.set()

    assert len(results) == 50 and len({id(r) for r in results}) == 1
    assert (source.pointers, source.envelopes) == (1, 1)


async def test_concurrent_refreshes_share_one_read(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Concurrent requests for an expired entry cause a single pointer re-read."""
    publish(redis_client, "wk1")
    clock = ManualClock()
    cache = make_cache(source, clock)
    await cache.get("wk1")
    clock.advance(31)
    source.gate = anyio.Event()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(cache.get, "wk1")
        await anyio.wait_all_tasks_blocked()
        source.gate.set()

    assert source.pointers == 2


async def test_unknown_key_is_cached_negatively_for_its_ttl(source: CountingSource) -> None:
    """An unknown key is read once, answered from memory until its TTL, then read again."""
    clock = ManualClock()
    cache = make_cache(source, clock, negative_ttl=5.0)

    assert await cache.get("nope") is None
    clock.advance(4.9)
    assert await cache.get("nope") is None
    assert source.pointers == 1
    assert cache.not_found_age("nope") == 5
    clock.advance(0.2)
    assert await cache.get("nope") is None
    assert source.pointers == 2


async def test_negative_cache_is_bounded_and_spares_bundles(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A flood of bogus keys stays within its own bound and never evicts a real bundle."""
    publish(redis_client, "real")
    clock = ManualClock()
    cache = make_cache(source, clock, max_entries=2, negative_max_entries=10)
    await cache.get("real")

    for i in range(500):
        assert await cache.get(f"bogus{i}") is None

    assert cache.negative_count() == 10
    assert len(cache) == 1
    reads = source.pointers
    assert await cache.get("real") is not None
    assert source.pointers == reads  # still a hit


async def test_bundle_cache_is_bounded(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """At most max_entries bundles are held; the least recently verified goes first."""
    for wk in ("a", "b", "c"):
        publish(redis_client, wk)
    clock = ManualClock()
    cache = make_cache(source, clock, max_entries=2)
    await cache.get("a")
    await cache.get("b")

    clock.advance(31.0)
    await cache.get("a")  # re-verified against Redis: now the most recent
    await cache.get("c")

    assert sorted(e.write_key for e in cache.entries()) == ["a", "c"]


async def test_hits_between_verifications_do_not_reorder(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A plain hit costs no bookkeeping: order moves only when an entry is (re)verified."""
    for wk in ("a", "b", "c"):
        publish(redis_client, wk)
    cache = make_cache(source, ManualClock(), max_entries=2)

    for wk in ("a", "b", "a", "c"):
        await cache.get(wk)

    assert sorted(e.write_key for e in cache.entries()) == ["b", "c"]


async def test_publish_of_a_negatively_cached_key_is_seen_after_ttl(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A first publish becomes visible once the negative entry expires."""
    clock = ManualClock()
    cache = make_cache(source, clock)
    assert await cache.get("late") is None
    publish(redis_client, "late")

    clock.advance(5.0)
    entry = await cache.get("late")

    assert entry is not None and entry.version == 1


async def test_deleted_source_becomes_unknown_after_refresh(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """When the pointer disappears the held bundle is dropped at the next refresh."""
    publish(redis_client, "gone")
    clock = ManualClock()
    cache = make_cache(source, clock)
    await cache.get("gone")
    unpublish(redis_client, "gone")

    clock.advance(30)

    assert await cache.get("gone") is None
    assert len(cache) == 0


async def test_failure_serves_stale_and_backs_off(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A failed refresh serves the held copy marked stale and skips Redis for retry_interval."""
    publish(redis_client, "wk1")
    clock = ManualClock()
    cache = make_cache(source, clock, retry_interval=1.0)
    await cache.get("wk1")
    source.fail = True
    clock.advance(31)

    stale = await cache.get("wk1")
    reads = source.pointers
    again = await cache.get("wk1")
    with pytest.raises(Unavailable):
        await cache.get("never-seen")

    assert stale is not None and stale.stale and again is stale
    assert source.pointers == reads  # backing off: no new read
    assert cache.metrics.stale_serves == 2 and cache.metrics.redis_errors == 1
    source.fail = False
    clock.advance(1.0)
    served = await cache.get("wk1")  # at once, stale: the re-check runs in the background
    assert served is not None and served.stale
    await cache.idle()
    recovered = await cache.get("wk1")
    assert recovered is not None and not recovered.stale


async def test_pruned_version_is_re_resolved(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """If the pointed-to hash vanished, the pointer is re-read once before giving up."""
    publish(redis_client, "wk1")
    redis_client.delete("sc:{wk1}:v:1")
    cache = make_cache(source, ManualClock())

    with pytest.raises(Unavailable):
        await cache.get("wk1")

    assert (source.pointers, source.envelopes) == (2, 2)


async def test_expire_rechecks_and_drops_negative_result(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """expire() (a publish message, instant mode) makes the next request re-check a key's copy
    and forgets its negative entry at once; a message naming the held version changes nothing."""
    publish(redis_client, "wk1")
    cache = make_cache(source, ManualClock())
    await cache.get("wk1")
    await cache.get("nope")
    publish(redis_client, "wk1", document("wk1", X={}), version=2)

    assert cache.expire("wk1", 1) is False
    assert cache.expire("wk1", 2) is True
    cache.expire("nope", 1)
    before = source.currents, source.pointers
    entry = await cache.get("wk1")

    assert entry is not None and entry.version == 2
    assert cache.negative_count() == 0
    # the replaced copy is re-read as a miss is: pointer and bytes in one round trip
    assert (source.currents, source.pointers) == (before[0] + 1, before[1] + 1)


async def test_expired_copy_is_served_stale_when_redis_fails(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A copy a publish message expired is kept: if Redis fails before the re-check, it is
    served stale instead of a 503."""
    publish(redis_client, "wk1")
    cache = make_cache(source, ManualClock())
    await cache.get("wk1")
    cache.expire("wk1", 2)
    source.fail = True

    entry = await cache.get("wk1")

    assert entry is not None and entry.stale and entry.version == 1


async def test_store_current_reads_pointer_and_bytes_in_one_call(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Store.current returns the pointer and the version it names (the gzip bytes and their
    metadata, not the JSON), or None for an unknown source."""
    env = publish(redis_client, "one-trip", version=7, published_at=1_700_000_123)

    found = await source.store.current("one-trip")
    missing = await source.store.current("never-published")

    assert found == ((7, env.etag), stored(env))
    assert missing is None


async def test_store_current_reports_a_pruned_version_as_missing_bytes(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """When the pointer names a version whose hash is gone, current gives the pointer alone."""
    publish(redis_client, "pruned")
    version, _ = keyspace.decode_pointer(redis_client.get(keyspace.current_key("pruned")))
    redis_client.delete(keyspace.version_key("pruned", version))

    found = await source.store.current("pruned")

    assert found is not None and found[0][0] == version and found[1] is None


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_cold_misses_share_one_redis_call(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Misses of one event-loop turn are answered by one script call, each with its own
    result: found, unknown, pruned — and more than a batch splits into several calls."""
    found_env = publish(redis_client, "batch-found")
    publish(redis_client, "batch-pruned", version=4)
    redis_client.delete(keyspace.version_key("batch-pruned", 4))
    await source.store.current("warm-up")  # loads the script (EVAL, then EVALSHA)
    before = _evalsha_calls(redis_client)

    found, unknown, pruned = await asyncio.gather(
        source.store.current("batch-found"), source.store.current("batch-unknown"),
        source.store.current("batch-pruned"))
    middle = _evalsha_calls(redis_client)
    many = await asyncio.gather(*(source.store.current(f"many-{i}")
                                  for i in range(store_module.MAX_BATCH + 1)))

    assert found == ((1, found_env.etag), stored(found_env))
    assert unknown is None
    assert pruned is not None and pruned[0][0] == 4 and pruned[1] is None
    assert middle - before == 1
    assert many == [None] * (store_module.MAX_BATCH + 1)
    assert _evalsha_calls(redis_client) - middle == 2


async def test_a_failed_batch_fails_each_waiting_miss() -> None:
    """Redis down: every miss of the batch gets StoreUnavailable, none waits forever."""
    port = free_port()  # nothing listens here
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    store = Store(client)
    try:
        results = await asyncio.gather(*(store.current(f"down-{i}") for i in range(3)),
                                       return_exceptions=True)
    finally:
        await store.aclose()
        await client.aclose()

    assert all(isinstance(r, StoreUnavailable) for r in results), results


async def test_concurrent_pointer_checks_share_one_mget(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Refreshes of one event-loop turn read their pointers with one MGET; a malformed
    pointer fails only its own key."""
    published = publish(redis_client, "ptr-a", version=3)
    redis_client.set(keyspace.current_key("ptr-bad"), b"not-a-pointer")
    before = int(redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))

    a, missing, bad = await asyncio.gather(
        source.store.pointer("ptr-a"), source.store.pointer("ptr-none"),
        source.store.pointer("ptr-bad"), return_exceptions=True)

    after = int(redis_client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))
    assert a == (3, published.etag)
    assert missing is None
    assert isinstance(bad, StoreUnavailable) and "ptr-bad" in str(bad)
    assert after - before == 1


async def test_a_cancelled_waiter_does_not_cancel_the_shared_read(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """The first caller reads; if it is cancelled (shutdown) the others get an answer
    (Redis treated as failed: 503 for a key never held), and a cancelled follower changes
    nothing for the rest."""
    publish(redis_client, "wk1")
    cache = make_cache(source, ManualClock())
    source.gate = anyio.Event()

    leader = asyncio.ensure_future(cache.get("wk1"))
    follower = asyncio.ensure_future(cache.get("wk1"))
    await anyio.wait_all_tasks_blocked()
    leader.cancel()
    source.gate.set()
    outcome = await asyncio.gather(leader, follower, return_exceptions=True)

    assert isinstance(outcome[0], asyncio.CancelledError)
    assert isinstance(outcome[1], Unavailable)

    source.gate = anyio.Event()
    cache = make_cache(source, ManualClock())  # a new one: the first backed off after failing
    first, dropped, last = (asyncio.ensure_future(cache.get("wk1")) for _ in range(3))
    await anyio.wait_all_tasks_blocked()
    dropped.cancel()
    source.gate.set()
    got = await asyncio.gather(first, dropped, last, return_exceptions=True)

    assert isinstance(got[1], asyncio.CancelledError)
    assert got[0] is got[2] and getattr(got[0], "version", None) == 1


async def test_a_malformed_etag_in_redis_is_refused_not_served(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """Envelope bytes go into response headers unchecked: a version whose ETag could split
    a response (CR/LF) is treated as unreadable — 503 for a key never held — not served."""
    publish(redis_client, "bad-etag", version=2)
    redis_client.hset(keyspace.version_key("bad-etag", 2), keyspace.F_ETAG,
                      b'"x"\r\nset-cookie: a=b')
    cache = make_cache(source, ManualClock())

    with pytest.raises(Unavailable):
        await cache.get("bad-etag")


@pytest.mark.parametrize("published_at", [b"253402300800", b"99999999999999999", b"-1", b"soon"])
async def test_one_corrupt_source_stops_only_itself(
    source: CountingSource, redis_client: redis.Redis, published_at: bytes
) -> None:
    """A version whose publish time cannot be a Last-Modified date (year 10000, negative, not
    a number) is that source's problem: 503 for it, read again only after retry_interval,
    while every other source is read and served as usual; a held copy is served stale."""
    publish(redis_client, "good")
    publish(redis_client, "held")
    publish(redis_client, "bad", version=2)
    redis_client.hset(keyspace.version_key("bad", 2), keyspace.F_PUBLISHED_AT, published_at)
    clock = ManualClock()
    cache = make_cache(source, clock, retry_interval=1.0)
    assert await cache.get("held") is not None
    publish(redis_client, "held", version=3)
    redis_client.hset(keyspace.version_key("held", 3), keyspace.F_PUBLISHED_AT, published_at)
    clock.advance(31)  # "held" is due for its check

    with pytest.raises(Unavailable):
        await cache.get("bad")
    reads = source.pointers
    with pytest.raises(Unavailable):
        await cache.get("bad")
    good = await cache.get("good")
    held = await cache.get("held")

    assert source.pointers == reads + 2  # "bad" not read again; "good" and "held" were
    assert good is not None and not good.stale and not cache.backing_off
    assert held is not None and held.stale and held.version == 1
    assert cache.metrics.redis_errors == 2
    publish(redis_client, "bad", version=4)
    clock.advance(1.0)
    fixed = await cache.get("bad")
    assert fixed is not None and fixed.version == 4


async def test_expire_forgets_a_corrupt_source(
    source: CountingSource, redis_client: redis.Redis
) -> None:
    """A publish message (expire) for a source found corrupt lets the next request read it."""
    publish(redis_client, "bad")
    redis_client.hset(keyspace.version_key("bad", 1), keyspace.F_PUBLISHED_AT, b"-5")
    cache = make_cache(source, ManualClock(), retry_interval=60.0)
    with pytest.raises(Unavailable):
        await cache.get("bad")
    publish(redis_client, "bad", version=2)

    cache.expire("bad", 2)
    entry = await cache.get("bad")

    assert entry is not None and entry.version == 2
