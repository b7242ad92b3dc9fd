"""Bringing Redis back in line with SQLite, the record of what every source should serve,
and every source's bundle in line with its configuration (``publish_all``).

Redis falls behind when a publish after a COMMIT fails or Redis restarts empty
(``find_pending``, ``retry_pending`` in ``serve``'s loop, ``republish --all``); a
``rollback`` serves a kept version's bytes again as a new version. Every publish here follows
its COMMIT and is ordered by Redis's compare-and-set, as publisher/service.py tells. A run over
every source that Redis never failed (``republish --all``, ``publish --all``) ends by setting
``sc:loaded``: Redis holds every source.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import redis

from publisher.core.bundle import Bundle
from publisher.core.model import Source
from publisher.errors import CompileError, NotFound
from publisher.publish import PublishResult
from publisher.staging import Staged, Staging, _pending_error


class Recovery(Staging):
    """``Service``'s republish, rollback and retry of pending sources (a mixin)."""

    def republish_all(self, *, batch: int = 500) -> Iterator[PublishResult]:
        """Rebuild Redis from SQLite: every source's current bundle, byte for byte.

        This restores what was served (after a rollback, the rollback's version); it does not
        recompile — ``publish`` does that. A source never published is compiled and published
        now. Sources go to Redis ``batch`` at a time, one round trip per batch.
        """
        check, down = self._begin_check()
        last = 0
        while True:
            with self._writing():  # (a page's sources never published get their version 1)
                chunk = self.store.current_bundles(last, batch)
                if not chunk:
                    break
                last = chunk[-1][0].id
                first = self._stage_unpublished([src for src, cur in chunk if cur is None])
            staged = [(src, first[src.id], True) if current is None else (src, current, False)
                      for src, current in chunk]
            error = self._write_all([(src, b) for src, b, _ in staged], down)
            down = down or error
            for src, bundle, changed in staged:
                yield self._result(src, bundle, changed, pending=bool(error), error=error)
        self._mark_loaded(check, down)

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
        check, down = self._begin_check()
        last = 0
        while True:
            out: list[tuple[Source, PublishResult | None, str]] = []
            kept: list[tuple[Source, Bundle]] = []  # left on their current bundle
            new: list[tuple[Source, Bundle]] = []
            with self._writing():
                chunk = self.store.current_bundles(last, batch)
                if not chunk:
                    break
                last = chunk[-1][0].id
                rolled = self.store.rolled_back([src.id for src, _ in chunk])
                instances = self.store.instances_of([src.id for src, _ in chunk])
                for src, current in chunk:
                    if current is not None and src.id in rolled:
                        out.append((src, self._result(src, current, False),
                                    f"rolled back to v{rolled[src.id]}, left as it is"))
                        kept.append((src, current))
                        continue
                    try:  # (compiling comes first: a failure has written nothing)
                        _, bundle, changed = self._stage(src, instances[src.id])
                    except CompileError as exc:
                        out.append((src, None, f"not compiled, left as it is: {exc}"))
                        kept += [(src, current)] if current is not None else []
                        continue
                    if changed:
                        new.append((src, bundle))
                    else:
                        out.append((src, self._result(src, bundle, False), ""))
                        kept.append((src, bundle))
            behind, error = self._behind(kept, down)
            error = self._write_all(new + behind, down or error)
            down = down or error
            out += [(src, self._result(src, bundle, True, pending=bool(error), error=error), "")
                    for src, bundle in new]
            yield from out
        self._mark_loaded(check, down)

    def _begin_check(self) -> tuple[str, str]:
        """Open a run's comparison of every source with Redis (``sc:loaded`` at its end):
        ``(check, "")``, or ``("", why)`` when Redis failed at once."""
        if self.publisher is None:
            return "", ""
        try:
            return self.publisher.begin_check(), ""
        except redis.RedisError as exc:
            return "", _pending_error(exc)

    def _mark_loaded(self, check: str, down: str) -> None:
        """A run over every source ended: with no Redis failure, Redis holds every source."""
        if check and not down and self.publisher is not None:
            self.publisher.mark_loaded(check, int(self.clock()))

    def _behind(self, items: list[tuple[Source, Bundle]], down: str
                ) -> tuple[list[tuple[Source, Bundle]], str]:
        """Those of ``items`` whose bundle Redis's pointer does not name (one MGET), or why
        Redis could not say."""
        if not items or down or self.publisher is None:
            return [], ""
        try:
            served = self.publisher.currents([src.write_key for src, _ in items])
        except redis.RedisError as exc:
            return [], _pending_error(exc)
        return [(src, b) for (src, b), pointer in zip(items, served, strict=True)
                if pointer != (b.version, b.etag)], ""

    def _write_all(self, items: list[tuple[Source, Bundle]], down: str) -> str:
        """Publish ``items`` in one round trip: a source whose version Redis refused (a newer
        one, or one SQLite never made current, is served) takes ``_deliver``'s path. Returns
        ``""``, or why they are all pending. ``down`` is the run's first Redis failure, passed
        to its later pages, which then only record their sources pending: a run over many
        pages waits out one Redis timeout, not one a page."""
        if not items:
            return ""
        if self.publisher is None:
            return "no Redis configured"
        keys = [src.write_key for src, _ in items]
        error = down
        if not error:
            try:
                refused: list[str] = []
                self.publisher.write_many(((src.write_key, bundle) for src, bundle in items),
                                          batch=len(items), refused=refused)
                for write_key in refused:
                    self._deliver(write_key)
                self.store.clear_delivered([(src.write_key, b.version) for src, b in items
                                            if src.write_key not in refused])
                return ""
            except redis.RedisError as exc:
                error = _pending_error(exc)
        self.store.mark_unpublished(keys)
        return error

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
                self._record(source.id, bundle)
                self.store.record_rollback(source.id, bundle.version, version)
                staged = Staged(source, bundle, True)
        return self._publish(staged)

    @property
    def pending(self) -> set[str]:
        """Write keys whose Redis state may differ from SQLite's (``store.unpublished``)."""
        return set(self.store.unpublished())

    def find_pending(self, *, batch: int = 1000) -> int:
        """Mark pending every source whose Redis pointer is not its SQLite current bundle —
        what a failed publish, a Redis flush, or a stop between a COMMIT and its publish
        leaves behind — and return how many. Raises ``redis.RedisError`` when Redis cannot be
        read."""
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
        """Bring Redis in line with SQLite for each source in the outbox (of ``write_keys``,
        pending ones given; default all): publish the current bundle Redis lacks, or delete a
        source SQLite no longer has or holds no version of (``_deliver``); a record Redis
        already agrees with is just cleared. Stops at the first Redis failure. Returns
        ``(published or deleted, still pending)``."""
        published = 0
        for write_key in self.store.unpublished() if write_keys is None else write_keys:
            if self.publisher is None:
                break
            try:
                bundle = self._committed(write_key)
                if bundle is not None and not self._redis_behind(write_key, bundle):
                    self.store.clear_delivered([(write_key, bundle.version)])
                    continue
                self._deliver(write_key)
            except redis.RedisError:
                break
            published += 1
        return published, len(self.store.unpublished())
