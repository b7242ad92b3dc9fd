"""Destination instances and their filters, stored a source's whole list at a time.

Every writer (Config API, webhook, workspace file) reads a source's instances, changes them
and hands the complete list back; :meth:`InstancesMixin.replace_instances` works out what
changed, so only what did gets a new ``updated_at``. This module checks the shape the tables
rely on (URL-safe ids, unique per source; display names unique ignoring case); new ids are
made from display names in publisher/core/specs.py, the destination rules are
publisher/core/rules.py.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import cast

import orjson

from publisher.core.model import CONNECTION_MODES, Filter, Instance
from publisher.errors import AlreadyExists, InvalidArgument
from publisher.store.base import StoreBase
from publisher.store.schema import id_list, now_rfc3339, require_name, to_json

INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


def _check_instances(source_id: int, instances: Sequence[Instance]) -> None:
    """Shape checks the store owns (the destination rules live in core/rules.py)."""
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
        name = require_name(f"display name of instance {inst.id!r}", inst.display_name)
        key = name.casefold()
        if key in names:
            raise AlreadyExists(
                f"display name {name!r} is used by instances {names[key]!r} and {inst.id!r} "
                f"of source {source_id}; display names are unique per source",
                code="display_name_taken",
            )
        names[key] = inst.id
        require_name(f"catalog destination of instance {inst.id!r}", inst.catalog_slug)
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


class InstancesMixin(StoreBase):
    """Destination instances with their filters."""

    # -- destination instances --------------------------------------------------------

    def list_instances(self, source_id: int) -> list[Instance]:
        """The source's instances (in creation order) with their filters (in position order)."""
        return self.instances_of([source_id])[source_id]

    def instances_of(self, source_ids: Sequence[int]) -> dict[int, list[Instance]]:
        """``list_instances`` of many sources in two statements (``republish --all``).

        Every given id is a key, a source without instances (or an unknown id) maps to ``[]``.
        """
        ids = id_list(source_ids)
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
            to_json(inst.settings, f"settings of instance {inst.id!r}"),
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
            actions = to_json(list(f.actions), f"actions of filter {f.id!r}")
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
