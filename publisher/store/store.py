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

The tables are in ``schema`` and each family of rows is a mixin of its own module
(``sources``, ``instances``, ``bundles``, ``callers``); this module keeps what they share — the
two connections, their locks, transactions — and composes them into ``Store``, the package's
one public name (``from publisher.store import Store``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from publisher.errors import Busy, InvalidArgument
from publisher.store.bundles import BundlesMixin
from publisher.store.callers import CallersMixin
from publisher.store.instances import InstancesMixin
from publisher.store.schema import SCHEMA
from publisher.store.sources import SourcesMixin

# How long a write waits for another process's write transaction (no transaction holds a
# Redis call: each publishes after its COMMIT) before it gives up (Busy, a 503).
BUSY_TIMEOUT_MS = 15_000


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


class Store(SourcesMixin, InstancesMixin, BundlesMixin, CallersMixin):
    """The configuration database. Build with :meth:`open`; every method is thread-safe."""

    def __init__(self, conn: sqlite3.Connection,
                 reader: sqlite3.Connection | None = None) -> None:
        self._conn = conn
        # WAL lets a second connection read the last committed state while the first writes:
        # a request that only reads never waits for a write, and a publish after a COMMIT
        # reads what was committed. A ":memory:" database is one connection: reads then wait
        # for a running write.
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
    def transaction(self, *, wait: float | None = None) -> Iterator[None]:
        """All-or-nothing: commit on success, roll back on any exception (then re-raise).

        Nested use opens a SAVEPOINT: an exception that escapes the inner block undoes only
        the inner block's writes, and the outer block decides about the rest. ``wait``:
        seconds to wait for another process's write lock (default ``BUSY_TIMEOUT_MS``), then
        ``Busy``.
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
            limit_ms = BUSY_TIMEOUT_MS if wait is None else max(0, int(wait * 1000))
            if limit_ms != BUSY_TIMEOUT_MS:
                self._conn.execute(f"PRAGMA busy_timeout={limit_ms}")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked past busy_timeout
                raise Busy(f"the configuration database is busy: {exc} (waited "
                           f"{limit_ms / 1000:g} s for another publisher process's write "
                           "lock); retry shortly") from None
            finally:
                if limit_ms != BUSY_TIMEOUT_MS:
                    self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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

    def in_transaction(self) -> bool:
        """Whether the calling thread is inside ``transaction()``."""
        return bool(self._depth) and self._writer == threading.get_ident()

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
