"""The in-process bundle cache: hits cost a dict lookup, and no request for a held bundle waits
on Redis.

Each ``Entry`` holds a bundle's bytes with its response headers built once, when the entry is
filled. After ``refresh_interval`` the bundle is due for a re-check: the next request is
answered from the held copy at once and starts a background re-check (one per key at a time)
that reads only the small pointer and fetches bytes only when the version changed. The copy
is served unverified for at most ``recheck_grace`` past the interval — time for that re-check
to finish or fail — so the edge's propagation term is ``refresh_interval + recheck_grace``
(edge/propagation.py). A copy older than that (a key nobody asked for meanwhile) is re-checked
while its request waits, as a miss is; concurrent misses of one key share a single read.

When Redis fails, held entries are served at once, marked stale, and for ``retry_interval``
nobody asks Redis again; after it, a request for a held key still gets the stale copy at once
and its re-check runs in the background. So a hung Redis costs one timeout per interval to the
background reads, never to a request for a held key. A Redis that holds no ``sc:loaded``
(restarted empty, flushed, an empty replica promoted: edge/keyspace.py) counts as failing for a
key it does not hold: its held copy is served stale, and a key never seen is 503, never 404.

A replica cut off from its primary (``replica-serve-stale-data yes``, Redis's default, keeps
answering what it last received; ``replica_link`` says so: edge/replica_link.py) is read as
usual, but every answer is marked stale — held copies and keys read from it alike — and a
source it holds no pointer for is not a deletion: it may have been created after the cut. Its
held copy is served stale, or 503, never 404, and it is asked again after ``retry_interval``.
When the link is back every held entry is re-checked (publishes made meanwhile were missed).

A source whose data is malformed (``StoreCorrupt``) is treated the same way on its own: its
held copy served stale, or 503, and Redis asked again after the interval — the other sources
are read as usual. Unknown keys are remembered in a separate, bounded TTL cache: a flood of
bogus keys can neither hammer Redis nor evict real bundles. All times come from the injected
clock.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, Union

from cachetools import TTLCache

from edge import http
from edge.entry import Entries, Entry
from edge.keyspace import Stored
from edge.metrics import Metrics
from edge.store import StoreCorrupt, StoreUnavailable

log = logging.getLogger("edge.cache")


class BundleSource(Protocol):
    """Where bundles come from: ``edge.store.Store`` (tests wrap it to count reads)."""

    async def pointer(self, write_key: str) -> tuple[int, str] | None: ...

    async def stored(self, write_key: str, version: int) -> Stored | None: ...

    async def current(
        self, write_key: str
    ) -> tuple[tuple[int, str], Stored | None] | None: ...


class Unavailable(Exception):
    """A key the edge does not hold while Redis cannot be reached: answer 503."""


class Unconfirmed(Exception):
    """A replica cut off from its primary holds no pointer for a source: the source may
    have been created after the cut, so the absence says nothing (503, never 404)."""


class _Miss(enum.Enum):
    UNAVAILABLE = "unavailable"


_Result = Union["Entry", _Miss, None]


@dataclass
class _Flight:
    done: asyncio.Future[_Result]  # the leader's result, for the others
    dirty: bool = field(default=False)


class BundleCache:
    def __init__(
        self,
        source: BundleSource,
        *,
        cache_control: str,
        clock: Callable[[], float],
        refresh_interval: float,
        max_entries: int,
        negative_ttl: float,
        negative_max_entries: int,
        retry_interval: float,
        recheck_grace: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.source = source
        self.cache_control = cache_control
        self.shared_200, self.shared_304 = http.shared_blocks(cache_control)
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.negative_ttl = negative_ttl
        self.retry_interval = retry_interval
        self.recheck_grace = recheck_grace
        self.metrics = metrics or Metrics()
        self._entries = Entries(max_entries)
        self._negative: TTLCache[str, float] = TTLCache(
            maxsize=negative_max_entries, ttl=max(negative_ttl, 1e-9), timer=clock
        )
        # sources whose stored data did not parse, not read again for retry_interval
        self._corrupt: TTLCache[str, float] = TTLCache(
            maxsize=negative_max_entries, ttl=max(retry_interval, 1e-9), timer=clock
        )
        self._flights: dict[str, _Flight] = {}
        self._background: set[asyncio.Task[_Result]] = set()  # re-checks nobody waits for
        self._retry_at = -math.inf
        self.redis_ok_at: float | None = None  # clock time of the last successful read
        self.redis_up = False
        # the link of the replica read to its primary: None for a primary (or not known yet)
        self.replica_link: bool | None = None
        self._cut_off = False  # replica_link is False: every answer stale-marked

    # -- the request path ----------------------------------------------------------------

    async def get(self, write_key: str) -> Entry | None:
        """The bundle to serve, ``None`` for an unknown key; raises ``Unavailable``.

        Waits on Redis only for a key not held, or held past ``refresh_interval +
        recheck_grace`` (or replaced, in instant mode) while Redis is up."""
        hit = self.fresh(write_key)
        if hit is not None:
            return hit
        entry = self._entries.get(write_key)
        if entry is None:
            if write_key in self._negative:
                self.metrics.negative_hits += 1
                return None
            self.metrics.cache_misses += 1
            if self.clock() < self._retry_at or write_key in self._corrupt:
                self.metrics.unavailable += 1
                raise Unavailable(write_key)
        result = await self._join(write_key)
        if result is _Miss.UNAVAILABLE:
            if entry is not None:
                return self._serve_stale(entry)
            held = self._entries.get(write_key)  # filled meanwhile by an earlier flight?
            if held is not None:
                return self._serve_stale(held)
            self.metrics.unavailable += 1
            raise Unavailable(write_key)
        if result is not None and self._cut_off:
            return self._serve_stale(result)
        return result

    def fresh(self, write_key: str) -> Entry | None:
        """The held bundle when it may be served without waiting on Redis (counted), starting
        its background re-check when one is due; ``None`` otherwise: the caller then takes the
        async path, ``get``."""
        entry = self._entries.get(write_key)
        if entry is None:
            return None
        now = self.clock()
        if now < entry.fresh_until:
            if self._cut_off:
                return self._serve_stale(entry)
            self.metrics.cache_hits += 1
            return entry
        if self._cut_off and self.redis_up and now >= self._retry_at:
            if write_key not in self._corrupt:
                self._recheck(write_key)
            return self._serve_stale(entry)
        if not self.redis_up or now < self._retry_at or write_key in self._corrupt:
            # Redis failing (or this source's data): the held copy, stale, at once
            if now >= self._retry_at and write_key not in self._corrupt:
                self._recheck(write_key)
            return self._serve_stale(entry)
        if not entry.replaced and now < entry.fresh_until + self.recheck_grace:
            self._recheck(write_key)
            self.metrics.cache_hits += 1
            return entry
        return None  # too old to serve unverified, or known replaced: the request waits

    def _recheck(self, write_key: str) -> None:
        """Re-check a held key in the background (single flight: none if one runs)."""
        if write_key in self._flights:
            return
        task = asyncio.get_running_loop().create_task(self._join(write_key))
        self._background.add(task)
        task.add_done_callback(self._rechecked)

    async def idle(self) -> None:
        """Wait until no background re-check runs (tests await it to see its outcome)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _rechecked(self, task: asyncio.Task[_Result]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background re-check failed", exc_info=task.exception())

    def not_found_age(self, write_key: str) -> int:
        """Seconds since an unknown key was last confirmed unknown (``Age`` of its 404)."""
        checked = self._negative.get(write_key)
        return 0 if checked is None else max(0, math.ceil(self.clock() - checked))

    def _serve_stale(self, entry: Entry) -> Entry:
        entry.stale = True
        self.metrics.stale_serves += 1
        return entry

    # -- single flight ---------------------------------------------------------------------

    async def _join(self, write_key: str) -> _Result:
        """The first caller for a key reads (in its own task: no task per miss); callers
        arriving meanwhile wait for its result."""
        flight = self._flights.get(write_key)
        if flight is not None:
            # shield: one waiter cancelled must not cancel the result the others wait for
            return await asyncio.shield(flight.done)
        done: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        self._flights[write_key] = _Flight(done)
        try:
            result = await self._load(write_key)
        except BaseException:  # the leader failed or was cancelled (shutdown): the others
            if not done.done():  # answer as if Redis had failed, and nobody waits forever
                done.set_result(_Miss.UNAVAILABLE)
            raise
        done.set_result(result)
        return result

    async def _load(self, write_key: str) -> _Result:
        try:
            for _ in range(2):  # a second read only when instant mode expired us mid-flight
                result = await self._read(write_key)
                flight = self._flights.get(write_key)
                if flight is None or not flight.dirty:
                    break
                flight.dirty = False
            return result
        finally:
            self._flights.pop(write_key, None)

    async def _read(self, write_key: str) -> _Result:
        now = self.clock()  # verification instant = before the read: Age errs on the old side
        entry = self._entries.get(write_key)
        try:
            # a cold miss, or a copy a publish replaced, reads pointer and bytes in one round trip
            if entry is None or entry.replaced:
                found = await self.source.current(write_key)
                pointer = None if found is None else found[0]
                if found is not None and found[1] is not None:
                    return self._fill(write_key, found[1], now)
            else:  # a refresh reads only the small pointer
                pointer = await self.source.pointer(write_key)
                self.metrics.cache_refreshes += 1
                if pointer is None:  # deleted? (or a key of another type: current tells)
                    found = await self.source.current(write_key)
                    pointer = None if found is None else found[0]
                    if found is not None and found[1] is not None:
                        return self._fill(write_key, found[1], now)
            for attempt in range(2):  # the version may be pruned between pointer and hash reads
                if pointer is None and self._cut_off:
                    raise Unconfirmed(f"no pointer for {write_key!r} on a replica cut off from "
                                      "its primary")
                if pointer is None:
                    self._entries.pop(write_key, None)
                    if self.negative_ttl > 0:
                        self._negative[write_key] = now
                    self._redis_ok(now)
                    return None
                version, etag = pointer
                if entry is not None and entry.version == version and entry.etag == etag:
                    entry.checked_at, entry.fresh_until = now, now + self.refresh_interval
                    entry.stale = entry.replaced = False
                    self._entries.put(write_key, entry)
                    self._redis_ok(now)
                    return entry
                stored = await self.source.stored(write_key, version)
                if stored is not None:
                    return self._fill(write_key, stored, now)
                if attempt == 0:
                    pointer = await self.source.pointer(write_key)
            raise StoreCorrupt(f"pointer of {write_key!r} names a missing version")
        except (StoreCorrupt, Unconfirmed) as exc:
            if write_key not in self._corrupt:  # logged once per retry interval
                log.warning("%s; serving its held copy or 503 for %gs", exc,
                            self.retry_interval)
            self._corrupt[write_key] = now
            if isinstance(exc, StoreCorrupt):
                self.metrics.redis_errors += 1
            return _Miss.UNAVAILABLE
        except StoreUnavailable as exc:
            self._redis_failed(exc)
            return _Miss.UNAVAILABLE

    def _fill(self, write_key: str, stored: Stored, now: float) -> Entry:
        """Hold a newly read version (headers built once, here) and forget any 'unknown'."""
        fresh = Entry.build(stored, now=now, refresh=self.refresh_interval)
        self._entries.put(write_key, fresh)
        self._negative.pop(write_key, None)
        self._redis_ok(now)
        return fresh

    def _redis_ok(self, now: float) -> None:
        if not self.redis_up and self.redis_ok_at is not None:
            log.warning("redis reachable again; refreshing held bundles as they are requested")
        self.redis_ok_at = now
        self.redis_up = True

    def _redis_failed(self, exc: Exception) -> None:
        if self.redis_up or self.redis_ok_at is None:
            log.warning("redis unavailable (%s); serving %d held bundles as stale, "
                        "retrying every %gs", exc, len(self._entries), self.retry_interval)
        self.metrics.redis_errors += 1
        self.redis_up = False
        self._retry_at = self.clock() + self.retry_interval

    # -- instant mode and introspection ----------------------------------------------------

    def expire(self, write_key: str, version: int | None = None) -> bool:
        """A publish message named ``write_key`` (instant mode): its next request re-checks it
        against Redis, and its held copy stays to be served stale should Redis fail by then
        (dropping it would turn an outage right after a publish into 503s). Its negative and
        corrupt marks go at once. False when no copy is held, or the held one is ``version``.
        """
        flight = self._flights.get(write_key)
        if flight is not None:
            flight.dirty = True
        self._negative.pop(write_key, None)
        self._corrupt.pop(write_key, None)
        entry = self._entries.get(write_key)
        if entry is None or entry.version == version:
            return False
        entry.fresh_until, entry.replaced = -math.inf, True
        return True

    def expire_all(self) -> None:
        """Make every held entry re-check its pointer on next use (missed publish messages):
        in the background, served meanwhile for at most ``recheck_grace``."""
        now = self.clock()
        for entry in self._entries.values():
            entry.fresh_until = min(entry.fresh_until, now)
        self._negative.clear()
        self._corrupt.clear()

    def set_replica_link(self, up: bool | None) -> None:
        """The link of the replica read to its primary: ``False`` cut off, ``True`` linked,
        ``None`` the server is a primary (edge/replica_link.py)."""
        was = self._cut_off
        self.replica_link = up
        self._cut_off = up is False
        if self._cut_off and not was:
            log.warning("the redis replica read lost its primary; serving what it holds as "
                        "stale")
        elif was and not self._cut_off:
            log.warning("the redis replica read is %s; re-checking held bundles",
                        "linked to its primary again" if up else "a primary now")
            self._corrupt.clear()
            self.expire_all()

    def mark_redis_ok(self) -> None:
        self._redis_ok(self.clock())

    def mark_redis_error(self, exc: Exception) -> None:
        self._redis_failed(exc)

    @property
    def backing_off(self) -> bool:
        return self.clock() < self._retry_at

    def __len__(self) -> int:
        return len(self._entries)

    def negative_count(self) -> int:
        return len(self._negative)

    def entries(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))
