"""SQLite (WAL): the publisher's source of truth — Redis can always be rebuilt from it.

Everything a publish needs lives here: workspaces, sources and their write keys, destination
instances with their filters, and every kept published bundle *with its bytes*, so
``republish --all`` restores Redis byte for byte and a rollback works after a Redis flush.

Two connections per process, each shared by its threads under a lock: one writes, the other
(``query_only``) answers reads from the last commit, so a read never waits for a write.
:meth:`Store.transaction` is ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two
writers queue on ``busy_timeout`` instead of failing half-way); nested use is a SAVEPOINT, so
every write method is atomic on its own and also composes into a caller's transaction.
Lookups (``get_*``, ``*_bundle``) return ``None`` for an absent row; writes raise
``InvalidArgument``, ``AlreadyExists`` or ``NotFound`` naming the value at fault. Timestamps
are RFC 3339 UTC strings; ``published_at`` is Unix seconds like the keyspace's.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from edge import keyspace
from publisher.errors import AlreadyExists, Busy, InvalidArgument, NotFound
from publisher.model import (
    CONNECTION_MODES,
    SOURCE_TYPES,
    Filter,
    Instance,
    Source,
    SourceType,
    Workspace,
)
from publisher.publish import Bundle

# How long a write waits for another process's write transaction. Every write holds its
# transaction across one Redis call, which times out after PUBLISHER_REDIS_TIMEOUT (5 s by
# default): a write behind it waits well past that before it gives up (Busy, a 503).
BUSY_TIMEOUT_MS = 15_000
SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
WRITE_KEY_RE = keyspace.WRITE_KEY_RE
INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
TOKEN_SCOPES = ("read", "write")

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
    write_key TEXT PRIMARY KEY,  -- Redis may not serve what SQLite holds for it (a publish or a
    since     TEXT NOT NULL      -- deletion Redis refused): serve's retry loop, any process's
);
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id    TEXT PRIMARY KEY,
    source_id   INTEGER REFERENCES sources(id) ON DELETE SET NULL,
    status      INTEGER NOT NULL,
    response    TEXT NOT NULL,  -- JSON: replayed verbatim for a duplicate delivery
    received_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Token:
    """An API token's record; the store only ever sees the token's hash."""

    id: int
    workspace_id: int
    name: str
    scope: str
    created_at: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    event_id: str
    source_id: int | None
    status: int
    response: Any
    received_at: str


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: Any, what: str = "value") -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidArgument(f"{what} is not JSON-serializable: {exc}") from None


def _require_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def _require_slug(what: str, value: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidArgument(
            f"{what} {value!r} is not a valid slug: 1-100 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def slugify(text: str) -> str:
    """A URL-safe lower-case slug of a name: "Google Analytics 4" -> "google-analytics-4"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:64].rstrip("-") or "destination"


def new_instance_id(display_name: str, taken: Collection[str]) -> str:
    """A URL-safe id for a new instance, from its display name, not in ``taken``."""
    base = slugify(display_name)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # guarded by Store's locks
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _workspace(row: sqlite3.Row) -> Workspace:
    return Workspace(id=row["id"], slug=row["slug"], name=row["name"])


def _source(row: sqlite3.Row) -> Source:
    return Source(
        id=row["id"],
        workspace_id=row["workspace_id"],
        slug=row["slug"],
        name=row["name"],
        type=cast(SourceType, row["type"]),
        write_key=row["write_key"],
        revision=row["revision"],
    )


def _id_list(ids: Iterable[int]) -> str:
    """Row ids as one JSON parameter, for ``IN (SELECT value FROM json_each(?))``."""
    return orjson.dumps(list(ids)).decode()


def _bundle(row: sqlite3.Row) -> Bundle:
    return Bundle(
        version=row["version"],
        etag=row["etag"],
        published_at=row["published_at"],
        revision=row["revision"],
        json=bytes(row["json"]),
        gzip=bytes(row["gzip"]),
    )


