"""The configuration database's tables, and how values go into and come out of their rows.

Every row family (``sources``, ``instances``, ``bundles``, ``callers`` in this package)
reads and writes through these, so all of them agree on one encoding: JSON columns with sorted
keys (an unchanged value compares equal to the stored text, so its ``updated_at`` stays put),
RFC 3339 UTC timestamps, and names and slugs checked before they are written (a bad one is an
``InvalidArgument`` naming the value, not an SQLite constraint error).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from publisher.core.bundle import Bundle
from publisher.core.model import Source, SourceType, Workspace
from publisher.errors import InvalidArgument

SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    id           INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    slug         TEXT NOT NULL,
    name         TEXT NOT NULL,
    type         TEXT NOT NULL CHECK (type IN ('web', 'ios', 'android', 'server', 'project')),
    write_key    TEXT NOT NULL UNIQUE,
    revision     INTEGER NOT NULL DEFAULT 0,
    current_version INTEGER,  -- the bundle Redis should point at (moves on publish/rollback)
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (workspace_id, slug)
);
CREATE TABLE IF NOT EXISTS destinations (
    pk              INTEGER PRIMARY KEY,
    source_id       INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    catalog_slug    TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    display_key     TEXT NOT NULL,  -- casefold(display_name): uniqueness ignores case
    connection_mode TEXT NOT NULL CHECK (connection_mode IN ('CLOUD', 'DEVICE')),
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    settings        TEXT NOT NULL,  -- JSON object
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (source_id, id),
    UNIQUE (source_id, display_key)
);
CREATE TABLE IF NOT EXISTS filters (
    pk             INTEGER PRIMARY KEY,
    destination_pk INTEGER NOT NULL REFERENCES destinations(pk) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    if_expr        TEXT NOT NULL,
    actions        TEXT NOT NULL,  -- JSON array
    title          TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    enabled        INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    position       INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (destination_pk, id)
);
CREATE TABLE IF NOT EXISTS bundles (
    source_id    INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL CHECK (version >= 1),
    etag         TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    json         BLOB NOT NULL,
    gzip         BLOB NOT NULL,
    PRIMARY KEY (source_id, version)
);
CREATE TABLE IF NOT EXISTS tokens (
    id           INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unpublished (
    write_key TEXT PRIMARY KEY,  -- the outbox: Redis may not serve what SQLite holds for it
    since     TEXT NOT NULL      -- (committed with each new bundle and deletion, cleared once
);                               -- Redis has it; what a failed publish leaves, serve retries)
CREATE TABLE IF NOT EXISTS rollbacks (
    source_id INTEGER PRIMARY KEY REFERENCES sources(id) ON DELETE CASCADE,
    version   INTEGER NOT NULL,  -- the version a rollback made: a copy of the bytes of
    restores  INTEGER NOT NULL   -- this earlier version (rolled back while still current)
);
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id    TEXT PRIMARY KEY,
    source_id   INTEGER REFERENCES sources(id) ON DELETE SET NULL,
    status      INTEGER NOT NULL,
    response    TEXT NOT NULL,  -- JSON: replayed verbatim for a duplicate delivery
    received_at TEXT NOT NULL
);
"""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(value: Any, what: str = "value") -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidArgument(f"{what} is not JSON-serializable: {exc}") from None


def require_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def require_slug(what: str, value: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidArgument(
            f"{what} {value!r} is not a valid slug: 1-100 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def as_workspace(row: sqlite3.Row) -> Workspace:
    return Workspace(id=row["id"], slug=row["slug"], name=row["name"])


def as_source(row: sqlite3.Row) -> Source:
    return Source(
        id=row["id"],
        workspace_id=row["workspace_id"],
        slug=row["slug"],
        name=row["name"],
        type=cast(SourceType, row["type"]),
        write_key=row["write_key"],
        revision=row["revision"],
    )


def id_list(ids: Iterable[int]) -> str:
    """Row ids as one JSON parameter, for ``IN (SELECT value FROM json_each(?))``."""
    return orjson.dumps(list(ids)).decode()


def as_bundle(row: sqlite3.Row) -> Bundle:
    return Bundle(
        version=row["version"],
        etag=row["etag"],
        published_at=row["published_at"],
        revision=row["revision"],
        json=bytes(row["json"]),
        gzip=bytes(row["gzip"]),
    )
