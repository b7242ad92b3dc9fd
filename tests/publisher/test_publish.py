"""The Redis writer against a real redis-server: envelope, atomic pointer, history, rollback."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from edge import keyspace
from edge.http import gunzip
from publisher.core.bundle import Bundle, etag_of, make_bundle
from publisher.publish import RedisPublisher
from publisher.store import Store

WK = "wk_test-1"


def doc(n: int) -> bytes:
    return b'{"integrations":{"Segment.io":{"apiKey":"' + WK.encode() + b'"}},"n":' + str(
        n
    ).encode() + b"}"


def bundle(n: int) -> Bundle:
    return make_bundle(doc(n), version=n, revision=n * 2, published_at=1_700_000_000 + n)


def kept(client: redis.Redis, write_key: str) -> list[int]:
    """The version numbers Redis still holds of the source, oldest first."""
    return [int(v) for v in client.zrange(keyspace.versions_key(write_key), 0, -1)]


def read_envelope(client: redis.Redis, write_key: str, version: int) -> keyspace.Envelope | None:
    values = client.hmget(keyspace.version_key(write_key, version), list(keyspace.FIELDS))
    return keyspace.Envelope.from_fields(write_key, cast(list[bytes | None], values))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(str(tmp_path / "config.db")) as s:
        yield s


def test_make_bundle_is_deterministic() -> None:
    """The same bytes always give the same gzip and the strong SHA-256 ETag."""
    a, b = bundle(1), bundle(1)

    assert a.gzip == b.gzip
    assert gzip.decompress(a.gzip) == doc(1)
    assert a.etag == '"' + hashlib.sha256(doc(1)).hexdigest()[:32] + '"'
    assert bundle(2).etag != a.etag


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"version": 0}, "bundle version must be >= 1, got 0", id="zero-version"),
        pytest.param({"version": -3}, "bundle version must be >= 1, got -3", id="negative"),
    ],
)
def test_make_bundle_refuses_bad_versions(kwargs: dict[str, int], message: str) -> None:
    """A version below 1 is refused with a message naming the value."""
    with pytest.raises(ValueError, match=message):
        make_bundle(b"{}", revision=0, published_at=0, **kwargs)


def test_keep_versions_must_be_positive(redis_client: redis.Redis) -> None:
    """A publisher that would keep no version (not even the current one) is refused."""
    with pytest.raises(ValueError, match="keep_versions must be >= 1, got 0"):
        RedisPublisher(redis_client, keep_versions=0)


def test_write_stores_a_readable_envelope(redis_client: redis.Redis) -> None:
    """After write, the pointer names the version and its hash holds the exact bytes."""
    publisher = RedisPublisher(redis_client)
    b = bundle(1)

    publisher.write(WK, b)

    assert redis_client.get(keyspace.current_key(WK)) == keyspace.encode_pointer(1, b.etag)
    assert publisher.current(WK) == (1, b.etag)
    assert read_envelope(redis_client, WK, 1) == keyspace.Envelope(
        write_key=WK, version=1, json=b.json, gzip=b.gzip, etag=b.etag,
        published_at=b.published_at, revision=b.revision,
    )
    assert kept(redis_client, WK) == [1]


def test_current_is_none_before_any_publish(redis_client: redis.Redis) -> None:
    """An unpublished source has no current version."""
    assert RedisPublisher(redis_client).current("never-published") is None


def test_write_announces_each_publish(redis_client: redis.Redis) -> None:
    """Every write sends '<writeKey> <version>' on the published channel, one over a higher
    version too."""
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keyspace.PUBLISHED_CHANNEL)
    assert pubsub.get_message(timeout=1.0) is None  # consumes the subscribe confirmation
    publisher = RedisPublisher(redis_client)

    publisher.write(WK, bundle(1))
    publisher.write(WK, bundle(2))
    publisher.write(WK, bundle(1), over=publisher.pointer(WK) or b"")

    received = []
    for _ in range(3):
        message = pubsub.get_message(timeout=5.0)
        assert message is not None
        received.append(keyspace.decode_message(message["data"]))
    pubsub.close()
    assert received == [(WK, 1), (WK, 2), (WK, 1)]


def test_pointer_is_atomic_under_concurrent_reads(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A reader looping GET pointer + HMGET never sees a missing or mixed version."""
    writer_client = redis.Redis.from_url(redis_url)
    reader_client = redis.Redis.from_url(redis_url)
    publisher = RedisPublisher(writer_client, keep_versions=250)  # no pruning in this test
    bundles = [bundle(n) for n in range(1, 201)]
    publisher.write(WK, bundles[0])
    done = threading.Event()
    problems: list[str] = []
    reads: list[int] = []

    def reader() -> None:
        while not done.is_set():
            raw = reader_client.get(keyspace.current_key(WK))
            if raw is None:
                problems.append("the pointer disappeared")
                continue
            version, etag = keyspace.decode_pointer(cast(bytes, raw))
            envelope = read_envelope(reader_client, WK, version)
            reads.append(version)
            if envelope is None:
                problems.append(f"pointer to v{version} but its hash is missing")
            elif envelope.etag != etag or envelope.version != version:
                problems.append(f"pointer v{version} {etag} but hash {envelope.version} "
                                f"{envelope.etag}")
            elif etag_of(envelope.json) != etag:
                problems.append(f"v{version}: etag {etag} does not match its bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for b in bundles[1:]:
            publisher.write(WK, b)
    finally:
        done.set()
        thread.join()
        writer_client.close()
        reader_client.close()

    assert problems == []
    assert len(set(reads)) > 1  # the reader really overlapped the publishes
    assert RedisPublisher(redis_client).current(WK) == (200, bundles[-1].etag)


def test_pruning_keeps_the_newest_versions(redis_client: redis.Redis) -> None:
    """Only the newest keep_versions versions survive; older hashes are deleted."""
    publisher = RedisPublisher(redis_client, keep_versions=3)

    for n in range(1, 8):
        publisher.write(WK, bundle(n))

    assert kept(redis_client, WK) == [5, 6, 7]
    assert [redis_client.exists(keyspace.version_key(WK, n)) for n in range(1, 8)] == [
        0, 0, 0, 0, 1, 1, 1,
    ]
    assert publisher.current(WK) == (7, bundle(7).etag)


def test_pruning_never_deletes_the_current_version(redis_client: redis.Redis) -> None:
    """A rolled-back-to version older than the kept window stays while it is current."""
    publisher = RedisPublisher(redis_client, keep_versions=2)
    for n in range(1, 5):
        publisher.write(WK, bundle(n))

    publisher.write(WK, bundle(1), over=publisher.pointer(WK) or b"")

    assert publisher.current(WK) == (1, bundle(1).etag)
    assert kept(redis_client, WK) == [1, 3, 4]
    assert read_envelope(redis_client, WK, 1) is not None


def test_a_write_over_the_pointer_read_moves_it_to_a_lower_version(
        redis_client: redis.Redis) -> None:
    """write(over=pointer) moves the pointer back to an earlier version without rewriting
    history (what SQLite holds replacing a version it never made current)."""
    publisher = RedisPublisher(redis_client, keep_versions=3)
    for n in range(1, 4):
        publisher.write(WK, bundle(n))

    assert publisher.write(WK, bundle(2), over=publisher.pointer(WK) or b"") is True

    assert publisher.current(WK) == (2, bundle(2).etag)
    assert kept(redis_client, WK) == [1, 2, 3]
    envelope = read_envelope(redis_client, WK, 2)
    assert envelope is not None and envelope.json == doc(2)


def test_a_write_over_the_pointer_read_restores_a_pruned_version(
        redis_client: redis.Redis) -> None:
    """write(over=pointer) rewrites a version Redis no longer holds before pointing at it."""
    publisher = RedisPublisher(redis_client, keep_versions=1)
    publisher.write(WK, bundle(1))
    publisher.write(WK, bundle(2))
    assert read_envelope(redis_client, WK, 1) is None

    publisher.write(WK, bundle(1), over=publisher.pointer(WK) or b"")

    envelope = read_envelope(redis_client, WK, 1)
    assert envelope is not None and (envelope.json, envelope.gzip) == (doc(1), bundle(1).gzip)
    assert publisher.current(WK) == (1, bundle(1).etag)


def test_delete_source_removes_every_key(redis_client: redis.Redis) -> None:
    """delete_source leaves no key of the source and announces version 0; others stay."""
    publisher = RedisPublisher(redis_client)
    for n in range(1, 4):
        publisher.write(WK, bundle(n))
    publisher.write("other", bundle(1))
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keyspace.PUBLISHED_CHANNEL)
    assert pubsub.get_message(timeout=1.0) is None

    publisher.delete_source(WK)

    assert redis_client.keys(keyspace.tag(WK) + "*") == []
    assert publisher.current(WK) is None
    assert publisher.current("other") == (1, bundle(1).etag)
    message = pubsub.get_message(timeout=5.0)
    pubsub.close()
    assert message is not None and keyspace.decode_message(message["data"]) == (WK, 0)


