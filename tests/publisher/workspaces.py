"""The test workspaces and clock the Config API and web app tests share."""

from __future__ import annotations

from pathlib import Path

import redis

from publisher.core.catalog import default_catalog
from publisher.core.rules import RuleLimits
from publisher.publish import RedisPublisher
from publisher.service import Service
from publisher.store import Store

NOW = 1_800_000_000.0


class Clock:
    """A settable Unix clock (rate limits, the webhook window, session expiry)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def acme_and_other(tmp_path: Path, redis_client: redis.Redis) -> Service:
    """A Service on a new database in ``tmp_path`` with two workspaces, ``acme`` and
    ``other``, at most 3 cloud-mode instances per destination; the caller closes its store."""
    store = Store.open(str(tmp_path / "publisher.db"))
    svc = Service(store, default_catalog(), RedisPublisher(redis_client),
                  limits=RuleLimits(max_cloud_instances=3), propagation_seconds=1800)
    svc.create_workspace("acme", "Acme Inc")
    svc.create_workspace("other", "Other Co")
    return svc

