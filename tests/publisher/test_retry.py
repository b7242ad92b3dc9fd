"""What a Redis failure leaves pending is published once Redis answers: ``retry_pending``,
``find_pending`` at start, and the loop ``serve`` runs (``publisher.retry``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from edge import keyspace
from publisher import workspace_file
from publisher.api.app import create_app
from publisher.api.auth import create_token
from publisher.api.plumbing import error_response
from publisher.core.bundle import make_bundle
from publisher.core.catalog import default_catalog
from publisher.core.model import Instance, Source
from publisher.core.specs import InstanceSpec
from publisher.errors import Busy
from publisher.publish import RedisPublisher
from publisher.retry import publish_pending
from publisher.service import Service
from publisher.settings import PublisherSettings, SettingsError
from publisher.store import Store
from publisher.store import store as store_module

# Redis refusing connections, with the client build_service makes (from_url: no retries)
DOWN = RedisPublisher(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=5,
                                           socket_connect_timeout=2))


@pytest.fixture
def service(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Service]:
    with Store.open(str(tmp_path / "config.db")) as store:
        yield Service(store, default_catalog(), RedisPublisher(redis_client),
                      clock=lambda: 1_700_000_000)


def source(service: Service, n: int, api_key: str = "key") -> Source:
    ws = service.store.get_workspace("acme") or service.store.create_workspace("acme", "Acme")
    src = service.store.create_source(ws.id, f"site-{n}", f"Site {n}", "web",
                                      write_key=f"acmeSiteWriteKey{n:04d}")
    service.store.replace_instances(src.id, [Instance(
        id="amp", catalog_slug="amplitude", display_name="Amplitude",
        connection_mode="DEVICE", enabled=True, settings={"apiKey": api_key})])
    return src


def served_version(client: redis.Redis, write_key: str) -> int | None:
    pointer = client.get(keyspace.current_key(write_key))
    return None if pointer is None else keyspace.decode_pointer(pointer)[0]


def test_a_publish_redis_missed_is_retried(service: Service, redis_client: redis.Redis) -> None:
    """A write that Redis refused is pending; retry_pending publishes it once Redis answers."""
    good, service.publisher = service.publisher, DOWN
    src = source(service, 0)

    result = service.publish(src)
    still_down = service.retry_pending()
    service.publisher = good
    retried = service.retry_pending()

    assert result.pending and "`serve` retries it" in result.error
    assert still_down == (0, 1)
    assert retried == (1, 0) and not service.pending
    assert served_version(redis_client, src.write_key) == result.version


def test_find_pending_sees_what_redis_lacks(service: Service,
                                            redis_client: redis.Redis) -> None:
    """At start, every source whose Redis pointer differs from SQLite's current bundle —
    never written, flushed, or behind — is found pending, and only those."""
    sources = [source(service, n) for n in range(4)]
    for src in sources:
        service.publish(src)
    redis_client.delete(keyspace.current_key(sources[1].write_key))  # flushed
    service.publisher = DOWN
    service.store.replace_instances(sources[2].id, [])
    service.publish(sources[2])  # committed, Redis behind
    restarted = Service(service.store, default_catalog(), RedisPublisher(redis_client))

    found = restarted.find_pending(batch=3)
    published = restarted.retry_pending()

    assert found == 2 and published == (2, 0)
    assert restarted.status(sources[1])["pending"] is False
    assert served_version(redis_client, sources[2].write_key) == 2


def test_find_pending_raises_when_redis_is_down(service: Service) -> None:
    """The check at start cannot tell without Redis: it raises (the loop tries again)."""
    source(service, 0)
    service.publish(service.store.all_sources()[0])
    service.publisher = DOWN

    with pytest.raises(redis.RedisError):
        service.find_pending()


def test_pending_sources_deleted_or_published_since_are_dropped(
        service: Service, redis_client: redis.Redis) -> None:
    """A pending source deleted since, or published by a later write, is dropped without a
    write."""
    good, service.publisher = service.publisher, DOWN
    gone, later = source(service, 0), source(service, 1)
    service.publish(gone)
    service.publish(later)
    service.publisher = good
    assert service.delete_source(gone) == ""
    service.store.replace_instances(later.id, [])
    fresh = service.publish(later)
    service.store.add_to_outbox([later.write_key])  # as if left by another process

    assert service.retry_pending() == (0, 0)
    assert served_version(redis_client, later.write_key) == fresh.version
    assert served_version(redis_client, gone.write_key) is None


def test_a_source_deleted_while_redis_is_down_is_deleted_from_redis_later(
        service: Service, redis_client: redis.Redis) -> None:
    """Deleting a source while Redis is down leaves it pending: retry_pending removes its
    keys once Redis answers, so the edge stops serving it."""
    src = source(service, 0)
    service.publish(src)
    good, service.publisher = service.publisher, DOWN

    assert "Redis unreachable, publish pending" in service.delete_source(src)
    assert service.retry_pending() == (0, 1)
    service.publisher = good
    assert served_version(redis_client, src.write_key) == 1  # still served until then

    assert service.retry_pending() == (1, 0)  # the deletion carried out
    assert redis_client.keys(f"{keyspace.tag(src.write_key)}:*") == []


@pytest.mark.parametrize("recover", ["retry_pending", "republish_all"])
def test_a_rollback_redis_missed_is_restored(service: Service, redis_client: redis.Redis,
                                             recover: str) -> None:
    """A rollback Redis refused is published later (version 1's bytes as version 3), by the
    retry loop and by republish --all alike; a source merely behind is not moved back."""
    src, other = source(service, 0, "one"), source(service, 1)
    service.publish(src)
    service.store.replace_instances(src.id, [])
    service.publish(src)  # v2
    good, service.publisher = service.publisher, DOWN
    assert service.rollback(src, 1).pending
    service.publisher = good
    service.publish(other)
    service.store.replace_instances(other.id, [])
    newer = service.publish(other)  # other: v2 in SQLite and Redis

    if recover == "retry_pending":
        service.retry_pending()
    else:
        list(service.republish_all())

    assert served_version(redis_client, src.write_key) == 3
    first = service.store.get_bundle(src.id, 1)  # Redis keeps only versions 2 and 3
    assert first is not None
    assert redis_client.hget(keyspace.version_key(src.write_key, 3), "etag") \
        == first.etag.encode()
    assert served_version(redis_client, other.write_key) == newer.version == 2


@pytest.mark.parametrize(("raw", "ok"), [("0", True), ("2.5", True), ("-1", False),
                                         ("soon", False), ("inf", False), ("nan", False)])
def test_retry_interval_setting(raw: str, ok: bool) -> None:
    """PUBLISHER_RETRY_INTERVAL takes seconds >= 0 (0 turns the loop off); anything else
    stops the start with a message naming the variable."""
    if ok:
        assert PublisherSettings.from_env({"PUBLISHER_RETRY_INTERVAL": raw}).retry_interval \
            == float(raw)
        return
    with pytest.raises(SettingsError, match="PUBLISHER_RETRY_INTERVAL"):
        PublisherSettings.from_env({"PUBLISHER_RETRY_INTERVAL": raw})


def test_serve_publishes_a_pending_write_by_itself(tmp_path: Path, service: Service,
                                                   redis_client: redis.Redis) -> None:
    """Under the Config API's lifespan a write Redis missed reaches Redis without another
    request, once Redis answers again."""
    settings = PublisherSettings(db_path=str(tmp_path / "config.db"),
                                 redis_url="redis://127.0.0.1:1/0", retry_interval=0.05)
    service.store.create_workspace("acme", "Acme")
    token = create_token(service, "acme", "write")
    good, service.publisher = service.publisher, DOWN

    with TestClient(create_app(settings, service=service)) as client:
        reply = client.post("/v1beta/workspaces/acme/sources",
                            json={"source": {"slug": "shop", "type": "web"}},
                            headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200 and reply.json()["bundle"]["pending"] is True
        write_key = reply.json()["bundle"]["write_key"]
        service.publisher = good
        deadline = time.monotonic() + 10
        while served_version(redis_client, write_key) is None and time.monotonic() < deadline:
            time.sleep(0.05)

    assert served_version(redis_client, write_key) == 1
    assert not service.pending


def test_an_unchanged_write_asks_a_hung_redis_once(service: Service,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that leaves the bundle unchanged compares it with Redis; when that read fails
    the write is pending at once. It used to count the failure as "behind" and try the write
    too, holding the write lock for two Redis timeouts."""
    src = source(service, 0)
    service.publish(src)
    assert service.publisher is not None
    calls: list[str] = []

    def fail(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise redis.TimeoutError("Timeout reading from socket")
        return call

    for name in ("current", "currents", "write", "write_many"):
        monkeypatch.setattr(service.publisher, name, fail(name))

    result = service.publish(src)

    assert calls == ["currents"]
    assert result.pending and not result.changed and "Timeout reading" in result.error
    assert service.pending == {src.write_key}


def test_a_publish_whose_pointer_keeps_moving_is_pending(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish Redis refuses on every try (other publishes keep moving the pointer) is
    left pending, its outbox record kept, and its error says so: it does not claim Redis is
    unreachable."""
    src = source(service, 0)
    assert service.publisher is not None
    monkeypatch.setattr(service.publisher, "write", lambda *args, **kwargs: False)

    result = service.publish(src)

    assert result.pending and result.changed
    assert "kept moving under this publish" in result.error
    assert "unreachable" not in result.error
    assert service.pending == {src.write_key}


def test_a_malformed_pointer_reads_as_behind(service: Service,
                                             redis_client: redis.Redis) -> None:
    """A pointer in Redis that does not parse makes the source pending, not a crash; the
    retry replaces it."""
    src = source(service, 0)
    service.publish(src)
    redis_client.set(keyspace.current_key(src.write_key), b"garbage")

    assert service.status(src)["pending"] is True
    assert service.find_pending() == 1 and service.retry_pending() == (1, 0)
    assert served_version(redis_client, src.write_key) == 1


def test_after_pending_sources_are_published_every_source_is_checked_again(
        service: Service, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis moved back under the loop (here: a write over the pointer, as a copy of another
    database's Redis would) after a newer write succeeded and cleared the source's outbox
    record. After the loop has published what was pending, its next round compares every
    source with Redis again and puts back what differs."""
    src, other = source(service, 0), source(service, 1)
    service.publish(src)
    service.store.replace_instances(src.id, [])
    newest = service.publish(src)  # v2
    first = service.store.get_bundle(src.id, 1)
    good, service.publisher = service.publisher, DOWN
    assert service.publish(other).pending
    service.publisher = good
    assert good is not None and first is not None
    retry, landed = service.retry_pending, list[bool]()

    def retry_then_a_late_write() -> tuple[int, int]:
        done = retry()
        if not landed:  # v1 written over the newer write
            good.write(src.write_key, first, over=good.pointer(src.write_key) or b"")
            landed.append(True)
        return done

    monkeypatch.setattr(service, "retry_pending", retry_then_a_late_write)

    async def run() -> None:
        task = asyncio.create_task(publish_pending(service, 0.02))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (
                landed and served_version(redis_client, src.write_key) == newest.version):
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())

    assert landed and served_version(redis_client, src.write_key) == newest.version == 2
    assert served_version(redis_client, other.write_key) == 1


def test_serve_republishes_into_a_redis_restarted_empty(tmp_path: Path, service: Service,
                                                        redis_client: redis.Redis,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """When Redis comes back as another server (a new run_id) without its data, serve finds
    every source missing and publishes it again, with no request and no republish --all."""
    src = source(service, 0)
    service.publish(src)
    assert service.publisher is not None
    run_id, asked = ["first-run"], []

    def server_id() -> str:
        asked.append(run_id[0])
        return run_id[0]

    monkeypatch.setattr(service.publisher, "server_id", server_id)
    settings = PublisherSettings(db_path=str(tmp_path / "config.db"), retry_interval=0.05)

    with TestClient(create_app(settings, service=service)):
        wait_for(lambda: len(asked) >= 2, "the loop to know the first server")
        redis_client.flushall()  # what a restart without persistence leaves
        run_id[0] = "second-run"
        wait_for(lambda: served_version(redis_client, src.write_key) is not None,
                 "the source published again")

    assert served_version(redis_client, src.write_key) == 1


def wait_for(done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll what serve's background loop makes true (bounded; no timing assertion)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_pending_outlives_the_process_that_wrote_it(tmp_path: Path, redis_client: redis.Redis
                                                    ) -> None:
    """A publish or a deletion Redis refused in one process (the CLI, or a serve that then
    stopped) is published or carried out by another process's retry (serve)."""
    db = str(tmp_path / "config.db")
    with Store.open(db) as store:
        cli = Service(store, default_catalog(), RedisPublisher(redis_client))
        kept, gone = source(cli, 0), source(cli, 1)
        cli.publish(gone)
        cli.publisher = DOWN
        assert cli.publish(kept).pending
        cli.delete_source(gone)
    with Store.open(db) as store:
        serve = Service(store, default_catalog(), RedisPublisher(redis_client))

        assert serve.pending == {kept.write_key, gone.write_key}
        assert serve.retry_pending() == (2, 0)  # one publish, one deletion

    assert served_version(redis_client, kept.write_key) == 1
    assert redis_client.keys(f"{keyspace.tag(gone.write_key)}:*") == []


def race(service: Service, method: str, first: Callable[[], object],
         second: Callable[[], object]) -> None:
    """Run ``first`` until it calls ``service.publisher.<method>`` (its Redis step, after
    its COMMIT), then ``second`` beside it for 0.5 s — enough to finish unless it waits for
    ``first`` — then let ``first`` go on, and wait for both."""
    assert service.publisher is not None
    writing, go_on = threading.Event(), threading.Event()
    call = getattr(service.publisher, method)

    def paused(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        go_on.wait(5)
        return call(*args, **kwargs)

    setattr(service.publisher, method, paused)
    one = threading.Thread(target=first)
    one.start()
    assert writing.wait(5)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.5)
    go_on.set()
    one.join(10)
    two.join(10)


def test_republish_and_another_process_rollback_do_not_interleave(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    """A rollback committed and published by another process while republish --all has read
    a page but not yet written it lands last: Redis refuses republish's older version, and
    ends with what SQLite holds (before: republish wrote the version rolled away over it)."""
    db = str(tmp_path / "config.db")
    with Store.open(db) as first, Store.open(db) as second:
        republisher = Service(first, default_catalog(), RedisPublisher(redis_client))
        other = Service(second, default_catalog(), RedisPublisher(redis_client))
        src = source(republisher, 0, "one")
        republisher.publish(src)
        republisher.store.replace_instances(src.id, [])
        republisher.publish(src)  # v2
        race(republisher, "write_many", lambda: list(republisher.republish_all()),
             lambda: other.rollback(src, 1))

        current, first_bundle = second.current_bundle(src.id), second.get_bundle(src.id, 1)
    assert current is not None and current.version == 3  # version 1's bytes, as version 3
    assert first_bundle is not None and current.etag == first_bundle.etag
    assert served_version(redis_client, src.write_key) == 3


def test_a_write_and_another_process_rollback_do_not_interleave(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    """A rollback by another process (the CLI beside serve) committed and published between
    a write's COMMIT (v3) and its publish lands last: it is v4, and Redis refuses the
    write's older v3. Before, the rollback pointed Redis at v1, then the write published v3
    over it: Redis served v3 while SQLite's current version was v1, and nothing recorded the
    difference."""
    db = str(tmp_path / "config.db")
    with Store.open(db) as first, Store.open(db) as second:
        writer = Service(first, default_catalog(), RedisPublisher(redis_client))
        other = Service(second, default_catalog(), RedisPublisher(redis_client))
        src = source(writer, 0, "one")
        writer.publish(src)
        writer.store.replace_instances(src.id, [])
        writer.publish(src)  # v2
        writer.store.replace_instances(src.id, [Instance(
            id="amp", catalog_slug="amplitude", display_name="Amplitude",
            connection_mode="DEVICE", enabled=True, settings={"apiKey": "three"})])
        race(writer, "write", lambda: writer.publish(src),  # v3
             lambda: other.rollback(src, 1))

        current, first_bundle = second.current_bundle(src.id), second.get_bundle(src.id, 1)
    assert current is not None and current.version == 4  # version 1's bytes, as version 4
    assert first_bundle is not None and current.etag == first_bundle.etag
    assert served_version(redis_client, src.write_key) == 4


def test_apply_and_another_process_rollback_do_not_interleave(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    """`apply` (the workspace file) too: a rollback by another process committed and
    published between apply's COMMIT (v2) and its publish lands last (v3). Before, the
    rollback pointed Redis at v1, then apply published v2 over it."""
    def file(api_key: str) -> bytes:
        return orjson.dumps({"workspace": {"slug": "acme", "name": "Acme"}, "sources": [{
            "slug": "site", "name": "Site", "type": "web", "write_key": "acmeSiteWriteKey0000",
            "destinations": [{"destination": "amplitude", "connection_mode": "DEVICE",
                              "enabled": True, "settings": {"apiKey": api_key}}]}]})

    db = str(tmp_path / "config.db")
    with Store.open(db) as first, Store.open(db) as second:
        applier = Service(first, default_catalog(), RedisPublisher(redis_client))
        other = Service(second, default_catalog(), RedisPublisher(redis_client))
        workspace_file.apply(applier, workspace_file.parse(file("one")))  # v1
        src = second.get_source_by_write_key("acmeSiteWriteKey0000")
        assert src is not None
        race(applier, "write",
             lambda: workspace_file.apply(applier, workspace_file.parse(file("two"))),  # v2
             lambda: other.rollback(src, 1))

        current, first_bundle = second.current_bundle(src.id), second.get_bundle(src.id, 1)
    assert current is not None and current.version == 3  # version 1's bytes, as version 3
    assert first_bundle is not None and current.etag == first_bundle.etag
    assert served_version(redis_client, src.write_key) == 3


def _redis_ahead(service: Service, src: Source) -> None:
    """Redis serves v5 of ``src``, which SQLite never made current (a copy of another
    database's Redis, or a source deleted and made again with the same write key)."""
    assert service.publisher is not None
    service.publisher.write(src.write_key, make_bundle(b'{"never":"committed"}', version=5,
                                                       revision=9, published_at=1))


def test_redis_ahead_of_sqlite_is_found_and_put_back(service: Service,
                                                     redis_client: redis.Redis) -> None:
    """A version Redis serves above SQLite's current one is found pending at start and the
    retry puts SQLite's current bundle back (forced). Before, the retry's write was refused
    by the guard against lower versions and the pending mark cleared: Redis served bytes no
    source had, until the source's next write."""
    src = source(service, 0)
    first = service.publish(src)
    _redis_ahead(service, src)

    assert service.find_pending() == 1
    assert service.retry_pending() == (1, 0)
    assert served_version(redis_client, src.write_key) == first.version == 1


def test_republish_and_writes_replace_a_version_redis_is_ahead_with(
        service: Service, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """republish --all restores SQLite's current bundle over a higher version Redis serves;
    so does a write, which logs it (it stages v2 while Redis serves v5)."""
    restored, written = source(service, 0), source(service, 1)
    for src in (restored, written):
        service.publish(src)
    _redis_ahead(service, restored)

    list(service.republish_all())
    _redis_ahead(service, written)
    service.store.replace_instances(written.id, [])
    result = service.publish(written)

    assert served_version(redis_client, restored.write_key) == 1
    assert result.version == 2 and not result.pending
    assert served_version(redis_client, written.write_key) == 2
    assert "Redis served a version of acmeSiteWriteKey0001 above v2" in caplog.text


class _FailingCommit:
    """A store's connection whose next COMMIT fails, as on a full disk (the transaction is
    still open: the store rolls it back)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.failures = conn, 1

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@contextlib.contextmanager
def _next_commit_fails(service: Service) -> Iterator[None]:
    real = service.store._conn
    service.store._conn = _FailingCommit(real)  # type: ignore[assignment]
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            yield
    finally:
        service.store._conn = real


def test_a_write_whose_commit_fails_is_not_served(service: Service,
                                                  redis_client: redis.Redis) -> None:
    """A write refused because its COMMIT failed is not published (the publish follows the
    COMMIT): Redis serves SQLite's version, and nothing is left pending."""
    src = source(service, 0)
    first = service.publish(src)
    service.store.replace_instances(src.id, [])

    with _next_commit_fails(service):
        service.publish(src)

    assert served_version(redis_client, src.write_key) == first.version == 1
    assert service.store.current_bundle(src.id).version == 1  # type: ignore[union-attr]
    assert not service.pending


def test_a_deletion_whose_commit_fails_is_still_served(service: Service,
                                                       redis_client: redis.Redis) -> None:
    """A source whose deletion failed to commit is still served (the Redis deletion follows
    the COMMIT): a refused deletion does not take a site's settings away."""
    src = source(service, 0)
    service.publish(src)

    with _next_commit_fails(service):
        service.delete_source(src)

    assert service.store.get_source_by_write_key(src.write_key) is not None
    assert served_version(redis_client, src.write_key) == 1
    assert not service.pending


def test_a_new_source_whose_commit_fails_is_not_served(service: Service,
                                                       redis_client: redis.Redis) -> None:
    """A source whose creation failed to commit is not in Redis."""
    service.store.create_workspace("acme", "Acme")

    with _next_commit_fails(service):
        service.create_source("acme", "shop", "web", write_key="acmeShopWriteKey0001")

    assert service.store.get_source_by_write_key("acmeShopWriteKey0001") is None
    assert redis_client.get(keyspace.current_key("acmeShopWriteKey0001")) is None


def test_a_nested_write_whose_commit_fails_is_not_served(service: Service,
                                                         redis_client: redis.Redis) -> None:
    """A single-resource edit (its result read back inside its transaction) whose COMMIT
    fails is not published, and leaves nothing pending."""
    src = source(service, 0)
    service.publish(src)

    with _next_commit_fails(service):
        service.update_instance(src, "amp", {"enabled": False})

    assert service.store.current_bundle(src.id).version == 1  # type: ignore[union-attr]
    assert served_version(redis_client, src.write_key) == 1
    assert not service.pending


def test_a_published_write_whose_record_cannot_be_cleared_is_accepted(
        service: Service, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write committed and published whose outbox record cannot then be cleared (the
    database failing) is accepted, not an error: the record stays, and the retry clears it
    without writing Redis again."""
    src = source(service, 0)
    service.publish(src)
    real, calls = service.store.clear_outbox, []

    def fails_once(delivered: Any) -> None:
        calls.append(delivered)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        real(delivered)

    monkeypatch.setattr(service.store, "clear_outbox", fails_once)
    _, result = service.update_instance(src, "amp", {"enabled": False})

    assert result.version == 2 and not result.pending
    assert served_version(redis_client, src.write_key) == 2
    assert service.pending == {src.write_key}
    assert service.retry_pending() == (0, 0)


def test_a_first_publish_whose_commit_fails_is_not_served(service: Service,
                                                          redis_client: redis.Redis) -> None:
    """A source never published whose first version failed to commit (publish --all) is
    taken out of Redis again: SQLite holds no version of it to serve."""
    src = source(service, 0)

    with _next_commit_fails(service):
        list(service.publish_all())

    assert service.store.current_bundle(src.id) is None
    assert redis_client.get(keyspace.current_key(src.write_key)) is None
    assert not service.pending


def test_a_write_whose_commit_fails_does_not_call_redis(service: Service,
                                                        redis_client: redis.Redis) -> None:
    """Nothing reaches Redis before the COMMIT: a write whose COMMIT fails makes no Redis
    write at all, so there is nothing to put back."""
    assert service.publisher is not None
    src = source(service, 0)
    service.publish(src)
    service.store.replace_instances(src.id, [])
    calls: list[str] = []
    for name in ("write", "write_many", "delete_source"):
        def record(*args: Any, _name: str = name, **kwargs: Any) -> None:
            calls.append(_name)
        setattr(service.publisher, name, record)

    with _next_commit_fails(service):
        service.publish(src)
    with _next_commit_fails(service):
        service.delete_source(src)

    assert calls == [] and not service.pending
    assert served_version(redis_client, src.write_key) == 1


def test_publish_all_skips_a_source_that_no_longer_compiles(service: Service,
                                                            redis_client: redis.Redis) -> None:
    """A source whose stored configuration no longer compiles (here: a destination the
    catalog lost) is named and left on its version; the sources around it are published."""
    sources = [source(service, n) for n in range(3)]
    for src in sources:
        service.publish(src)
    service.store.replace_instances(sources[1].id, [Instance(
        id="gone", catalog_slug="no-such-destination", display_name="Gone",
        connection_mode="DEVICE", enabled=True, settings={})])
    service.compile_options = replace(service.compile_options, api_host="events.example.com/v1")

    results = {src.slug: (result, why) for src, result, why in service.publish_all(batch=2)}

    assert [results[s.slug][0] is not None and results[s.slug][0].changed  # type: ignore[union-attr]
            for s in sources] == [True, False, True]
    assert results["site-1"][1].startswith("not compiled, left as it is: ")
    assert "no-such-destination" in results["site-1"][1]
    assert [served_version(redis_client, s.write_key) for s in sources] == [2, 1, 2]


@pytest.mark.parametrize("run", ["publish_all", "republish_all"])
def test_a_run_over_many_pages_waits_for_redis_once(service: Service, run: str) -> None:
    """With Redis down, publish --all and republish --all try it on their first page only
    and record the sources of the later pages pending at once: one Redis timeout for the
    run, not one a page."""
    sources = [source(service, n) for n in range(3)]
    service.compile_options = replace(service.compile_options, api_host="events.example.com/v1")
    tries: list[int] = []

    def down(items: Any, **_: Any) -> int:
        tries.append(len(list(items)))
        raise redis.ConnectionError("refused")

    service.publisher.write_many = down  # type: ignore[union-attr, method-assign]
    results = list(getattr(service, run)(batch=1))

    assert len(tries) == 1 and len(results) == 3
    assert service.pending == {s.write_key for s in sources}


def test_a_new_source_publish_does_not_cover_another_process_write(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    """Another process's write (v2) committed and published between create_source's COMMIT
    and its publish wins: Redis refuses the create's older v1. Before, the create's v1 was
    found below v2 and forced over it: Redis served v1 while SQLite's current version was
    v2."""
    db = str(tmp_path / "config.db")
    key = "acmeNewWriteKey00000"
    with Store.open(db) as first, Store.open(db) as second:
        creator = Service(first, default_catalog(), RedisPublisher(redis_client))
        other = Service(second, default_catalog(), RedisPublisher(redis_client))
        creator.create_workspace("acme")

        def add_destination() -> None:
            for _ in range(500):  # until the source is visible to this process
                found = second.get_source_by_write_key(key)
                if found is not None:
                    other.set_instances(found, [InstanceSpec(
                        destination="amplitude", connection_mode="DEVICE", enabled=True,
                        settings={"apiKey": "k"})])
                    return
                time.sleep(0.01)

        race(creator, "write",
             lambda: creator.create_source("acme", "new", "web", write_key=key),
             add_destination)

        src = second.get_source_by_write_key(key)
        assert src is not None
        current = second.current_bundle(src.id)
    assert current is not None and current.version == 2
    assert served_version(redis_client, key) == 2


def test_a_write_waits_for_this_process_writes_within_the_same_limit(
        tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write behind this process's other writes (each may wait out a hung Redis) gets Busy
    within BUSY_TIMEOUT_MS, as one behind another process does: it used to wait for the
    process's lock without limit, and only then for SQLite's."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)
    with Store.open(str(tmp_path / "config.db")) as store:
        service = Service(store, default_catalog(), RedisPublisher(redis_client))
        src = source(service, 0)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with service._lock:  # another write of this process, waiting on Redis
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(5)
        outcome: list[BaseException | None] = []

        def write() -> None:
            try:
                service.publish(src)
                outcome.append(None)
            except Busy as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(5)  # answered while the other write still holds the lock
        answered = not writer.is_alive()
        release.set()
        holder.join(10)
        writer.join(10)

    assert answered
    assert isinstance(outcome[0], Busy) and outcome[0].http_status == 503
    assert "this publisher's other writes held its write lock" in outcome[0].message


def test_a_write_behind_another_process_lock_is_a_503(tmp_path: Path, redis_client: redis.Redis,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that cannot get the database's write lock in time (another process holds it,
    e.g. republish --all waiting on a hung Redis) is Busy — a 503 with Retry-After on the
    Config API, exit 1 from the CLI — not an internal error."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)
    db = str(tmp_path / "config.db")
    with Store.open(db) as holder, Store.open(db) as store:
        service = Service(store, default_catalog(), RedisPublisher(redis_client))
        src = source(service, 0)
        holder._conn.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(Busy) as caught:
                service.publish(src)
        finally:
            holder._conn.execute("ROLLBACK")

    assert caught.value.http_status == 503 and caught.value.code == "database_busy"
    assert error_response(caught.value).headers["retry-after"] == "1"


def test_busy_names_the_wait_it_gave_up_after(tmp_path: Path) -> None:
    """Busy says how long this write waited for the lock (its share of the budget), not the
    whole budget."""
    db = str(tmp_path / "config.db")
    with Store.open(db) as holder, Store.open(db) as store:
        holder._conn.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(Busy) as caught, store.transaction(wait=0.05):
                pass
        finally:
            holder._conn.execute("ROLLBACK")

    assert "waited 0.05 s for another publisher process's write lock" in caught.value.message


def test_serve_logs_each_outage_once(tmp_path: Path, service: Service,
                                     monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """The retry loop logs 'Redis unreachable' once per outage, however many intervals it
    lasts, and again for the next outage."""
    assert service.publisher is not None
    answers = iter(["down"] * 5 + ["up"] * 5 + ["down"] * 5 + ["up"] * 1000)
    calls: list[str] = []

    def server_id() -> str:
        state = next(answers)
        calls.append(state)
        if state == "down":
            raise redis.ConnectionError("refused")
        return "run-1"

    monkeypatch.setattr(service.publisher, "server_id", server_id)
    settings = PublisherSettings(db_path=str(tmp_path / "config.db"), retry_interval=0.01)

    with caplog.at_level("WARNING", logger="publisher.retry"):
        with TestClient(create_app(settings, service=service)):
            wait_for(lambda: len(calls) > 16, "two outages and recoveries")

    outages = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outages) == 2