def test_delete_source_escapes_glob_characters(redis_client: redis.Redis) -> None:
    """A write key with glob characters deletes only its own keys, not a look-alike's."""
    publisher = RedisPublisher(redis_client)
    publisher.write("a*", bundle(1))
    publisher.write("abc", bundle(1))

    publisher.delete_source("a*")

    assert publisher.current("a*") is None
    assert publisher.current("abc") == (1, bundle(1).etag)


def test_flushall_then_rewrite_from_store_restores_bytes(
    redis_client: redis.Redis, store: Store
) -> None:
    """After FLUSHALL, re-pointing at the store's current bundle restores it byte for byte."""
    ws = store.create_workspace("acme", "Acme")
    source = store.create_source(ws.id, "web", "Web", "web")
    publisher = RedisPublisher(redis_client, keep_versions=3)
    for n in range(1, 4):
        b = bundle(n)
        store.record_bundle(source.id, b)
        publisher.write(source.write_key, b)
    before = {
        n: redis_client.hgetall(keyspace.version_key(source.write_key, n)) for n in (1, 2, 3)
    }
    pointer_before = redis_client.get(keyspace.current_key(source.write_key))

    redis_client.flushall()
    for held in store.list_bundles(source.id):
        publisher.write(source.write_key, held)
    latest = store.latest_bundle(source.id)
    assert latest is not None
    publisher.write(source.write_key, latest)

    after = {
        n: redis_client.hgetall(keyspace.version_key(source.write_key, n)) for n in (1, 2, 3)
    }
    assert after == before
    assert redis_client.get(keyspace.current_key(source.write_key)) == pointer_before
    assert b"json" not in before[3] and gunzip(before[3][b"gzip"]) == doc(3)


