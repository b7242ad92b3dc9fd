"""The steps of a write: check and stage inside its SQLite transaction, then publish.

Every write of ``Service`` takes the same steps. Inside its transaction (``_writing``),
``_commit`` checks a desired set against the catalog, the filter limits and the destination
rules, stores it and bumps the revision; ``_stage`` compiles it and, when the bytes changed,
records a new bundle version and adds the source to the outbox (``_record``). After COMMIT,
``_publish`` brings Redis to what SQLite then holds and says what happened
(``PublishResult``). Why in this order is told in publisher/service.py.

``_sync_redis`` is the one way Redis is brought in line with SQLite — for a write, for the
retry loop (publisher/recovery.py ``retry_pending``) and for the bulk commands alike — and the
one place that clears outbox records. ``Staging`` also types, once, the state every part of
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
from publisher.publish import PublishResult, RedisPublisher, served
from publisher.store import Store
from publisher.store import store as store_module

log = logging.getLogger(__name__)

# How many times ``_install_committed`` reads Redis's pointer and SQLite again after Redis's
# compare-and-set refused its write (each refusal means another publish moved the pointer
# meanwhile) before the source is left pending.
_ATTEMPTS = 5


class Contended(Exception):
    """Redis's pointer of a source kept moving under a publish (other publishes won)."""


def pending_error(exc: Exception) -> str:
    """A pending result's ``error``: why Redis may not have the write yet, and what follows."""
    cause = "Redis unreachable, " if isinstance(exc, redis.RedisError) else ""
    return f"{cause}publish pending ({exc}); `serve` retries it, or run `republish --all`"


class Staged(NamedTuple):
    """What a write's transaction left to publish: the source (its revision as committed),
    its current bundle, and whether that is a new version."""

    source: Source
    bundle: Bundle
    changed: bool


