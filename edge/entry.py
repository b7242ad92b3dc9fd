"""What the edge's cache holds: one bundle's bytes with its answers' header lines built once.

An ``Entry`` is built when a bundle is read from Redis, so a hit writes prepared bytes and
computes nothing but ``Age``; ``Entries`` keeps them bounded, least recently *verified*
first. The cache's logic around them — single-flight reads, refresh, Redis back-off, the
negative cache — is edge/cache.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge import http
from edge.keyspace import Stored


@dataclass(slots=True, eq=False)
class Entry:
    write_key: str
    version: int
    etag: str
    published_at: int
    gzip: bytes
    # Header lines of each answer, serialized once (``http.header_block``), the lines all
    # bundles share aside (``BundleCache.shared_200`` / ``shared_304``): the fast path
    # (edge/server.py) writes them as they are; the ASGI path splits them back into a list.
    wire_gzip: bytes
    wire_304: bytes
    checked_at: float  # clock time of the last successful check against Redis
    fresh_until: float
    stale: bool = False
    replaced: bool = False  # a publish message named a newer version (instant mode)
    etag_bytes: bytes = b""
    # The uncompressed answer, derived from ``gzip`` when a client first asks for it
    # (``identity``): most never do, and Redis sends the gzip bytes alone.
    json: bytes | None = None
    wire_identity: bytes = b""

    @classmethod
    def build(cls, stored: Stored, *, now: float, refresh: float) -> Entry:
        gzipped, not_modified = http.bundle_blocks(
            write_key=stored.write_key, version=stored.version, etag=stored.etag,
            published_at=stored.published_at, gzip_length=len(stored.gzip),
        )
        return cls(
            write_key=stored.write_key, version=stored.version, etag=stored.etag,
            published_at=stored.published_at, gzip=stored.gzip, wire_gzip=gzipped,
            wire_304=not_modified, checked_at=now, fresh_until=now + refresh,
            etag_bytes=stored.etag.encode("latin-1"),
        )

    def identity(self) -> tuple[bytes, bytes]:
        """Header lines and body of the uncompressed answer; the first call decompresses the
        gzip bytes and keeps the result. Raises ``ValueError`` when they are not a gzip
        stream of at most ``http.MAX_JSON`` bytes (a corrupt store)."""
        if self.json is None:
            body = http.gunzip(self.gzip)
            self.wire_identity = http.identity_lines(self.wire_gzip, len(body))
            self.json = body
        return self.wire_identity, self.json

    def age(self, now: float) -> int:
        """Seconds since last verified, rounded up (conservative for ``Age``)."""
        return max(0, math.ceil(now - self.checked_at))


class Entries(dict[str, Entry]):
    """Bundles by write key, least recently *verified* first.

    A hit is a plain ``dict.get``: no bookkeeping per request. Recency moves only when an
    entry is filled or re-verified against Redis (at least once per refresh interval while it
    is requested), so the bundles evicted first are the ones nobody asked for lately.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def put(self, key: str, entry: Entry) -> None:
        self.pop(key, None)
        self[key] = entry
        while len(self) > self.maxsize:
            del self[next(iter(self))]
