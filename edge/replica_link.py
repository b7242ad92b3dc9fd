"""Whether the Redis the edge reads is a replica cut off from its primary.

A replica that lost its primary keeps answering with what it last received
(``replica-serve-stale-data yes``, Redis's default): every read succeeds, and nothing in the
replies says they are old. So each worker asks the server it reads, every
``EDGE_REDIS_RETRY_INTERVAL``, for ``INFO replication`` (one short command, on the connection
the reads use: it follows the server Sentinel names) and tells the cache
(``BundleCache.set_replica_link``), which marks its answers stale while the link is down
(edge/cache.py).

The link is down when the replica says so (``master_link_status:down``: the primary's
connection closed or timed out, or a sync is under way) or when nothing came from the primary
for over twice its ping period plus a second (``master_last_io_seconds_ago``): a frozen
primary keeps its connection open, and the replica calls it down only after ``repl-timeout``
(60 s by default). The ping period is the replica's own ``repl-ping-replica-period`` (10 s when
``CONFIG`` is not allowed): a primary and its replicas are configured alike, since Sentinel
makes primaries of replicas. A primary (``role:master``) has no link: ``None``.
"""

from __future__ import annotations

import asyncio
import logging

from edge.cache import BundleCache
from edge.store import Store, StoreUnavailable

log = logging.getLogger("edge.replica_link")

DEFAULT_PING_PERIOD = 10.0  # Redis's default repl-ping-replica-period, in seconds


def link_up(info: dict[str, str], ping_period: float = DEFAULT_PING_PERIOD) -> bool | None:
    """From ``INFO replication`` fields: ``None`` for a primary, else whether the replica's
    link to its primary is up (see the module docstring)."""
    if info.get("role") != "slave":
        return None
    if info.get("master_link_status") != "up":
        return False
    try:
        silent = float(info.get("master_last_io_seconds_ago", "0"))
    except ValueError:
        return True
    return silent <= 2 * ping_period + 1


class ReplicaLink:
    """Follows the replication state of the server ``store`` reads, for ``cache``."""

    def __init__(self, store: Store, cache: BundleCache, *, interval: float) -> None:
        self.store = store
        self.cache = cache
        self.interval = max(interval, 0.05)
        self.ping_period: float | None = None  # read once, from the first replica seen

    async def check(self) -> bool | None:
        """Read the state once and tell the cache; unchanged when the server cannot be read
        (the cache's own reads then say Redis is down)."""
        try:
            info = await self.store.replication()
        except StoreUnavailable:
            return self.cache.replica_link
        if info.get("role") == "slave" and self.ping_period is None:
            self.ping_period = await self._ping_period()
        up = link_up(info, self.ping_period or DEFAULT_PING_PERIOD)
        if up != self.cache.replica_link:
            self.cache.set_replica_link(up)
        return up

    async def _ping_period(self) -> float:
        try:
            value = await self.store.config("repl-ping-replica-period")
            return float(value) if value else DEFAULT_PING_PERIOD
        except (StoreUnavailable, ValueError):
            return DEFAULT_PING_PERIOD

    async def run(self) -> None:
        """Check every ``interval`` (not while the cache backs off from a failing Redis)."""
        while True:
            if not self.cache.backing_off:
                try:
                    await self.check()
                except Exception:  # a bug must not end the checks: logged, tried again
                    log.exception("checking the redis replication state failed")
            await asyncio.sleep(self.interval)
