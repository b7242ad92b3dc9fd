"""Bringing Redis back in line with SQLite, the record of what every source should serve,
and every source's bundle in line with its configuration (``publish_all``).

Redis falls behind when a write's Redis step fails or Redis restarts empty, and runs ahead
when a publisher stops after its Redis step but before its commit (``find_pending``,
``retry_pending`` in ``serve``'s loop, ``republish --all``); a ``rollback`` sends it back to a
kept version. Each Redis write here
happens inside a write transaction, for the reason publisher/service.py gives.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import redis

from publisher.errors import CompileError, NotFound
from publisher.model import Source
from publisher.publish import Bundle, PublishResult
from publisher.staging import Staging, _pending_error


class Recovery(Staging):
    """``Service``'s republish, rollback and retry of pending sources (a mixin)."""

    def republish_all(self, *, batch: int = 500) -> Iterator[PublishResult]:
        """Rebuild Redis from SQLite: every source's current bundle, byte for byte.

        This restores what was served (after a rollback, the rolled-back version); it does
        not recompile — ``publish`` does that. A source never published is compiled and
        published now. Sources go to Redis ``batch`` at a time, one round trip per batch.
        """
        last, down = 0, ""
        while True:
            # One write transaction per page, the Redis writes inside it: no publisher process
            # commits between this read and those writes, so none of them can be stale, and
            # each is forced: SQLite's current bundle replaces whatever Redis serves, a
            # rolled-back version or one a failed commit left behind.
            with self._writing():
                chunk = self.store.current_bundles(last, batch)
                if not chunk:
                    return
                last = chunk[-1][0].id
                first = self._stage_unpublished([src for src, cur in chunk if cur is None])
                staged = [(src, first[src.id], True) if current is None else (src, current, False)
                          for src, current in chunk]
                error = self._write_all([(src, b) for src, b, _ in staged], down)
            down = down or error
            for src, bundle, changed in staged:
                yield self._result(src, bundle, changed, pending=bool(error), error=error)

    def publish_all(self, *, batch: int = 200
                    ) -> Iterator[tuple[Source, PublishResult | None, str]]:
        """``publish`` for every source: compile each from its stored configuration again and
        publish a new version where the bytes changed — what a change of the catalog data,
        ``PUBLISHER_API_HOST`` or another compile setting needs to reach the bundles already
        published. Yields ``(source, result, why)``, ``why`` naming a source left as it is: one
        rolled back to an earlier version (the result is its current one; its stored
        configuration is the one it was rolled back from: ``publish SOURCE`` publishes it), or
        one whose stored configuration no longer compiles (no result; the others go on).
        ``batch`` sources to a write transaction, their new versions to Redis in one round
        trip (forced, as SQLite is the truth inside it); unchanged sources are not written
        (``republish --all`` restores Redis)."""
        last, down = 0, ""
        while True:
            out: list[tuple[Source, PublishResult | None, str]] = []
            with self._writing():
                chunk = self.store.current_bundles(last, batch)
                if not chunk:
                    return
                last = chunk[-1][0].id
                latest = self.store.latest_versions([src.id for src, _ in chunk])
                instances = self.store.instances_of([src.id for src, _ in chunk])
                new: list[tuple[Source, Bundle]] = []
                for src, current in chunk:
                    if current is not None and latest.get(src.id, 0) > current.version:
                        out.append((src, self._result(src, current, False),
                                    f"rolled back to v{current.version}, left as it is"))
                        continue
                    try:  # (compiling comes first: a failure has written nothing)
                        bundle, changed = self._stage(src, instances[src.id])
                    except CompileError as exc:
                        out.append((src, None, f"not compiled, left as it is: {exc}"))
                        continue
                    if changed:
                        new.append((src, bundle))
                    else:
                        out.append((src, self._result(src, bundle, False), ""))
                error = self._write_all(new, down)
            down = down or error
            out += [(src, self._result(src, bundle, True, pending=bool(error), error=error), "")
                    for src, bundle in new]
            yield from out

    def _write_all(self, items: list[tuple[Source, Bundle]], down: str) -> str:
        """Force ``items`` into Redis in one round trip; ``""``, or why they are all pending.
        ``down`` is the run's first Redis failure, passed to its later pages, which then only
        record their sources pending: a run over many pages waits out one Redis timeout,
        not one a page."""
        if not items:
            return ""
        if self.publisher is None:
            return "no Redis configured"
        keys = [src.write_key for src, _ in items]
        error = down
        if not error:
            self._touch(*keys)
            try:
                self.publisher.write_many(((src.write_key, bundle) for src, bundle in items),
                                          batch=len(items), force=True)
            except redis.RedisError as exc:
                error = _pending_error(exc)
            else:
                self.store.clear_unpublished(keys)
                return ""
        self.store.mark_unpublished(keys)
        return error

    def rollback(self, source: Source, version: int) -> PublishResult:
        """Serve an earlier kept version again (the configuration itself is unchanged).

        The version is re-dated to now: its Last-Modified and ``visible_everywhere_by`` count
        from the rollback, so a client's If-Modified-Since from the version rolled away does
        not keep that one (its bytes, and so its ETag, are the old version's).
        """
        with self._writing():
            bundle = self.store.get_bundle(source.id, version)
            if bundle is None:
                kept = [b.version for b in self.store.list_bundles(source.id)]
                raise NotFound(f"version {version} of source {source.slug!r} is not kept "
                               f"(kept: {kept})")
            current = self.store.current_bundle(source.id)
            changed = current is None or current.version != version
            if changed:
                bundle = replace(bundle, published_at=int(self.clock()))
            self.store.set_current(source.id, version, published_at=bundle.published_at)
            pending, error = False, ""
            if self.publisher is None:
                pending, error = True, "no Redis configured"
            else:
                self._touch(source.write_key)
                try:
                    self.publisher.point(source.write_key, bundle)
                except redis.RedisError as exc:
                    self.store.mark_unpublished([source.write_key])
                    pending, error = True, f"Redis unreachable, rollback pending ({exc})"
                else:
                    self.store.clear_unpublished([source.write_key])
            return self._result(source, bundle, changed, pending=pending, error=error)

    @property
    def pending(self) -> set[str]:
        """Write keys whose Redis state may differ from SQLite's (``store.unpublished``)."""
        return set(self.store.unpublished())

    def find_pending(self, *, batch: int = 1000) -> int:
        """Mark pending every source whose Redis pointer is not its SQLite current bundle —
        what a failed publish, a Redis flush, or a stop after a Redis write but before its
        commit leaves behind — and return how many. Raises ``redis.RedisError`` when Redis
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
        with self._writing():  # (within the same limit as every write: Busy otherwise)
            self.store.mark_unpublished(found)
        return len(found)

    def retry_pending(self, write_keys: Sequence[str] | None = None) -> tuple[int, int]:
        """Bring Redis in line with SQLite for each pending source (of ``write_keys``, pending
        ones given; default all): publish the current bundle it lacks (forced: also over a
        higher version a failed commit left), or delete a source SQLite no longer has or holds
        no version of. One source at a time, its read and its Redis write inside one write
        transaction (no publisher process commits between them); stops at the first Redis
        failure. Returns ``(published or deleted, still pending)``."""
        published = 0
        for write_key in self.store.unpublished() if write_keys is None else write_keys:
            with self._writing():
                source = self.store.get_source_by_write_key(write_key)
                bundle = None if source is None else self.store.current_bundle(source.id)
                try:
                    if bundle is None and self.publisher is not None:  # deleted or never
                        # published (a first version whose commit failed): not served
                        self._touch(write_key)
                        self.publisher.delete_source(write_key)
                        published += 1
                    elif (source is not None and bundle is not None
                          and self._redis_behind(source, bundle)):
                        # forced, as republish: SQLite's current replaces what Redis serves
                        if self._write_redis(write_key, bundle, force=True)[0]:
                            break
                        published += 1
                except redis.RedisError:
                    break
                self.store.clear_unpublished([write_key])
        return published, len(self.store.unpublished())