def test_write_many_installs_every_source_in_batches(redis_client: redis.Redis) -> None:
    """write_many publishes each source (hash, pointer, history, message) across batches."""
    publisher = RedisPublisher(redis_client, keep_versions=2)
    keys = [f"wk-many-{i}" for i in range(7)]
    for key in keys:
        publisher.write(key, bundle(1))
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keyspace.PUBLISHED_CHANNEL)
    assert pubsub.get_message(timeout=1)  # the subscribe confirmation

    done = publisher.write_many(((key, bundle(n)) for key in keys for n in (2, 3)), batch=3)

    assert done == 14
    for key in keys:
        assert publisher.current(key) == (3, bundle(3).etag)
        assert kept(redis_client, key) == [2, 3]
        assert not redis_client.exists(keyspace.version_key(key, 1))
        envelope = read_envelope(redis_client, key, 3)
        assert envelope is not None and envelope.json == doc(3)
    messages = [pubsub.get_message(timeout=1) for _ in range(14)]
    assert sorted(m["data"] for m in messages if m) == sorted(
        keyspace.encode_message(key, n) for key in keys for n in (2, 3))
    pubsub.close()


def test_a_late_write_never_moves_the_pointer_back(redis_client: redis.Redis) -> None:
    """A write of a lower version than Redis serves (a publish from another process that
    lost the race) changes nothing and says so; a write over the pointer it read moves it
    back."""
    publisher = RedisPublisher(redis_client)
    assert publisher.write(WK, bundle(2)) is True

    late = publisher.write(WK, bundle(1))
    again = publisher.write(WK, bundle(2))

    assert late is False and again is True
    assert publisher.current(WK) == (2, bundle(2).etag)
    assert not redis_client.exists(keyspace.version_key(WK, 1))
    assert publisher.write(WK, bundle(1), over=publisher.pointer(WK) or b"") is True
    assert publisher.current(WK) == (1, bundle(1).etag)


def test_write_many_never_moves_the_pointer_back(redis_client: redis.Redis) -> None:
    """write_many leaves a higher version Redis serves in place, as write does, and names
    it refused."""
    publisher = RedisPublisher(redis_client)
    publisher.write("plain", bundle(3))
    refused: list[str] = []

    publisher.write_many([("plain", bundle(2)), ("new", bundle(1))], refused=refused)

    assert publisher.current("plain") == (3, bundle(3).etag)
    assert publisher.current("new") == (1, bundle(1).etag)
    assert refused == ["plain"]


def test_a_malformed_pointer_is_overwritten(redis_client: redis.Redis) -> None:
    """A pointer that is no '<version> <etag>' does not stop a write from replacing it."""
    publisher = RedisPublisher(redis_client)
    redis_client.set(keyspace.current_key(WK), b"garbage")

    assert publisher.write(WK, bundle(1)) is True
    assert publisher.current(WK) == (1, bundle(1).etag)
