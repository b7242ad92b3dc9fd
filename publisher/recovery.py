"""Bringing Redis back in line with SQLite, the record of what every source should serve,
and every source's bundle in line with its configuration (``publish_all``).

Redis falls behind when a publish after a COMMIT fails or Redis restarts empty
(``find_pending``, ``retry_pending`` in ``serve``'s loop, ``republish --all``); a
``rollback`` serves a kept version's bytes again as a new version. Every publish here follows
its COMMIT and goes through ``Staging._sync_redis``, ordered by Redis's compare-and-set, as
publisher/service.py tells. A run over every source that Redis never failed
(``republish --all``, ``publish --all``) ends by setting ``sc:loaded``: Redis holds every
source.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import redis

from publisher.core.bundle import Bundle
from publisher.core.model import Source
from publisher.errors import CompileError, NotFound
from publisher.publish import PublishResult
from publisher.staging import Staged, Staging, pending_error

Page = list[tuple[Source, Bundle | None]]  # sources with the bundle each should serve
T = TypeVar("T")


class Recovery(Staging):
    """``Service``'s republish, rollback and retry of pending sources (a mixin)."""

    def republish_all(self, *, batch: int = 500) -> Iterator[PublishResult]:
        """Rebuild Redis from SQLite: every source's current bundle, byte for byte.

        This restores what was served (after a rollback, the rollback's version); it does not
        recompile — ``publish`` does that. A source never published is compiled and published
        now. Sources go to Redis ``batch`` at a time, one round trip per batch.
        """
        for staged, error in self._every_source(batch, self._as_committed, rewrite=True):
            for st in staged:
                yield self._result(st, error)

    def _as_committed(self, page: Page) -> tuple[list[Staged], list[Staged]]:
        """``republish_all``'s page: each source's current bundle; the sources never
        published get their version 1."""
        first = self._stage_never_published([src for src, current in page if current is None])
        staged = [Staged(src, first[src.id], True) if current is None
                  else Staged(src, current, False) for src, current in page]
        return staged, staged

    def publish_all(self, *, batch: int = 200
                    ) -> Iterator[tuple[Source, PublishResult | None, str]]:
        """``publish`` for every source: compile each from its stored configuration again and
        publish a new version where the bytes changed — what a change of the catalog data,
        ``PUBLISHER_API_HOST`` or another compile setting needs to reach the bundles already
        published. Yields ``(source, result, why)``, ``why`` naming a source left as it is: one
        rolled back (the result is its current one; its stored configuration is the one it was
        rolled back from: ``publish SOURCE`` publishes it), or one whose stored configuration
        no longer compiles (no result; the others go on). ``batch`` sources to a write
        transaction, then their new versions to Redis in one round trip; the sources left on
        their version are compared with Redis and published where Redis lacks them."""
        for rows, error in self._every_source(batch, self._recompiled):
            for src, staged, why in rows:  # (Redis's error is a new version's only)
                result = None if staged is None else self._result(
                    staged, error if staged.changed else "")
                yield src, result, why

    def _recompiled(self, page: Page
                    ) -> tuple[list[tuple[Source, Staged | None, str]], list[Staged]]:
        """``publish_all``'s page: ``(source, staged, why)`` of each source (no ``staged``:
        not compiled), and what Redis should serve of them."""
        rows: list[tuple[Source, Staged | None, str]] = []
        kept: list[Staged] = []  # (a source not compiled: its current bundle, no result)
        rolled = self.store.rolled_back([src.id for src, _ in page])
        instances = self.store.instances_of([src.id for src, _ in page])
        for src, current in page:
            if current is not None and src.id in rolled:
                rows.append((src, Staged(src, current, False),
                             f"rolled back to v{rolled[src.id]}, left as it is"))
                continue
            try:  # (compiling comes first: a failure has written nothing)
                rows.append((src, self._stage(src, instances[src.id]), ""))
            except CompileError as exc:
                rows.append((src, None, f"not compiled, left as it is: {exc}"))
                kept += [Staged(src, current, False)] if current is not None else []
        return rows, [st for _, st, _ in rows if st is not None] + kept

    def _every_source(self, batch: int, stage: Callable[[Page], tuple[T, list[Staged]]], *,
                      rewrite: bool = False) -> Iterator[tuple[T, str]]:
        """Every source, ``batch`` at a time: ``stage`` a page in a write transaction of its
        own (it returns what to yield and what Redis should serve), then bring Redis to it
        (``_sync_staged``) and yield ``(what stage returned, "" or why Redis was not)``.

        The run's first Redis failure is passed to its later pages, which then only record
        their sources pending: a run over many pages waits out one Redis timeout, not one a
        page. A run that Redis never failed ends by setting ``sc:loaded``.
        """
        check, down = "", ""
        if self.publisher is not None:
            try:
                check = self.publisher.begin_check()
            except redis.RedisError as exc:
                down = pending_error(exc)
        last = 0
        while True:
            with self._writing():
                page = self.store.current_bundles(last, batch)
                if not page:
                    break
                last = page[-1][0].id
                out, staged = stage(page)
            error = self._sync_staged(staged, down, rewrite=rewrite)
            down = down or error
            yield out, error
        if check and not down and self.publisher is not None:
            self.publisher.mark_loaded(check, int(self.clock()))

    def rollback(self, source: Source, version: int) -> PublishResult:
        """Serve the bytes of an earlier kept version again, as a new version.

        History only grows: the new version is the next number, holding the old version's
        bytes (so its ETag), dated now — its Last-Modified and ``visible_everywhere_by`` count
        from the rollback, and it is ordered against every other publish as any new version
        is. The configuration itself is unchanged. A rollback to the bytes already served
        changes nothing.
        """
        with self._writing():
            target = self.store.get_bundle(source.id, version)
            if target is None:
                kept = [b.version for b in self.store.list_bundles(source.id)]
                raise NotFound(f"version {version} of source {source.slug!r} is not kept "
                               f"(kept: {kept})")
            current = self.store.current_bundle(source.id)
            latest = self.store.latest_bundle(source.id)
            if current is not None and current.etag == target.etag:
                staged = Staged(source, current, False)
            else:
                assert latest is not None  # (the target is kept)
                bundle = replace(target, version=latest.version + 1,
                                 published_at=int(self.clock()))
                self._record(source, bundle)
                self.store.record_rollback(source.id, bundle.version, version)
                staged = Staged(source, bundle, True)
        return self._publish(staged)

    @property
    def pending(self) -> set[str]:
        """Write keys whose Redis state may differ from SQLite's (the outbox)."""
        return set(self.store.outbox())

    def find_pending(self, *, batch: int = 1000) -> int:
        """Add to the outbox every source whose Redis pointer is not its SQLite current
        bundle — what a failed publish, a Redis flush, or a stop between a COMMIT and its
        publish leaves behind — and return how many. Raises ``redis.RedisError`` when Redis
        cannot be read."""
        if self.publisher is None:
            return 0
        found: list[str] = []
        rows = self.store.current_pointers()
        while chunk := list(itertools.islice(rows, batch)):
            served = self.publisher.currents([write_key for write_key, _, _ in chunk])
            found += [write_key for (write_key, version, etag), pointer
                      in zip(chunk, served, strict=True) if pointer != (version, etag)]
            time.sleep(0.001)  # (in serve's thread pool: let the API's requests have the GIL)
        if found:
            with self._writing():  # (within the same limit as every write: Busy otherwise)
                self.store.add_to_outbox(found)
        return len(found)

    def retry_pending(self, *, batch: int = 500) -> tuple[int, int]:
        """Drain the outbox: bring Redis in line with SQLite for each source in it
        (``_sync_redis``, ``batch`` at a time) — publish the current bundle Redis lacks, or
        delete a source SQLite no longer has or holds no version of; a record Redis already
        agrees with is just cleared. Stops at the first Redis failure. Returns ``(published
        or deleted, still pending)``."""
        outbox = self.store.outbox() if self.publisher is not None else []
        published = 0
        for start in range(0, len(outbox), batch):
            committed = []
            for write_key in outbox[start:start + batch]:
                source = self.store.get_source_by_write_key(write_key)
                committed.append((write_key, None if source is None
                                  else self.store.current_bundle(source.id)))
            synced = self._sync_redis(committed, unless_served=True)
            published += synced.written
            if synced.error:
                break
        return published, len(self.store.outbox())