class Synced(NamedTuple):
    """What ``_sync_redis`` did: how many sources it wrote to (or deleted from) Redis, and
    ``""`` or why it left them pending."""

    written: int
    error: str


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
        """Validate and store ``desired``; returns what to publish after the COMMIT (its source
        with the revision stored: the next one, or ``revision``, a control plane's)."""
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
        self._record(source, bundle)
        return Staged(source, bundle, True)

    def _record(self, source: Source, bundle: Bundle) -> None:
        """Keep ``bundle`` as the source's current version, add the source to the outbox, and
        prune what falls out of the kept window."""
        self.store.record_bundle(source.id, bundle)
        self.store.add_to_outbox([source.write_key])
        if bundle.version > self.keep_versions:
            self.store.prune_bundles(source.id, self.keep_versions)

    def _stage_never_published(self, sources: Sequence[Source]) -> dict[int, Bundle]:
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
        new: list[Source] = []
        for src in sources:
            if src.id in held:
                staged[src.id] = self._stage(src, instances[src.id]).bundle
                continue
            staged[src.id] = make_bundle(self.compile(src, instances[src.id]), version=1,
                                         revision=src.revision, published_at=published_at)
            new.append(src)
        self.store.record_bundles([(src.id, staged[src.id]) for src in new])
        self.store.add_to_outbox(src.write_key for src in new)
        return staged

    # -- after the COMMIT: bring Redis to what SQLite holds (the outbox drain) -------------

    def _publish(self, staged: Staged) -> PublishResult:
        """Bring Redis to what a write committed and say what happened. Runs after the
        write's COMMIT: a Redis failure leaves the source in the outbox, the result
        ``pending``."""
        if self.store.in_transaction():
            raise RuntimeError("a write publishes after its COMMIT, not inside its transaction")
        return self._result(staged, self._sync_staged([staged]))

    def _sync_staged(self, staged: Sequence[Staged], down: str = "", *,
                     rewrite: bool = False) -> str:
        """``_sync_redis`` for staged bundles: a new version is written; an unchanged one only
        where Redis's pointer does not name it (every one with ``rewrite``). Returns ``""``, or
        why Redis was not brought in line."""
        new = [(st.source.write_key, st.bundle) for st in staged if st.changed or rewrite]
        same = [(st.source.write_key, st.bundle) for st in staged
                if not (st.changed or rewrite)]
        error = self._sync_redis(same, unless_served=True, down=down).error
        return self._sync_redis(new, down=down or error).error or error

    def _sync_redis(self, committed: Sequence[tuple[str, Bundle | None]], *,
                    unless_served: bool = False, down: str = "") -> Synced:
        """Make Redis serve what SQLite committed for each write key — ``committed`` pairs it
        with SQLite's current bundle, ``None`` for a source deleted or never published — and
        clear their outbox records: the outbox drain that every write, the retry loop and the
        bulk commands run.

        ``unless_served``: first ask Redis's pointers (one MGET) and write only the bundles
        they do not name. The writes go in one round trip, each refused where Redis serves a
        higher version (compare-and-set); a refused key, and a deleted one, then takes
        ``_install_committed``. On a Redis failure — or given ``down``, a failure earlier in
        the same run, which is not waited out again — the write keys are (or stay) in the
        outbox, except those ``unless_served`` left unasked: nothing is known of them.
        """
        if not committed:
            return Synced(0, "")
        if self.publisher is None or down:
            if unless_served:
                return Synced(0, "")
            error = down or "no Redis configured"
        else:
            try:
                return self._deliver(self.publisher, committed, unless_served)
            except (redis.RedisError, Contended) as exc:
                error = pending_error(exc)
        self.store.add_to_outbox(write_key for write_key, _ in committed)
        return Synced(0, error)

    def _deliver(self, publisher: RedisPublisher,
                 committed: Sequence[tuple[str, Bundle | None]], unless_served: bool) -> Synced:
        """``_sync_redis``'s Redis part; raises ``redis.RedisError`` or ``Contended``."""
        done: list[tuple[str, int | None]] = []  # (write key, the version Redis now serves)
        if unless_served:
            pointers = publisher.currents([key for key, _ in committed])
            done = [(key, b.version) for (key, b), pointer in zip(committed, pointers, strict=True)
                    if b is not None and pointer == (b.version, b.etag)]
        served_already = {key for key, _ in done}
        todo = [(key, b) for key, b in committed if key not in served_already]
        writes = [(key, b) for key, b in todo if b is not None]
        refused: list[str] = []
        publisher.write_many(writes, batch=max(1, len(writes)), refused=refused)
        for key, bundle in todo:
            if bundle is None or key in refused:  # deleted, or refused: read SQLite again
                done.append((key, self._install_committed(publisher, key)))
            else:
                done.append((key, bundle.version))
        try:
            self.store.clear_outbox(done)
        except (sqlite3.Error, Busy) as exc:  # published: the retry loop clears them
            log.warning("Redis has what SQLite holds, but the outbox records stay (%s)", exc)
        return Synced(len(todo), "")

    def _install_committed(self, publisher: RedisPublisher, write_key: str) -> int | None:
        """Make Redis serve SQLite's current bundle of ``write_key`` — or nothing: deleted,
        or never published — whatever version Redis serves; returns the version (None).

        Reads the pointer, then SQLite: a newer commit is written as any write is (Redis's
        compare-and-set orders it against every other publish, in any process); a version
        above SQLite's current one, which SQLite never made current since versions only grow
        (a copy of another database, or a source deleted and made again), is replaced, but
        only while the pointer is the one read. Raises ``Contended`` when the pointer moved
        under every one of ``_ATTEMPTS`` tries."""
        for _ in range(_ATTEMPTS):
            pointer = publisher.pointer(write_key)
            source = self.store.get_source_by_write_key(write_key)
            bundle = None if source is None else self.store.current_bundle(source.id)
            if bundle is None:
                publisher.delete_source(write_key)
                return None
            named = served(pointer)  # (version, etag); None: no pointer, or a malformed one
            over = b""
            if pointer is not None and named is not None and named[0] > bundle.version:
                log.warning("Redis served a version of %s above v%d, which SQLite does not "
                            "hold as current; replaced", write_key, bundle.version)
                over = pointer
            if publisher.write(write_key, bundle, over=over):
                return bundle.version
        raise Contended(f"Redis's pointer of {write_key} kept moving under this publish")

    def _result(self, staged: Staged, error: str = "") -> PublishResult:
        """What a write did: ``error`` says why Redis may not have it yet (then ``pending``)."""
        source, bundle, changed = staged
        visible = (bundle.published_at + self.propagation_seconds  # (not yet: unknown)
                   if self.propagation_seconds is not None and not error else None)
        return PublishResult(
            write_key=source.write_key, revision=source.revision, version=bundle.version,
            etag=bundle.etag, published_at=bundle.published_at, changed=changed,
            pending=bool(error), error=error, visible_everywhere_by=visible)
