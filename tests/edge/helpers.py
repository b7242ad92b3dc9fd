"""Put bundles into a real Redis the way the publisher does, using only ``edge.keyspace``."""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from edge import keyspace


def envelope(
    write_key: str, document: dict[str, Any], *, version: int = 1, published_at: int = 1_700_000_000
) -> keyspace.Envelope:
    raw = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return keyspace.Envelope(
        write_key=write_key,
        version=version,
        json=raw,
        gzip=gzip.compress(raw, mtime=0),
        etag='"' + hashlib.sha256(raw).hexdigest()[:32] + '"',
        published_at=published_at,
        revision=version,
    )


def document(write_key: str, **integrations: Any) -> dict[str, Any]:
    return {
        "integrations": {"Segment.io": {"apiKey": write_key}, **integrations},
        "plan": {},
        "metrics": {"sampleRate": 0},
    }


def publish(
    client: redis.Redis, write_key: str, doc: dict[str, Any] | None = None, *,
    version: int = 1, published_at: int = 1_700_000_000, announce: bool = False,
) -> keyspace.Envelope:
    """Write the version hash, then move the pointer (one MULTI/EXEC), optionally PUBLISH."""
    env = envelope(write_key, doc if doc is not None else document(write_key),
                   version=version, published_at=published_at)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keyspace.version_key(write_key, version), mapping=env.to_hash())  # type: ignore[arg-type]
    pipe.zadd(keyspace.versions_key(write_key), {str(version): version})
    pipe.set(keyspace.current_key(write_key), keyspace.encode_pointer(version, env.etag))
    pipe.execute()
    if announce:
        client.publish(keyspace.PUBLISHED_CHANNEL, keyspace.encode_message(write_key, version))
    return env


def unpublish(client: redis.Redis, write_key: str) -> None:
    client.delete(keyspace.current_key(write_key))


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll a condition the edge's background work makes true (no timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_for_version(client: Any, write_key: str, version: str) -> Any:
    """The first answer (identity) serving ``version`` of ``write_key``: a re-check runs in the
    background, so the answer that starts it still serves the held copy."""
    found: list[Any] = []

    def serves() -> bool:
        reply = client.get(f"/v1/projects/{write_key}/settings", headers={"accept-encoding": ""})
        found[:] = [reply]
        return bool(reply.headers.get("x-settings-version") == version)

    wait_until(serves, f"{write_key} v{version}")
    return found[0]


class ManualClock:
    """An injectable monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