def _check_instances(source_id: int, instances: Sequence[Instance]) -> None:
    """Shape checks the store owns (the destination rules live in rules.py)."""
    ids: set[str] = set()
    names: dict[str, str] = {}
    for inst in instances:
        if not isinstance(inst.id, str) or not INSTANCE_ID_RE.match(inst.id):
            raise InvalidArgument(
                f"destination instance id {inst.id!r} is not URL-safe "
                "(1-100 letters, digits, '_', '-')"
            )
        if inst.id in ids:
            raise InvalidArgument(f"destination instance id {inst.id!r} appears twice")
        ids.add(inst.id)
        name = _require_name(f"display name of instance {inst.id!r}", inst.display_name)
        key = name.casefold()
        if key in names:
            raise AlreadyExists(
                f"display name {name!r} is used by instances {names[key]!r} and {inst.id!r} "
                f"of source {source_id}; display names are unique per source",
                code="display_name_taken",
            )
        names[key] = inst.id
        _require_name(f"catalog destination of instance {inst.id!r}", inst.catalog_slug)
        if inst.connection_mode not in CONNECTION_MODES:
            raise InvalidArgument(
                f"connection mode {inst.connection_mode!r} of instance {inst.id!r} must be "
                f"one of {', '.join(CONNECTION_MODES)}"
            )
        if not isinstance(inst.settings, dict):
            raise InvalidArgument(f"settings of instance {inst.id!r} must be a JSON object")
        fids: set[str] = set()
        for f in inst.filters:
            if not isinstance(f.id, str) or not f.id:
                raise InvalidArgument(f"a filter of instance {inst.id!r} has no id")
            if f.id in fids:
                raise InvalidArgument(f"filter id {f.id!r} appears twice on instance {inst.id!r}")
            fids.add(f.id)


