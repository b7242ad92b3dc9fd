"""``sc:loaded``: the publisher marks a Redis it has found holding every source SQLite has
(edge/keyspace.py), and only then — serve's check, ``republish --all``, ``publish --all``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from edge import keyspace
from publisher.core.catalog import default_catalog
from publisher.core.model import Instance, Source
from publisher.publish import RedisPublisher
from publisher.retry import publish_pending
from publisher.service import Service
from publisher.store import Store

NOW = 1_700_000_000


@pytest.fixture
def service(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Service]:
    with Store.open(str(tmp_path / "config.db")) as store:
        yield Service(store, default_catalog(), RedisPublisher(redis_client), clock=lambda: NOW)


def sources(service: Service, count: int) -> list[Source]:
    ws = service.store.create_workspace("acme", "Acme")
    made = []
    for n in range(count):
        src = service.store.create_source(ws.id, f"site-{n}", f"Site {n}", "web",
                                          write_key=f"acmeSiteWriteKey{n:04d}")
        service.store.replace_instances(src.id, [Instance(
            id="amp", catalog_slug="amplitude", display_name="Amplitude",
            connection_mode="DEVICE", enabled=True, settings={"apiKey": f"key-{n}"})])
        service.publish(src)
        made.append(src)
    return made


def served(client: redis.Redis, src: Source) -> int | None:
    pointer = client.get(keyspace.current_key(src.write_key))
    return None if pointer is None else keyspace.decode_pointer(pointer)[0]


def wait_for(done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll what the background loop makes true (bounded; no timing assertion)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_loop(service: Service, until: Callable[[], bool], what: str,
             between: Callable[[], None] | None = None) -> None:
    """Run serve's retry loop (0.02 s interval) until ``until()``; ``between`` runs once the
    loop has set the marker a first time."""
    async def main() -> None:
        task = asyncio.create_task(publish_pending(service, 0.02))
        try:
            if between is not None:
                await asyncio.to_thread(wait_for, lambda: loaded_at(service) is not None,
                                        "the first marker")
                between()
            await asyncio.to_thread(wait_for, until, what)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def loaded_at(service: Service) -> bytes | None:
    assert service.publisher is not None
    return service.publisher.client.get(keyspace.LOADED_KEY)  # type: ignore[no-any-return]


def test_serve_sets_the_marker_after_its_check_at_start(service: Service,
                                                        redis_client: redis.Redis) -> None:
    """A Redis without the marker gets it once serve's check at start found every source."""
    sources(service, 2)
    redis_client.delete(keyspace.LOADED_KEY)

    run_loop(service, lambda: loaded_at(service) is not None, "the marker")

    assert loaded_at(service) == str(NOW).encode()


def test_a_flushall_under_serve_is_republished_and_marked_again(
        service: Service, redis_client: redis.Redis) -> None:
    """FLUSHALL without a restart (same run_id): serve sees sc:loaded gone, compares every
    source with Redis, republishes them all, then sets the marker again."""
    made = sources(service, 3)
    redis_client.delete(keyspace.LOADED_KEY)

    def flush() -> None:
        redis_client.flushall()

    run_loop(service, lambda: loaded_at(service) is not None
             and all(served(redis_client, src) == 1 for src in made),
             "every source republished and the marker set", between=flush)

    assert [served(redis_client, src) for src in made] == [1, 1, 1]
    assert loaded_at(service) == str(NOW).encode()
    assert not service.pending


def test_republish_all_sets_the_marker(service: Service, redis_client: redis.Redis) -> None:
    """republish --all that Redis never failed marks Redis loaded."""
    made = sources(service, 3)
    redis_client.flushall()

    results = list(service.republish_all(batch=2))

    assert not any(r.pending for r in results)
    assert [served(redis_client, src) for src in made] == [1, 1, 1]
    assert loaded_at(service) == str(NOW).encode()


def test_a_redis_failure_mid_republish_does_not_set_the_marker(
        service: Service, redis_client: redis.Redis) -> None:
    """Redis failing on republish's second page: the run leaves sources pending and does not
    mark Redis loaded; a run without a failure then does."""
    sources(service, 3)
    redis_client.flushall()
    assert service.publisher is not None
    real, pages = service.publisher.write_many, []

    def fails_on_page_two(items: Any, **kwargs: Any) -> int:
        pages.append(1)
        if len(pages) == 2:
            raise redis.ConnectionError("connection reset")
        return real(items, **kwargs)

    service.publisher.write_many = fails_on_page_two  # type: ignore[method-assign]
    failed = list(service.republish_all(batch=1))
    marker_after_failure = loaded_at(service)
    service.publisher.write_many = real  # type: ignore[method-assign]
    list(service.republish_all(batch=1))

    assert [r.pending for r in failed] == [False, True, True]
    assert marker_after_failure is None
    assert loaded_at(service) == str(NOW).encode()


def test_publish_all_restores_what_redis_lacks_and_sets_the_marker(
        service: Service, redis_client: redis.Redis) -> None:
    """publish --all compares the sources it leaves unchanged with Redis too: after a flush it
    publishes them again, then marks Redis loaded."""
    made = sources(service, 2)
    redis_client.flushall()

    results = list(service.publish_all())

    assert [(r is not None and r.changed, why) for _, r, why in results] == [(False, "")] * 2
    assert [served(redis_client, src) for src in made] == [1, 1]
    assert loaded_at(service) == str(NOW).encode()


def test_publish_all_with_redis_down_does_not_set_the_marker(
        service: Service, redis_client: redis.Redis) -> None:
    """A publish --all whose Redis writes fail leaves the marker unset."""
    sources(service, 2)
    redis_client.delete(keyspace.LOADED_KEY)
    service.compile_options = replace(service.compile_options, api_host="events.example.com/v1")
    assert service.publisher is not None

    def down(items: Any, **_: Any) -> int:
        raise redis.ConnectionError("refused")

    service.publisher.write_many = down  # type: ignore[method-assign]
    results = list(service.publish_all())

    assert all(r is not None and r.pending for _, r, _ in results)
    assert loaded_at(service) is None


def test_a_flush_during_the_check_leaves_redis_unmarked(redis_client: redis.Redis) -> None:
    """The marker is set only if nothing flushed Redis since the comparison began: a
    comparison that found every source of a Redis flushed meanwhile proves nothing."""
    publisher = RedisPublisher(redis_client)
    redis_client.delete(keyspace.LOADED_KEY)
    check = publisher.begin_check()
    redis_client.flushall()

    assert publisher.mark_loaded(check, NOW) is False
    assert not publisher.loaded()
    again = publisher.begin_check()
    assert publisher.mark_loaded(again, NOW) is True and publisher.loaded()
    assert redis_client.exists(again) == 0


def test_publish_all_whose_comparison_fails_does_not_set_the_marker(
        service: Service, redis_client: redis.Redis) -> None:
    """publish --all whose comparison of a page of unchanged sources with Redis fails leaves
    the marker unset, as every other Redis failure in the run does: that page was never
    compared, though it had no new version to write."""
    sources(service, 2)
    redis_client.delete(keyspace.LOADED_KEY)
    assert service.publisher is not None
    real, calls = service.publisher.currents, []

    def fails_once(write_keys: Any) -> Any:
        calls.append(write_keys)
        if len(calls) == 1:
            raise redis.ConnectionError("connection reset")
        return real(write_keys)

    service.publisher.currents = fails_once  # type: ignore[method-assign]
    results = list(service.publish_all(batch=1))

    assert [r is not None and r.changed for _, r, _ in results] == [False, False]
    assert calls and loaded_at(service) is None
