"""Workspaces and their sources: the rows every other table hangs off.

A source's write key is the name the edge serves its bundle under, so it is unique across all
workspaces: generated (192 random bits) unless a declarative file names one, and checked
against the keyspace's pattern when given. A source's ``revision`` counts its configuration
changes; every change bumps it, and the webhook's control plane may set it, never lower.
"""

from __future__ import annotations

import secrets
from typing import cast

from edge import keyspace
from publisher.core.model import SOURCE_TYPES, Source, SourceType, Workspace
from publisher.errors import AlreadyExists, InvalidArgument, NotFound
from publisher.store.base import StoreBase
from publisher.store.schema import (
    as_source,
    as_workspace,
    now_rfc3339,
    require_name,
    require_slug,
)

WRITE_KEY_RE = keyspace.WRITE_KEY_RE


class SourcesMixin(StoreBase):
    """Workspaces, sources and their revisions."""

    # -- workspaces -------------------------------------------------------------------

    def create_workspace(self, slug: str, name: str) -> Workspace:
        require_slug("workspace slug", slug)
        name = require_name("workspace name", name)
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
        return as_workspace(row) if row is not None else None

    def list_workspaces(self) -> list[Workspace]:
        return [as_workspace(r) for r in self._all("SELECT * FROM workspaces ORDER BY slug")]

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
        require_slug("source slug", slug)
        name = require_name("source name", name)
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
        return as_source(row) if row is not None else None

    def get_source_by_id(self, source_id: int) -> Source | None:
        row = self._one("SELECT * FROM sources WHERE id = ?", (source_id,))
        return as_source(row) if row is not None else None

    def get_source_by_write_key(self, write_key: str) -> Source | None:
        row = self._one("SELECT * FROM sources WHERE write_key = ?", (write_key,))
        return as_source(row) if row is not None else None

    def _require_source(self, source_id: int) -> Source:
        found = self.get_source_by_id(source_id)
        if found is None:
            raise NotFound(f"source {source_id} not found")
        return found

    def list_sources(self, workspace_id: int) -> list[Source]:
        rows = self._all(
            "SELECT * FROM sources WHERE workspace_id = ? ORDER BY slug", (workspace_id,)
        )
        return [as_source(r) for r in rows]

    def all_sources(self) -> list[Source]:
        return [as_source(r) for r in self._all("SELECT * FROM sources ORDER BY id")]

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
