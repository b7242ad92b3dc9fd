"""The Redis keyspace and bundle envelope: the one contract the publisher and the edge share.

The edge owns this module because it is the reader; ``publisher`` imports it, never the
reverse. Every key of one source carries the write key as a Redis Cluster hash tag
(``{<writeKey>}``) so that one source's keys live in one slot: a publish is one atomic
script, and so is the edge's cold read of pointer + version (edge/store.py batches several
sources into one script call, so the edge reads one Redis or replica, not a Cluster).

| key / channel              | holds                                                          |
|----------------------------|----------------------------------------------------------------|
| ``sc:{wk}:v:<n>``          | hash: ``gzip``, ``etag``, ``published_at``, ``revision``,      |
|                            | ``version`` (no JSON: readers inflate ``gzip``)                |
| ``sc:{wk}:current``        | ``"<n> <etag>"``: the current version, moved after ``v:<n>`` exists |
| ``sc:{wk}:versions``       | sorted set of kept version numbers (score = version): the      |
|                            | current one and ``PUBLISHER_REDIS_KEEP_VERSIONS`` - 1 before   |
| channel ``sc:published``   | ``"<wk> <n>"`` after each publish (instant mode)                |
| ``sc:loaded``              | Unix time the publisher last found Redis holding every source  |

``sc:loaded`` tells "this source was deleted" from "this Redis has not been loaded": a Redis
restarted without its data, flushed, or a replica promoted before it synced holds no
``sc:loaded``. The publisher sets it once it has compared every source in SQLite with Redis
and published what was missing (``serve`` at start, after a Redis restart and whenever the key
is gone; ``republish --all``; ``publish --all``), and never deletes it. The edge answers an
absent pointer with 404 only while ``sc:loaded`` exists; without it, a held copy is served
stale and a never-seen key gets 503 with ``Retry-After``.

``published_at`` is Unix time in whole seconds (HTTP dates have one-second resolution).

Redis holds only what edges serve: the gzip bytes (the uncompressed JSON is inflated from them
by whoever wants it) and the last few versions, so that an edge that read the pointer just
before a publish still finds the version it names. The full history, which rollback, diff and
republish read, is SQLite's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

PREFIX = "sc"
# What a write key may be: URL-safe, so it can sit in a path and a hash tag unescaped.
WRITE_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
PUBLISHED_CHANNEL = f"{PREFIX}:published"
LOADED_KEY = f"{PREFIX}:loaded"  # no hash tag: one per Redis, read beside any source's keys
# A strong entity-tag (RFC 9110 §8.8.3): the edge writes it into responses without re-checking.
ETAG_RE = re.compile(rb'"[\x21\x23-\x7e]*"')

# Field names of the version hash.
F_GZIP = "gzip"
F_ETAG = "etag"
F_PUBLISHED_AT = "published_at"
F_REVISION = "revision"
F_VERSION = "version"
FIELDS = (F_GZIP, F_ETAG, F_PUBLISHED_AT, F_REVISION, F_VERSION)
# What the edge reads of a version (``Stored``): not the JSON, which it derives from the gzip
# bytes for the few clients that want it uncompressed (edge/entry.py, ``Entry.identity``).
EDGE_FIELDS = (F_GZIP, F_ETAG, F_PUBLISHED_AT, F_VERSION)


def tag(write_key: str) -> str:
    return f"{PREFIX}:{{{write_key}}}"


def version_prefix(write_key: str) -> str:
    return f"{tag(write_key)}:v:"


def version_key(write_key: str, version: int) -> str:
    return f"{version_prefix(write_key)}{version}"


def current_key(write_key: str) -> str:
    return f"{tag(write_key)}:current"


def versions_key(write_key: str) -> str:
    return f"{tag(write_key)}:versions"


def encode_pointer(version: int, etag: str) -> bytes:
    return f"{version} {etag}".encode()


def decode_pointer(raw: bytes | str) -> tuple[int, str]:
    """Parse a ``current`` pointer; raises ``ValueError`` on anything malformed."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    version, _, etag = text.partition(" ")
    return int(version), etag


def encode_message(write_key: str, version: int) -> bytes:
    return f"{write_key} {version}".encode()


def decode_message(raw: bytes | str) -> tuple[str, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    write_key, _, version = text.partition(" ")
    return write_key, int(version)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One published bundle version: what Redis stores (``to_hash``) plus its JSON, which
    Redis does not hold and ``from_fields`` inflates from the gzip bytes."""

    write_key: str
    version: int
    json: bytes
    gzip: bytes
    etag: str  # strong entity tag, quotes included: '"<hex>"'
    published_at: int
    revision: int

    def to_hash(self) -> dict[str, bytes | str | int]:
        return {
            F_GZIP: self.gzip,
            F_ETAG: self.etag,
            F_PUBLISHED_AT: self.published_at,
            F_REVISION: self.revision,
            F_VERSION: self.version,
        }

    @classmethod
    def from_fields(cls, write_key: str, values: list[bytes | None]) -> Envelope | None:
        """Build from ``HMGET key *FIELDS`` output; ``None`` when the hash is absent.

        The JSON is the gzip bytes inflated (at most ``edge.http.MAX_JSON`` bytes); raises
        ``ValueError`` on a malformed gzip stream or ETag.
        """
        from edge.http import gunzip  # edge.http imports this module

        if any(v is None for v in values):
            return None
        raw_gzip, etag, published_at, revision, version = values
        assert raw_gzip is not None  # checked above, for mypy
        if ETAG_RE.fullmatch(etag or b"") is None:  # it goes into a response header as is
            raise ValueError(f"malformed etag {etag!r}")
        return cls(
            write_key=write_key,
            version=int(version or 0),
            json=gunzip(raw_gzip),
            gzip=raw_gzip,
            etag=(etag or b"").decode(),
            published_at=int(published_at or 0),
            revision=int(revision or 0),
        )


MAX_PUBLISHED_AT = 253_402_300_799  # 9999-12-31T23:59:59Z: the last time an HTTP-date holds


class Stored(NamedTuple):
    """What the edge reads of one published version (``EDGE_FIELDS``): the gzip bytes and the
    metadata its headers need. A tuple: the edge builds one per cold miss."""

    write_key: str
    version: int
    etag: str  # strong entity tag, quotes included, checked against ETAG_RE
    published_at: int
    gzip: bytes

    @classmethod
    def from_fields(cls, write_key: str, values: list[bytes | None]) -> Stored | None:
        """Build from ``HMGET key *EDGE_FIELDS`` output; ``None`` when the hash is absent.

        Raises ``ValueError`` (or ``UnicodeDecodeError``) on anything malformed: the ETag
        goes into response headers as it is.
        """
        gzip, etag, published_at, version = values
        if gzip is None or etag is None or published_at is None or version is None:
            return None
        if ETAG_RE.fullmatch(etag) is None:
            raise ValueError(f"malformed etag {etag!r}")
        when = int(published_at)
        if not 0 <= when <= MAX_PUBLISHED_AT:  # it becomes Last-Modified, an HTTP-date
            raise ValueError(f"published_at {when} is not a time from 1970 to 9999")
        return cls(write_key, int(version), etag.decode(), when, gzip)