class Store:
    """The configuration database. Build with :meth:`open`; every method is thread-safe."""

    def __init__(self, conn: sqlite3.Connection,
                 reader: sqlite3.Connection | None = None) -> None:
        self._conn = conn
        # WAL lets a second connection read the last committed state while the first writes:
        # a request that only reads never waits for a write, which holds its transaction
        # across a Redis call (up to PUBLISHER_REDIS_TIMEOUT on a hung Redis). A ":memory:"
        # database is one connection: reads then wait for a running write.
        self._reader = conn if reader is None else reader
        self._lock = threading.RLock()  # the write connection
        self._read_lock = self._lock if reader is None else threading.Lock()
        self._depth = 0
        self._writer: int | None = None  # the thread inside transaction()

    @classmethod
    def open(cls, path: str) -> Store:
        """Open (creating if needed) the database at ``path``; ``":memory:"`` for tests."""
        conn: sqlite3.Connection | None = None
        reader: sqlite3.Connection | None = None
        try:
            conn = _connect(path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives app crashes
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            if path not in (":memory:", ""):  # (each of those is a database of its own)
                reader = _connect(path)
                reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            for opened in (conn, reader):
                if opened is not None:
                    opened.close()
            raise InvalidArgument(
                f"cannot open the configuration database {path!r}: {exc}",
                code="database_unavailable",
            ) from None
        return cls(conn, reader)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._conn.close()
            self._reader.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: commit on success, roll back on any exception (then re-raise).

        Nested use opens a SAVEPOINT: an exception that escapes the inner block undoes only
        the inner block's writes, and the outer block decides about the rest.
        """
        with self._lock:
            if self._depth:
                name = f"sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                else:
                    self._conn.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked past busy_timeout
                raise Busy(f"the configuration database is busy: {exc} (another publisher "
                           f"process held its write lock for {BUSY_TIMEOUT_MS // 1000} s); "
                           "retry shortly") from None
            self._depth, self._writer = 1, threading.get_ident()
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth, self._writer = 0, None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection a read uses: inside this thread's transaction the transaction's own
        (it sees what the transaction wrote), otherwise the reader (the last commit)."""
        if self._depth and self._writer == threading.get_ident():
            with self._lock:
                yield self._conn
            return
        with self._read_lock:
            yield self._reader

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-statement reads (joins a running transaction)."""
        with self._reading() as conn:
            if conn is self._conn and self._depth:
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._reading() as conn:
            return cast(sqlite3.Row | None, conn.execute(sql, args).fetchone())

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._reading() as conn:
            return conn.execute(sql, args).fetchall()

    # -- workspaces -------------------------------------------------------------------

    def create_workspace(self, slug: str, name: str) -> Workspace:
        _require_slug("workspace slug", slug)
        name = _require_name("workspace name", name)
        with self.transaction():
            if self._one("SELECT 1 FROM workspaces WHERE slug = ?", (slug,)):
                raise AlreadyExists(f"workspace {slug!r} already exists")
            cur = self._conn.execute(
                "INSERT INTO workspaces (slug, name, created_at) VALUES (?, ?, ?)",
                (slug, name, now_rfc3339()),
            )
        return Workspace(id=cast(int, cur.lastrowid), slug=slug, name=name)

    def get_workspace(self, slug: str) -> Workspace | None:
        row = self._one("SELECT * FROM workspaces WHERE slug = ?", (slug,))
        return _workspace(row) if row is not None else None

    def list_workspaces(self) -> list[Workspace]:
        return [_workspace(r) for r in self._all("SELECT * FROM workspaces ORDER BY slug")]

    # -- sources ----------------------------------------------------------------------

    def create_source(
        self,
        workspace_id: int,
        slug: str,
        name: str,
        type: str,
        *,
        write_key: str | None = None,
    ) -> Source:
        """Create a source; its write key is generated unless one is given (declarative files)."""
        _require_slug("source slug", slug)
        name = _require_name("source name", name)
        if type not in SOURCE_TYPES:
            raise InvalidArgument(
                f"source type {type!r} is not one of {', '.join(SOURCE_TYPES)}"
            )
        if write_key is not None and (
            not isinstance(write_key, str) or not WRITE_KEY_RE.fullmatch(write_key)
        ):
            raise InvalidArgument(
                f"write key {write_key!r} is not URL-safe (1-128 letters, digits, '_', '-')"
            )
        with self.transaction():
            if not self._one("SELECT 1 FROM workspaces WHERE id = ?", (workspace_id,)):
                raise NotFound(f"workspace {workspace_id} not found")
            if self._one(
                "SELECT 1 FROM sources WHERE workspace_id = ? AND slug = ?", (workspace_id, slug)
            ):
                raise AlreadyExists(f"source {slug!r} already exists in workspace {workspace_id}")
            if write_key is None:
                write_key = secrets.token_urlsafe(24)  # 192 bits -> 32 URL-safe characters
                while self._one("SELECT 1 FROM sources WHERE write_key = ?", (write_key,)):
                    write_key = secrets.token_urlsafe(24)
            elif self._one("SELECT 1 FROM sources WHERE write_key = ?", (write_key,)):
                raise AlreadyExists(f"write key {write_key!r} is already used by another source")
            now = now_rfc3339()
            cur = self._conn.execute(
                "INSERT INTO sources (workspace_id, slug, name, type, write_key, revision,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                (workspace_id, slug, name, type, write_key, now, now),
            )
        return Source(
            id=cast(int, cur.lastrowid),
            workspace_id=workspace_id,
            slug=slug,
            name=name,
            type=cast(SourceType, type),
            write_key=write_key,
        )

    def get_source(self, workspace_id: int, slug: str) -> Source | None:
        row = self._one(
            "SELECT * FROM sources WHERE workspace_id = ? AND slug = ?", (workspace_id, slug)
        )
        return _source(row) if row is not None else None

    def get_source_by_id(self, source_id: int) -> Source | None:
        row = self._one("SELECT * FROM sources WHERE id = ?", (source_id,))
        return _source(row) if row is not None else None

    def get_source_by_write_key(self, write_key: str) -> Source | None:
        row = self._one("SELECT * FROM sources WHERE write_key = ?", (write_key,))
        return _source(row) if row is not None else None

    def _require_source(self, source_id: int) -> Source:
        found = self.get_source_by_id(source_id)
        if found is None:
            raise NotFound(f"source {source_id} not found")
        return found

    def list_sources(self, workspace_id: int) -> list[Source]:
        rows = self._all(
            "SELECT * FROM sources WHERE workspace_id = ? ORDER BY slug", (workspace_id,)
        )
        return [_source(r) for r in rows]

    def all_sources(self) -> list[Source]:
        return [_source(r) for r in self._all("SELECT * FROM sources ORDER BY id")]

    def delete_source(self, source_id: int) -> None:
        """Delete a source with its instances, filters and bundles."""
        with self.transaction():
            cur = self._conn.execute("DELETE FROM sources WHERE id = ?", (source_id,))
            if cur.rowcount == 0:
                raise NotFound(f"source {source_id} not found")

    def bump_revision(self, source_id: int) -> int:
        """Increase the source's revision by one and return it (every change calls this)."""
        with self.transaction():
            row = self._conn.execute(
                "UPDATE sources SET revision = revision + 1, updated_at = ? WHERE id = ?"
                " RETURNING revision",
                (now_rfc3339(), source_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"source {source_id} not found")
        return int(row["revision"])

    def set_revision(self, source_id: int, revision: int) -> int:
        """Set the revision from outside (the webhook's control plane); it never goes back."""
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise InvalidArgument(f"revision must be a non-negative integer, got {revision!r}")
        with self.transaction():
            current = self._require_source(source_id).revision
            if revision < current:
                raise InvalidArgument(
                    f"revision {revision} is older than source {source_id}'s revision {current}",
                    code="stale_revision",
                )
            self._conn.execute(
                "UPDATE sources SET revision = ?, updated_at = ? WHERE id = ?",
                (revision, now_rfc3339(), source_id),
            )
        return revision

    # -- destination instances --------------------------------------------------------

    def list_instances(self, source_id: int) -> list[Instance]:
        """The source's instances (in creation order) with their filters (in position order)."""
        return self.instances_of([source_id])[source_id]

    def instances_of(self, source_ids: Sequence[int]) -> dict[int, list[Instance]]:
        """``list_instances`` of many sources in two statements (``republish --all``).

        Every given id is a key, a source without instances (or an unknown id) maps to ``[]``.
        """
        ids = _id_list(source_ids)
        out: dict[int, list[Instance]] = {source_id: [] for source_id in source_ids}
        with self._read() as conn:
            # Plain tuples, unpacked by position and consumed as they come: republishing reads
            # every instance of every source, and sqlite3.Row lookups by name and a fetchall()
            # of thousands of rows cost a quarter of this method's time.
            cur = conn.cursor()
            cur.row_factory = None
            by_dest: dict[int, list[Filter]] = {}
            for dest_pk, filter_id, if_expr, actions, title, description, enabled in cur.execute(
                    "SELECT f.destination_pk, f.id, f.if_expr, f.actions, f.title, f.description,"
                    " f.enabled FROM filters f JOIN destinations d ON d.pk = f.destination_pk"
                    " WHERE d.source_id IN (SELECT value FROM json_each(?))"
                    " ORDER BY f.destination_pk, f.position", (ids,)):
                by_dest.setdefault(dest_pk, []).append(Filter(
                    id=filter_id, if_=if_expr, actions=tuple(orjson.loads(actions)),
                    title=title, description=description, enabled=bool(enabled)))
            for (pk, source_id, inst_id, slug, display_name, mode, enabled, settings,
                 created_at, updated_at) in cur.execute(
                    "SELECT pk, source_id, id, catalog_slug, display_name, connection_mode,"
                    " enabled, settings, created_at, updated_at FROM destinations"
                    " WHERE source_id IN (SELECT value FROM json_each(?)) ORDER BY pk", (ids,)):
                out[source_id].append(Instance(
                    id=inst_id, catalog_slug=slug, display_name=display_name,
                    connection_mode=mode, enabled=bool(enabled), settings=orjson.loads(settings),
                    filters=tuple(by_dest.get(pk, ())), created_at=created_at,
                    updated_at=updated_at))
        return out

    def replace_instances(self, source_id: int, instances: Sequence[Instance]) -> None:
        """Make the stored instances exactly ``instances`` (matched by id).

        Unchanged instances keep both timestamps, changed ones keep ``created_at`` and get a
        new ``updated_at``, missing ones are deleted with their filters, new ones are created.
        The same holds for each instance's filters, matched by filter id.
        """
        _check_instances(source_id, instances)
        now = now_rfc3339()
        with self.transaction():
            self._require_source(source_id)
            existing = {
                r["id"]: r
                for r in self._conn.execute(
                    "SELECT * FROM destinations WHERE source_id = ?", (source_id,)
                )
            }
            wanted = {inst.id for inst in instances}
            for gone in existing.keys() - wanted:
                self._conn.execute("DELETE FROM destinations WHERE pk = ?", (existing[gone]["pk"],))
            # Park renamed instances on a unique placeholder first, so that swapping two
            # display names does not trip the per-source uniqueness constraint mid-way.
            for inst in instances:
                row = existing.get(inst.id)
                if row is not None and row["display_name"] != inst.display_name.strip():
                    self._conn.execute(
                        "UPDATE destinations SET display_key = ? WHERE pk = ?",
                        ("\x00" + inst.id, row["pk"]),
                    )
            for inst in instances:
                pk = self._upsert_instance(source_id, inst, existing.get(inst.id), now)
                self._replace_filters(pk, inst.filters, now)

    def _upsert_instance(
        self, source_id: int, inst: Instance, row: sqlite3.Row | None, now: str
    ) -> int:
        name = inst.display_name.strip()
        values = (
            inst.catalog_slug,
            name,
            name.casefold(),
            inst.connection_mode,
            int(inst.enabled),
            _json(inst.settings, f"settings of instance {inst.id!r}"),
        )
        if row is None:
            cur = self._conn.execute(
                "INSERT INTO destinations (source_id, id, catalog_slug, display_name,"
                " display_key, connection_mode, enabled, settings, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (source_id, inst.id, *values, inst.created_at or now, now),
            )
            return cast(int, cur.lastrowid)
        before = (
            row["catalog_slug"],
            row["display_name"],
            row["display_name"].casefold(),
            row["connection_mode"],
            row["enabled"],
            row["settings"],
        )
        updated_at = row["updated_at"] if before == values else now
        self._conn.execute(
            "UPDATE destinations SET catalog_slug = ?, display_name = ?, display_key = ?,"
            " connection_mode = ?, enabled = ?, settings = ?, updated_at = ? WHERE pk = ?",
            (*values, updated_at, row["pk"]),
        )
        return cast(int, row["pk"])

    def _replace_filters(self, destination_pk: int, filters: Sequence[Filter], now: str) -> None:
        existing = {
            r["id"]: r
            for r in self._conn.execute(
                "SELECT * FROM filters WHERE destination_pk = ?", (destination_pk,)
            )
        }
        for gone in existing.keys() - {f.id for f in filters}:
            self._conn.execute("DELETE FROM filters WHERE pk = ?", (existing[gone]["pk"],))
        for position, f in enumerate(filters):
            actions = _json(list(f.actions), f"actions of filter {f.id!r}")
            values = (f.if_, actions, f.title, f.description, int(f.enabled))
            row = existing.get(f.id)
            if row is None:
                self._conn.execute(
                    "INSERT INTO filters (destination_pk, id, if_expr, actions, title,"
                    " description, enabled, position, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (destination_pk, f.id, *values, position, now, now),
                )
                continue
            before = (row["if_expr"], row["actions"], row["title"], row["description"],
                      row["enabled"])
            updated_at = row["updated_at"] if before == values else now
            self._conn.execute(
                "UPDATE filters SET if_expr = ?, actions = ?, title = ?, description = ?,"
                " enabled = ?, position = ?, updated_at = ? WHERE pk = ?",
                (*values, position, updated_at, row["pk"]),
            )

    # -- bundles ----------------------------------------------------------------------

    def record_bundle(self, source_id: int, bundle: Bundle) -> None:
        """Keep a published bundle (bytes included) and make it the source's current one."""
        self.record_bundles([(source_id, bundle)])

    def record_bundles(self, items: Sequence[tuple[int, Bundle]]) -> None:
        """``record_bundle`` for many sources at once, in four statements whatever their number.

        In order, as if recorded one by one; all or nothing.
        """
        if not items:
            return
        ids = _id_list(source_id for source_id, _ in items)
        with self.transaction():
            found = {r["id"] for r in self._conn.execute(
                "SELECT id FROM sources WHERE id IN (SELECT value FROM json_each(?))", (ids,))}
            held: dict[tuple[int, int], str] = {
                (r["source_id"], r["version"]): r["etag"] for r in self._conn.execute(
                    "SELECT source_id, version, etag FROM bundles"
                    " WHERE source_id IN (SELECT value FROM json_each(?))", (ids,))}
            new: list[tuple[int, int, str, int, int, bytes, bytes]] = []
            for source_id, bundle in items:
                if source_id not in found:
                    raise NotFound(f"source {source_id} not found")
                etag = held.get((source_id, bundle.version))
                if etag is None:
                    held[source_id, bundle.version] = bundle.etag
                    new.append((source_id, bundle.version, bundle.etag, bundle.revision,
                                bundle.published_at, bundle.json, bundle.gzip))
                elif etag != bundle.etag:
                    raise AlreadyExists(
                        f"version {bundle.version} of source {source_id} already holds another "
                        f"bundle (etag {etag}, not {bundle.etag}); versions are immutable"
                    )
            self._conn.executemany(
                "INSERT INTO bundles (source_id, version, etag, revision, published_at,"
                " json, gzip) VALUES (?, ?, ?, ?, ?, ?, ?)", new)
            self._conn.executemany(
                "UPDATE sources SET current_version = ? WHERE id = ?",
                [(bundle.version, source_id) for source_id, bundle in items])

    def set_current(self, source_id: int, version: int, *, published_at: int | None = None
                    ) -> None:
        """Make a kept version the one Redis should serve (rollback records itself here);
        ``published_at`` re-dates it (a rollback serves it again from that time on)."""
        with self.transaction():
            if self.get_bundle(source_id, version) is None:
                raise NotFound(f"version {version} of source {source_id} is not kept")
            self._conn.execute(
                "UPDATE sources SET current_version = ? WHERE id = ?", (version, source_id)
            )
            if published_at is not None:
                self._conn.execute(
                    "UPDATE bundles SET published_at = ? WHERE source_id = ? AND version = ?",
                    (published_at, source_id, version))

    def current_bundle(self, source_id: int) -> Bundle | None:
        """The bundle Redis should serve for the source (after a rollback: not the newest)."""
        row = self._one(
            "SELECT b.* FROM bundles b JOIN sources s"
            " ON s.id = b.source_id AND s.current_version = b.version WHERE s.id = ?",
            (source_id,),
        )
        return _bundle(row) if row is not None else self.latest_bundle(source_id)

    def current_bundles(self, after: int, limit: int
                        ) -> list[tuple[Source, Bundle | None, bool]]:
        """One page of sources (ids above ``after``, ``limit`` of them) with the bundle Redis
        should serve, and whether that bundle is below the source's highest kept version
        (rolled back): ``republish --all`` reads and publishes page by page."""
        rows = self._all(
            "SELECT s.*, b.version AS b_version, b.etag AS b_etag,"
            " b.published_at AS b_published_at, b.revision AS b_revision,"
            " b.json AS b_json, b.gzip AS b_gzip,"
            " (SELECT MAX(version) FROM bundles WHERE source_id = s.id) AS b_latest"
            " FROM sources s"
            " LEFT JOIN bundles b ON b.source_id = s.id AND b.version = s.current_version"
            " WHERE s.id > ? ORDER BY s.id LIMIT ?", (after, limit))
        page: list[tuple[Source, Bundle | None, bool]] = []
        for row in rows:
            bundle = None if row["b_version"] is None else Bundle(
                version=row["b_version"], etag=row["b_etag"],
                published_at=row["b_published_at"], revision=row["b_revision"],
                json=bytes(row["b_json"]), gzip=bytes(row["b_gzip"]))
            page.append((_source(row), bundle,
                         bundle is not None and bundle.version < row["b_latest"]))
        return page

    def current_pointers(self) -> Iterator[tuple[str, int, str]]:
        """``(write_key, version, etag)`` of every source's current bundle, in pages, without
        the bytes: what Redis's pointers should say (the publisher's check at start)."""
        last = 0
        while True:
            rows = self._all(
                "SELECT s.id, s.write_key, b.version, b.etag FROM sources s"
                " JOIN bundles b ON b.source_id = s.id AND b.version = s.current_version"
                " WHERE s.id > ? ORDER BY s.id LIMIT 1000", (last,))
            if not rows:
                return
            for row in rows:
                yield row["write_key"], row["version"], row["etag"]
            last = rows[-1]["id"]

    def sources_with_bundles(self, source_ids: Sequence[int]) -> set[int]:
        """Those of ``source_ids`` that hold at least one bundle (published at some point)."""
        rows = self._all("SELECT DISTINCT source_id FROM bundles"
                         " WHERE source_id IN (SELECT value FROM json_each(?))",
                         (_id_list(source_ids),))
        return {r["source_id"] for r in rows}

    def latest_bundle(self, source_id: int) -> Bundle | None:
        """The highest-numbered bundle; the next publish uses ``version + 1``."""
        row = self._one(
            "SELECT * FROM bundles WHERE source_id = ? ORDER BY version DESC LIMIT 1", (source_id,)
        )
        return _bundle(row) if row is not None else None

    def get_bundle(self, source_id: int, version: int) -> Bundle | None:
        row = self._one(
            "SELECT * FROM bundles WHERE source_id = ? AND version = ?", (source_id, version)
        )
        return _bundle(row) if row is not None else None

    def list_bundles(self, source_id: int) -> list[Bundle]:
        """Every kept bundle of the source, oldest first."""
        rows = self._all("SELECT * FROM bundles WHERE source_id = ? ORDER BY version", (source_id,))
        return [_bundle(r) for r in rows]

    def prune_bundles(self, source_id: int, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` bundles, never the current one; returns versions."""
        if keep < 1:
            raise InvalidArgument(f"keep must be >= 1, got {keep}")
        with self.transaction():
            rows = self._conn.execute(
                "SELECT b.version FROM bundles b JOIN sources s ON s.id = b.source_id"
                " WHERE b.source_id = ? AND b.version IS NOT s.current_version"
                " AND b.version < (SELECT MIN(version) FROM (SELECT version FROM bundles"
                "  WHERE source_id = ? ORDER BY version DESC LIMIT ?))",
                (source_id, source_id, keep),
            ).fetchall()
            doomed = [int(r["version"]) for r in rows]
            self._conn.executemany(
                "DELETE FROM bundles WHERE source_id = ? AND version = ?",
                [(source_id, v) for v in doomed],
            )
        return sorted(doomed)

    # -- tokens and webhook events ----------------------------------------------------

    def create_token(self, workspace_id: int, name: str, token_hash: str, scope: str) -> Token:
        name = _require_name("token name", name)
        if scope not in TOKEN_SCOPES:
            raise InvalidArgument(f"token scope {scope!r} is not one of {', '.join(TOKEN_SCOPES)}")
        now = now_rfc3339()
        with self.transaction():
            if self._one("SELECT 1 FROM tokens WHERE hash = ?", (token_hash,)):
                raise AlreadyExists("a token with this hash already exists")
            cur = self._conn.execute(
                "INSERT INTO tokens (workspace_id, name, hash, scope, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (workspace_id, name, token_hash, scope, now),
            )
        return Token(cast(int, cur.lastrowid), workspace_id, name, scope, now)

    def find_token(self, token_hash: str) -> Token | None:
        row = self._one("SELECT * FROM tokens WHERE hash = ?", (token_hash,))
        if row is None:
            return None
        return Token(row["id"], row["workspace_id"], row["name"], row["scope"], row["created_at"])

    def record_webhook_event(
        self, event_id: str, source_id: int | None, status: int, response: Any
    ) -> bool:
        """Remember a webhook delivery's outcome; ``False`` if the event was already seen."""
        with self.transaction():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO webhook_events (event_id, source_id, status, response,"
                " received_at) VALUES (?, ?, ?, ?, ?)",
                (event_id, source_id, status, _json(response), now_rfc3339()),
            )
        return cur.rowcount == 1

    def update_webhook_response(self, event_id: str, response: Any) -> None:
        """The reply a duplicate delivery gets, when the first one's changed after recording
        (its publish turned out pending)."""
        with self.transaction():
            self._conn.execute("UPDATE webhook_events SET response = ? WHERE event_id = ?",
                               (_json(response), event_id))

    # -- what Redis has yet to get ----------------------------------------------------------

    def mark_unpublished(self, write_keys: Iterable[str]) -> None:
        """Record that Redis may not serve what SQLite holds for these sources (kept across
        restarts and shared by every process on this database)."""
        rows = [(key, now_rfc3339()) for key in write_keys]
        if rows:  # (the check at start usually finds none: no write transaction for that)
            with self.transaction():
                self._conn.executemany(
                    "INSERT OR IGNORE INTO unpublished (write_key, since) VALUES (?, ?)", rows)

    def clear_unpublished(self, write_keys: Iterable[str]) -> None:
        """Redis has these sources as SQLite does again."""
        keys = [(key,) for key in write_keys]
        if keys and self._one("SELECT 1 FROM unpublished LIMIT 1") is not None:
            with self.transaction():
                self._conn.executemany("DELETE FROM unpublished WHERE write_key = ?", keys)

    def unpublished(self) -> list[str]:
        return [r["write_key"] for r in
                self._all("SELECT write_key FROM unpublished ORDER BY write_key")]

    def get_webhook_event(self, event_id: str) -> WebhookEvent | None:
        row = self._one("SELECT * FROM webhook_events WHERE event_id = ?", (event_id,))
        if row is None:
            return None
        return WebhookEvent(
            row["event_id"], row["source_id"], row["status"], orjson.loads(row["response"]),
            row["received_at"],
        )
