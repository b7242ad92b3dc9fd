"""The write service's ``republish_all``: every source to Redis, compiling the unpublished."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from edge import keyspace
from edge.http import gunzip
from publisher.core.bundle import make_bundle
from publisher.core.catalog import default_catalog
from publisher.core.model import Instance, Source
from publisher.errors import CompileError
from publisher.publish import RedisPublisher
from publisher.service import Service
from publisher.store import Store


def stored_json(client: redis.Redis, key: str) -> bytes | None:
    """The JSON of a version hash in Redis: its gzip bytes inflated (Redis holds no JSON)."""
    packed = client.hget(key, keyspace.F_GZIP)
    return None if packed is None else gunzip(cast(bytes, packed))


@pytest.fixture
def service(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Service]:
    with Store.open(str(tmp_path / "config.db")) as store:
        yield Service(store, default_catalog(), RedisPublisher(redis_client),
                      clock=lambda: 1_700_000_000)


def amplitude(api_key: str, slug: str = "amplitude") -> Instance:
    return Instance(id="amp", catalog_slug=slug, display_name="Amplitude",
                    connection_mode="DEVICE", enabled=True, settings={"apiKey": api_key})


def imported(service: Service, n: int, instances: list[Instance]) -> Source:
    """A source written straight to SQLite (as an import would), never published."""
    ws = service.store.get_workspace("acme") or service.store.create_workspace("acme", "Acme")
    src = service.store.create_source(ws.id, f"site-{n}", f"Site {n}", "web",
                                      write_key=f"acmeSiteWriteKey{n:04d}")
    service.store.replace_instances(src.id, instances)
    return src


def served(client: redis.Redis, write_key: str) -> tuple[int, bytes] | None:
    pointer = client.get(keyspace.current_key(write_key))
    if pointer is None:
        return None
    version, _ = keyspace.decode_pointer(pointer)
    body = stored_json(client, keyspace.version_key(write_key, version))
    assert body is not None
    return version, body


def test_republish_compiles_only_what_has_no_current_bundle(
        service: Service, redis_client: redis.Redis) -> None:
    """Unpublished sources get version 1 of their compiled bytes; published ones keep theirs."""
    published = imported(service, 0, [amplitude("key-0")])
    first = service.publish(published)
    fresh = [imported(service, n, [amplitude(f"key-{n}")]) for n in (1, 2, 3)]
    lost = imported(service, 4, [amplitude("key-4")])  # bundles kept, current pointer gone
    kept = make_bundle(service.compile(lost), version=2, revision=0, published_at=1)
    service.store.record_bundle(lost.id, kept)
    service.store._conn.execute("UPDATE sources SET current_version = NULL WHERE id = ?",
                                (lost.id,))
    redis_client.flushall()

    results = {r.write_key: r for r in service.republish_all(batch=2)}

    assert [results[s.write_key].changed for s in (published, *fresh, lost)] == [
        False, True, True, True, True]
    assert not any(r.pending for r in results.values())
    assert served(redis_client, published.write_key) == (first.version, service.compile(published))
    for src in fresh:
        body = service.compile(src)
        assert served(redis_client, src.write_key) == (1, body)
        assert service.store.current_bundle(src.id) == make_bundle(
            body, version=1, revision=src.revision, published_at=1_700_000_000)
    assert served(redis_client, lost.write_key) == (2, kept.json)
    assert [b.version for b in service.store.list_bundles(lost.id)] == [2]


def test_republish_refuses_what_the_compiler_refuses(service: Service,
                                                      redis_client: redis.Redis) -> None:
    """A stored configuration that cannot compile stops republish; its batch records nothing."""
    good = imported(service, 1, [amplitude("key-1")])
    bad = imported(service, 2, [amplitude("key-2", slug="no-such-destination")])

    with pytest.raises(CompileError, match="unknown catalog destination 'no-such-destination'"):
        list(service.republish_all(batch=10))

    assert service.store.sources_with_bundles([good.id, bad.id]) == set()
    assert served(redis_client, good.write_key) is None


def test_rollback_is_dated_when_it_happens(service: Service, redis_client: redis.Redis) -> None:
    """A rollback serves the old bytes as a new version dated now (SQLite and Redis):
    Last-Modified and visible_everywhere_by count from the rollback, not from the version's
    first publish. A rollback to the bytes already served changes nothing."""
    clock = [1_700_000_000.0]
    service.clock = lambda: clock[0]
    service.propagation_seconds = 512
    src = imported(service, 0, [amplitude("one")])
    service.publish(src)
    service.store.replace_instances(src.id, [])
    clock[0] += 3600
    service.publish(src)  # v2
    clock[0] += 60

    back = service.rollback(src, 1)
    same = service.rollback(src, 1)

    assert back.changed and back.published_at == 1_700_003_660
    assert back.visible_everywhere_by == 1_700_003_660 + 512
    assert not same.changed and same.published_at == back.published_at
    assert back.version == 3 and same.version == 3
    stored = service.store.get_bundle(src.id, 3)
    assert stored is not None and stored.published_at == 1_700_003_660
    assert redis_client.hget(keyspace.version_key(src.write_key, 3), "published_at") \
        == b"1700003660"
