"""The steps of a write: check and stage inside its SQLite transaction, then publish.

Every write of ``Service`` takes the same steps. Inside its transaction (``_writing``),
``_commit`` checks a desired set against the catalog, the filter limits and the destination
rules, stores it and bumps the revision; ``_stage`` compiles it and records a new bundle
version when the bytes changed, which records the source in the outbox (``unpublished``) in
the same transaction. After COMMIT, ``_publish`` brings Redis to what SQLite then holds
(``_deliver``), clears the record, and says what happened (``PublishResult``). Why in this
order is told in publisher/service.py. ``Staging`` also types, once, the state every part of
``Service`` shares, so that its mixins (publisher/edits.py, webhook_events.py, recovery.py)
are checked as strictly as ``Service`` itself.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import redis

from publisher.core import filters as filters_mod
from publisher.core.bundle import Bundle, make_bundle
from publisher.core.catalog import Catalog
from publisher.core.compile import CompileOptions, compile_bytes
from publisher.core.model import Instance, Source, Workspace
from publisher.core.rules import RuleLimits, check_source
from publisher.core.setting_values import validate_settings
from publisher.core.specs import check_text, filter_dict
from publisher.errors import AlreadyExists, Busy
from publisher.publish import PublishResult, RedisPublisher
from publisher.store import Store
from publisher.store import store as store_module

log = logging.getLogger("publisher.service")

# How many times a publish reads SQLite and Redis again after Redis's compare-and-set refused
# it (each refusal means another publish moved the pointer meanwhile) before it is left pending.
_ATTEMPTS = 5


def _pending_error(exc: redis.RedisError) -> str:
    return (f"Redis unreachable, publish pending ({exc}); `serve` retries it, or run "
            "`republish --all`")


class Staged(NamedTuple):
    """What a write's transaction left to publish: the source (its revision as committed),
    its current bundle, and whether that is a new version."""

    source: Source
    bundle: Bundle
    changed: bool


class Staging:
    """The state ``Service`` and its mixins share (``Service.__init__`` sets it) and the
    steps every write takes."""

    store: Store
    catalog: Catalog
    publisher: RedisPublisher | None
    limits: RuleLimits
    compile_options: CompileOptions
    keep_versions: int
    propagation_seconds: int | None
    clock: Callable[[], float]
    # One per process, reentrant: a write holds it around its transaction, never around Redis.
    _lock: threading.RLock

    if TYPE_CHECKING:  # Service's own (publisher/service.py), called by its mixins
        def workspace(self, slug: str) -> Workspace: ...
        def instance(self, source: Source, instance_id: str) -> Instance: ...
        def mutate(self, source: Source,
                   change: Callable[[list[Instance]], list[Instance]]) -> PublishResult: ...
        def _mutate(self, source: Source,
                    change: Callable[[list[Instance]], list[Instance]]) -> Staged: ...

    # -- inside the transaction: commit, compile, stage ------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """This process's write lock, then SQLite's transaction, within one wait: a write
        waits at most ``store.BUSY_TIMEOUT_MS`` for both together (then ``Busy``, a 503),
        however many writes of this process or another are ahead of it. A write inside a
        write joins it. Nothing inside calls Redis: ``_publish`` follows the COMMIT."""
        budget = store_module.BUSY_TIMEOUT_MS / 1000
        started = time.monotonic()
        if not self._lock.acquire(timeout=budget):
            raise Busy(f"the configuration database is busy: this publisher's other writes "
                       f"held its write lock for {budget:g} s; retry shortly")
        try:
            with self.store.transaction(wait=budget - (time.monotonic() - started)):
                yield
        finally:
            self._lock.release()

    @staticmethod
    def _same(a: Sequence[Instance], b: Sequence[Instance]) -> bool:
        def key(i: Instance) -> tuple[Any, ...]:
            return (i.id, i.catalog_slug, i.display_name, i.connection_mode, i.enabled,
                    orjson.dumps(i.settings, option=orjson.OPT_SORT_KEYS),
                    tuple((f.id, f.if_, orjson.dumps(list(f.actions),
                                                     option=orjson.OPT_SORT_KEYS),
                           f.title, f.description, f.enabled) for f in i.filters))
        return sorted(map(key, a)) == sorted(map(key, b))

    def _commit(self, source: Source, existing: Sequence[Instance],
                desired: list[Instance], *, revision: int | None = None) -> Staged:
        """Validate and store ``desired``; returns what to publish after the COMMIT."""
        for inst in desired:
            check_text(inst.display_name, f"destination {inst.display_name!r}: display name")
            for f in inst.filters:
                where = f"destination {inst.display_name!r}: filter {f.title!r}"
                check_text(f.title, f"{where}: title")
                check_text(f.description, f"{where}: description", multiline=True)
            dest = self.catalog.get(inst.catalog_slug)
            validate_settings(dest, inst.settings, enabled=inst.enabled,
                              where=f"destination {inst.display_name!r}")
            filters_mod.check_filter_count(len(inst.filters),
                                           f"destination {inst.display_name!r}")
            titles = [f.title for f in inst.filters]
            for title in titles:
                if titles.count(title) > 1:  # (at most 10 filters: counted above)
                    raise AlreadyExists(f"destination {inst.display_name!r} already has a "
                                        f"filter titled {title!r}", code="duplicate_title")
            if inst.connection_mode == "DEVICE":  # the browser runs these: only its functions
                for f in inst.filters:
                    filters_mod.validate_filter(filter_dict(f), device_mode=True)
        check_source(source, desired, self.catalog, self.limits)
        if self._same(existing, desired) and revision is None:
            current = self.store.current_bundle(source.id)
            if current is not None:
                return Staged(source, current, False)
        self.store.replace_instances(source.id, desired)  # keeps or sets the timestamps
        if revision is None:
            rev = self.store.bump_revision(source.id)
        else:
            self.store.set_revision(source.id, revision)
            rev = revision
        return self._stage(replace(source, revision=rev), desired)

    def compile(self, source: Source, instances: Sequence[Instance] | None = None) -> bytes:
        if instances is None:
            instances = self.store.list_instances(source.id)
        return compile_bytes(source, instances, self.catalog, self.compile_options)

    def _stage(self, source: Source, instances: Sequence[Instance]) -> Staged:
        """Compile; record a new bundle version in SQLite (and the outbox) when the bytes
        changed."""
        data = self.compile(source, instances)
        current = self.store.current_bundle(source.id)
        if current is not None and current.json == data:
            return Staged(source, current, False)
        # No current bundle means none at all (current_bundle falls back to the newest).
        latest = self.store.latest_bundle(source.id) if current is not None else None
        version = (latest.version if latest else 0) + 1
        bundle = make_bundle(data, version=version, revision=source.revision,
                             published_at=int(self.clock()))
        self._record(source.id, bundle)
        return Staged(source, bundle, True)

    def _record(self, source_id: int, bundle: Bundle) -> None:
        """Keep ``bundle`` as the source's current version (outbox record included) and prune
        what falls out of the kept window."""
        self.store.record_bundle(source_id, bundle)
        if bundle.version > self.keep_versions:
            self.store.prune_bundles(source_id, self.keep_versions)

    def _stage_unpublished(self, sources: Sequence[Source]) -> dict[int, Bundle]:
        """``_stage`` for sources without a current bundle, in a few statements for them all.

        Each is compiled from its stored instances and gets version 1, unless it still holds
        older bundles (its pointer lost): those take ``_stage``'s path one by one.
        """
        if not sources:
            return {}
        ids = [src.id for src in sources]
        instances = self.store.instances_of(ids)
        held = self.store.sources_with_bundles(ids)
        published_at = int(self.clock())
        staged: dict[int, Bundle] = {}
        new: list[tuple[int, Bundle]] = []
        for src in sources:
            if src.id in held:
                staged[src.id] = self._stage(src, instances[src.id]).bundle
                continue
            bundle = make_bundle(self.compile(src, instances[src.id]), version=1,
                                 revision=src.revision, published_at=published_at)
            staged[src.id] = bundle
            new.append((src.id, bundle))
        self.store.record_bundles(new)
        return staged


    # -- after the COMMIT: publish ---------------------------------------------------------

    def _publish(self, staged: Staged) -> PublishResult:
        """Bring Redis to what SQLite holds for the staged source — a new bundle, or an
        unchanged one Redis lacks — and say what happened. Runs after the write's COMMIT: a
        Redis failure leaves the source in the outbox, the result ``pending``."""
        if self.store.in_transaction():
            raise RuntimeError("a write publishes after its COMMIT, not inside its transaction")
        source, bundle, changed = staged
        error = "no Redis configured" if changed and self.publisher is None else ""
        try:
            if self.publisher is not None and (changed or self._redis_behind(source.write_key,
                                                                             bundle)):
                self._deliver(source.write_key)
        except redis.RedisError as exc:
            if not changed:  # (a new version's record was committed with it)
                self.store.mark_unpublished([source.write_key])
            error = _pending_error(exc)
        return self._result(source, bundle, changed, pending=bool(error), error=error)

    def _committed(self, write_key: str) -> Bundle | None:
        """The bundle the last COMMIT says Redis should serve (None: not a source, or never
        published)."""
        source = self.store.get_source_by_write_key(write_key)
        return None if source is None else self.store.current_bundle(source.id)

    def _deliver(self, write_key: str) -> None:
        """Make Redis serve what SQLite has committed for ``write_key`` — its current bundle,
        or nothing (deleted, or never published) — then clear its outbox record.

        Redis's compare-and-set orders this against every other publish, in any process: a
        version below the one served is refused. SQLite, read again after the pointer, then
        says whether a newer commit is served (publish that: it is the current one) or Redis
        serves a version SQLite never made current (replaced, but only over the pointer just
        read). Raises ``redis.RedisError``; the record then stays for the retry loop.
        """
        assert self.publisher is not None
        over: bytes | None = None
        for _ in range(_ATTEMPTS):
            bundle = self._committed(write_key)
            if bundle is None:
                self.publisher.delete_source(write_key)
            elif not (self.publisher.write(write_key, bundle) if over is None
                      else self.publisher.replace(write_key, bundle, over)):
                served = self.publisher.pointer(write_key)
                now = self._committed(write_key)
                over = None
                if served is not None and now is not None and now.version == bundle.version:
                    log.warning("Redis served a version of %s above v%d, which SQLite does not "
                                "hold as current; replaced", write_key, bundle.version)
                    over = served
                continue
            try:
                self.store.clear_delivered([(write_key, bundle.version if bundle else None)])
            except (sqlite3.Error, Busy) as exc:  # published: the retry loop clears it
                log.warning("%s is published, but its outbox record stays (%s)", write_key, exc)
            return
        raise redis.RedisError(f"Redis's pointer of {write_key} kept moving under this publish")

    def _redis_behind(self, write_key: str, bundle: Bundle) -> bool:
        """Whether Redis's pointer differs from ``bundle``; raises ``redis.RedisError``."""
        if self.publisher is None:
            return False
        try:
            return self.publisher.current(write_key) != (bundle.version, bundle.etag)
        except (ValueError, UnicodeDecodeError):  # a malformed pointer
            return True

    def _result(self, source: Source, bundle: Bundle, changed: bool, *, pending: bool = False,
                error: str = "", revision: int | None = None) -> PublishResult:
        visible = (bundle.published_at + self.propagation_seconds  # (not yet: unknown)
                   if self.propagation_seconds is not None and not pending else None)
        return PublishResult(
            write_key=source.write_key,
            revision=source.revision if revision is None else revision,
            version=bundle.version, etag=bundle.etag, published_at=bundle.published_at,
            changed=changed, pending=pending, error=error, visible_everywhere_by=visible)
