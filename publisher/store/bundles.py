"""Published bundles, kept with their bytes, and which of them Redis should serve.

SQLite keeps every published bundle until it is pruned, bytes included, and each source's
``current_version``: so ``republish --all`` can rebuild Redis byte for byte and a rollback
still works after a Redis flush. A version, once recorded, never holds other bytes. The
outbox sits here too (the ``unpublished`` table): a write that changes what Redis should
serve adds its source in its own transaction (``add_to_outbox``), and the record is cleared
only once Redis holds what SQLite then holds (``clear_outbox``); what is left, serve's retry
loop in any publisher process on this database pushes again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import orjson

from publisher.core.bundle import Bundle
from publisher.core.model import Source
from publisher.errors import AlreadyExists, InvalidArgument, NotFound
from publisher.store.base import StoreBase
from publisher.store.schema import as_bundle, as_source, id_list, now_rfc3339


class BundlesMixin(StoreBase):
    """Kept bundles, each source's current one, and the sources Redis has yet to get."""

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
        ids = id_list(source_id for source_id, _ in items)
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

    def record_rollback(self, source_id: int, version: int, restores: int) -> None:
        """Note that ``version`` (just recorded) copies the bytes of the earlier ``restores``."""
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO rollbacks (source_id, version, restores)"
                               " VALUES (?, ?, ?)", (source_id, version, restores))

    def rolled_back(self, source_ids: Sequence[int]) -> dict[int, int]:
        """Those of ``source_ids`` whose current version is a rollback's copy (or, kept from
        before rollbacks made versions, an older version than their newest), with the version
        each serves the bytes of."""
        rows = self._all(
            "SELECT s.id, r.restores, s.current_version AS v FROM sources s"
            " LEFT JOIN rollbacks r ON r.source_id = s.id AND r.version = s.current_version"
            " WHERE s.id IN (SELECT value FROM json_each(?)) AND (r.restores IS NOT NULL"
            "  OR s.current_version < (SELECT MAX(version) FROM bundles WHERE source_id = s.id))",
            (id_list(source_ids),))
        return {r["id"]: r["v"] if r["restores"] is None else r["restores"] for r in rows}

    def current_bundle(self, source_id: int) -> Bundle | None:
        """The bundle Redis should serve for the source."""
        row = self._one(
            "SELECT b.* FROM bundles b JOIN sources s"
            " ON s.id = b.source_id AND s.current_version = b.version WHERE s.id = ?",
            (source_id,),
        )
        return as_bundle(row) if row is not None else self.latest_bundle(source_id)

    def current_bundles(self, after: int, limit: int
                        ) -> list[tuple[Source, Bundle | None]]:
        """One page of sources (ids above ``after``, ``limit`` of them) with the bundle Redis
        should serve: ``republish --all`` reads and publishes page by page."""
        rows = self._all(
            "SELECT s.*, b.version AS b_version, b.etag AS b_etag,"
            " b.published_at AS b_published_at, b.revision AS b_revision,"
            " b.json AS b_json, b.gzip AS b_gzip"
            " FROM sources s"
            " LEFT JOIN bundles b ON b.source_id = s.id AND b.version = s.current_version"
            " WHERE s.id > ? ORDER BY s.id LIMIT ?", (after, limit))
        page: list[tuple[Source, Bundle | None]] = []
        for row in rows:
            bundle = None if row["b_version"] is None else Bundle(
                version=row["b_version"], etag=row["b_etag"],
                published_at=row["b_published_at"], revision=row["b_revision"],
                json=bytes(row["b_json"]), gzip=bytes(row["b_gzip"]))
            page.append((as_source(row), bundle))
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
                         (id_list(source_ids),))
        return {r["source_id"] for r in rows}

    def latest_versions(self, source_ids: Sequence[int]) -> dict[int, int]:
        """The highest bundle version of each of ``source_ids`` that holds one."""
        rows = self._all("SELECT source_id, MAX(version) AS v FROM bundles"
                         " WHERE source_id IN (SELECT value FROM json_each(?))"
                         " GROUP BY source_id", (id_list(source_ids),))
        return {r["source_id"]: r["v"] for r in rows}

    def latest_bundle(self, source_id: int) -> Bundle | None:
        """The highest-numbered bundle; the next publish uses ``version + 1``."""
        row = self._one(
            "SELECT * FROM bundles WHERE source_id = ? ORDER BY version DESC LIMIT 1", (source_id,)
        )
        return as_bundle(row) if row is not None else None

    def get_bundle(self, source_id: int, version: int) -> Bundle | None:
        row = self._one(
            "SELECT * FROM bundles WHERE source_id = ? AND version = ?", (source_id, version)
        )
        return as_bundle(row) if row is not None else None

    def list_bundles(self, source_id: int) -> list[Bundle]:
        """Every kept bundle of the source, oldest first."""
        rows = self._all("SELECT * FROM bundles WHERE source_id = ? ORDER BY version", (source_id,))
        return [as_bundle(r) for r in rows]

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

    # -- the outbox: what Redis has yet to get -------------------------------------------

    def add_to_outbox(self, write_keys: Iterable[str]) -> None:
        """Record that Redis may not serve what SQLite holds for these sources (kept across
        restarts and shared by every process on this database). Sources already recorded
        keep their record; when all are, no write transaction is opened."""
        keys = orjson.dumps(list(write_keys)).decode()
        rows = [(r["value"], now_rfc3339()) for r in self._all(
            "SELECT DISTINCT value FROM json_each(?)"
            " WHERE value NOT IN (SELECT write_key FROM unpublished)", (keys,))]
        if rows:
            with self.transaction():
                self._conn.executemany(
                    "INSERT OR IGNORE INTO unpublished (write_key, since) VALUES (?, ?)", rows)

    def clear_outbox(self, delivered: Iterable[tuple[str, int | None]]) -> None:
        """Clear the outbox records of ``(write_key, version)`` Redis now serves (``None``:
        Redis holds nothing of the source), each only while SQLite's current version is still
        that one (none: the source deleted or never published): the record of a newer commit
        stays for it."""
        rows = [(key, key, version) for key, version in delivered]
        if rows and self._one("SELECT 1 FROM unpublished LIMIT 1") is not None:
            with self.transaction():
                self._conn.executemany(
                    "DELETE FROM unpublished WHERE write_key = ? AND"
                    " (SELECT current_version FROM sources WHERE write_key = ?) IS ?", rows)

    def outbox(self) -> list[str]:
        """The write keys in the outbox."""
        return [r["write_key"] for r in
                self._all("SELECT write_key FROM unpublished ORDER BY write_key")]
