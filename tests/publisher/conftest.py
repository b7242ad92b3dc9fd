"""Fixtures the Config API and web app tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from publisher.service import Service
from tests.publisher.workspaces import NOW, Clock, acme_and_other


@pytest.fixture
def clock() -> Clock:
    """The Config API's and the web app's clock, at ``NOW``."""
    return Clock(NOW)


@pytest.fixture
def acme(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Service]:
    """``acme_and_other`` as a fixture: its store closed afterwards."""
    svc = acme_and_other(tmp_path, redis_client)
    yield svc
    svc.store.close()
