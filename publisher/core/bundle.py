"""A bundle: one published version of a source's settings document, made once.

The compiler's canonical bytes, their gzip and their ETag are computed here, once per version;
SQLite keeps the same :class:`Bundle` (publisher/store/bundles.py) and Redis is written from it
(publisher/publish.py), so Redis can always be rebuilt from SQLite byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

from edge import keyspace


@dataclass(frozen=True, slots=True)
class Bundle:
    """One published version of a source's settings document, as Redis and SQLite hold it."""

    version: int
    etag: str  # strong entity tag, quotes included: '"<hex>"'
    published_at: int  # Unix seconds
    revision: int
    json: bytes
    gzip: bytes

    def envelope(self, write_key: str) -> keyspace.Envelope:
        return keyspace.Envelope(
            write_key=write_key,
            version=self.version,
            json=self.json,
            gzip=self.gzip,
            etag=self.etag,
            published_at=self.published_at,
            revision=self.revision,
        )


def etag_of(json_bytes: bytes) -> str:
    """The strong ETag of a document: a quoted 128-bit prefix of its SHA-256."""
    return '"' + hashlib.sha256(json_bytes).hexdigest()[:32] + '"'


def make_bundle(json_bytes: bytes, *, version: int, revision: int, published_at: int) -> Bundle:
    """Gzip and hash the canonical bytes once; mtime=0 makes the gzip reproducible."""
    if version < 1:
        raise ValueError(f"bundle version must be >= 1, got {version}")
    return Bundle(
        version=version,
        etag=etag_of(json_bytes),
        published_at=published_at,
        revision=revision,
        json=json_bytes,
        gzip=gzip.compress(json_bytes, compresslevel=9, mtime=0),
    )
