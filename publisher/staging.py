"""The steps of a write inside its SQLite transaction: check, stage, then push to Redis.

Every write of ``Service`` ends the same way: ``_commit`` checks a desired set against the
catalog, the filter limits and the destination rules, stores it and bumps the revision;
``_stage`` compiles it and records a new bundle version when the bytes changed; ``_push``
writes that bundle to Redis as the transaction's last step and says what happened
(``PublishResult``). Why Redis is written inside the transaction is told in
publisher/service.py. ``Staging`` also types, once, the state every part of ``Service``
shares, so that its mixins (publisher/edits.py, webhook_events.py, recovery.py) are checked
as strictly as ``Service`` itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import redis

from publisher import filters as filters_mod
from publisher import store as store_module
from publisher.catalog import Catalog
from publisher.compile import CompileOptions, compile_bytes
from publisher.errors import AlreadyExists, Busy
from publisher.model import Instance, Source, Workspace
from publisher.publish import Bundle, PublishResult, RedisPublisher, make_bundle
from publisher.rules import RuleLimits, check_source
from publisher.setting_values import validate_settings
from publisher.specs import check_text, filter_dict
from publisher.store import Store

log = logging.getLogger("publisher.service")


def _pending_error(exc: redis.RedisError) -> str:
    return (f"Redis unreachable, publish pending ({exc}); `serve` retries it, or run "
            "`republish --all`")


class Staging:
    """The state ``Service`` and its mixins share (``Service.__init__`` sets it) and the
    steps every write takes inside its transaction."""

    store: Store
    catalog: Catalog
    publisher: RedisPublisher | None
    limits: RuleLimits
    compile_options: CompileOptions
    keep_versions: int
    propagation_seconds: int | None
    clock: Callable[[], float]
    # One per process, reentrant: a single-resource write holds it around ``mutate``.
    _lock: threading.RLock
    # The write keys the running write transaction sent to Redis (None: no transaction), and
    # whether ``_put_back`` is running (its own failures are left to the retry loop).
    _touched: list[str] | None
    _putting_back: bool

    if TYPE_CHECKING:  # Service's own (publisher/service.py), called by its mixins
        def workspace(self, slug: str) -> Workspace: ...
        def instance(self, source: Source, instance_id: str) -> Instance: ...
        def mutate(self, source: Source,
                   change: Callable[[list[Instance]], list[Instance]]) -> PublishResult: ...
        def retry_pending(self, write_keys: Sequence[str] | None = None
                          ) -> tuple[int, int]: ...

    # -- commit, compile, publish --------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """This process's write lock, then SQLite's, within one wait: a write waits at most
        ``store.BUSY_TIMEOUT_MS`` for both together (then ``Busy``, a 503), however many
        writes of this process or another are ahead of it, each holding the lock across a
        Redis call of up to ``PUBLISHER_REDIS_TIMEOUT``. A write inside a write joins it."""
        budget = store_module.BUSY_TIMEOUT_MS / 1000
        started = time.monotonic()
        if not self._lock.acquire(timeout=budget):
            raise Busy(f"the configuration database is busy: this publisher's other writes "
                       f"held its write lock for {budget:g} s (Redis hung?); retry shortly")
        outer = self._touched is None
        if outer:
            self._touched = []
        try:
            with self.store.transaction(wait=budget - (time.monotonic() - started)):
                yield
        except Exception:
            # (an inner write's failure leaves the keys to the outer one, which may still
            # fail or commit: only the outermost transaction knows what SQLite holds)
            if outer and self._touched and not self._putting_back:
                touched, self._touched = self._touched, None
                self._put_back(touched)
            raise
        finally:
            if outer:
                self._touched = None
            self._lock.release()

    def _touch(self, *write_keys: str) -> None:
        """Note, before a Redis write, whose Redis state the running transaction changes (a
        write that timed out may have landed)."""
        if self._touched is not None:
            self._touched.extend(write_keys)

    def _put_back(self, write_keys: list[str]) -> None:
        """After a write transaction failed past its Redis step — its COMMIT, or a step after
        it — bring those sources' Redis state back to what SQLite holds, so that a write
        refused with an error is not served (nor a deletion refused not served): recorded
        pending first, then retried at once. Were the database or Redis failing too, what is
        recorded is left to ``serve``'s retry loop, and what is not to its check at start."""
        keys = list(dict.fromkeys(write_keys))
        self._putting_back = True
        try:
            with self.store.transaction():
                self.store.mark_unpublished(keys)
            self.retry_pending(keys)
        except Exception as exc:  # (the write's own error is the one raised)
            log.error("a write failed after its Redis step, and Redis could not be put back "
                      "for %s (%s: %s): `serve` retries it, or run `republish --all`",
                      ", ".join(keys), type(exc).__name__, exc)
        finally:
            self._putting_back = False

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
                desired: list[Instance], *, revision: int | None = None
                ) -> tuple[Bundle, bool]:
        """Validate and store ``desired``; returns the bundle to push (inside a transaction)."""
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
                return current, False
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

    def _stage(self, source: Source, instances: Sequence[Instance]) -> tuple[Bundle, bool]:
        """Compile; record a new bundle version in SQLite when the bytes changed."""
        data = self.compile(source, instances)
        current = self.store.current_bundle(source.id)
        if current is not None and current.json == data:
            return current, False
        # No current bundle means none at all (current_bundle falls back to the newest).
        latest = self.store.latest_bundle(source.id) if current is not None else None
        version = (latest.version if latest else 0) + 1
        bundle = make_bundle(data, version=version, revision=source.revision,
                             published_at=int(self.clock()))
        self.store.record_bundle(source.id, bundle)  # also makes it the current version
        if version > self.keep_versions:
            self.store.prune_bundles(source.id, self.keep_versions)
        return bundle, True

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
                staged[src.id], _ = self._stage(src, instances[src.id])
                continue
            bundle = make_bundle(self.compile(src, instances[src.id]), version=1,
                                 revision=src.revision, published_at=published_at)
            staged[src.id] = bundle
            new.append((src.id, bundle))
        self.store.record_bundles(new)
        return staged

    def _push(self, source: Source, bundle: Bundle, changed: bool) -> PublishResult:
        """Write a staged bundle to Redis; a Redis failure leaves it pending, not lost.

        Every caller pushes inside the write transaction that staged the bundle: SQLite's
        write lock then orders the Redis writes of every publisher process as it orders their
        commits, so a rollback (which forces the pointer) cannot land under a newer write
        that another process committed first and published after it.
        """
        pending, error = False, ""
        try:
            behind = changed or self._redis_behind(source, bundle)
        except redis.RedisError as exc:  # (one Redis timeout under the lock, not two)
            self.store.mark_unpublished([source.write_key])
            pending, error = True, _pending_error(exc)
        else:
            if behind:
                pending, error = self._write_redis(source.write_key, bundle)
        revision = self.store.get_source_by_write_key(source.write_key)
        return self._result(source, bundle, changed, pending=pending, error=error,
                            revision=revision.revision if revision else source.revision)

    def _redis_behind(self, source: Source, bundle: Bundle) -> bool:
        """Whether Redis's pointer differs from ``bundle``; raises ``redis.RedisError``."""
        if self.publisher is None:
            return False
        try:
            return self.publisher.current(source.write_key) != (bundle.version, bundle.etag)
        except (ValueError, UnicodeDecodeError):  # a malformed pointer
            return True

    def _write_redis(self, write_key: str, bundle: Bundle, *,
                     force: bool = False) -> tuple[bool, str]:
        """Publish ``bundle``, SQLite's current one (``point`` it with ``force``); returns
        ``(pending, error)``. Called inside the write transaction, so SQLite is the truth: a
        higher version Redis serves (a commit that failed after its Redis step) is logged and
        replaced."""
        if self.publisher is None:
            return True, "no Redis configured"
        self._touch(write_key)
        try:
            if force:
                self.publisher.point(write_key, bundle)
            elif not self.publisher.write(write_key, bundle):
                log.warning("Redis served a version of %s above v%d, which SQLite does not "
                            "hold as current; replaced", write_key, bundle.version)
                self.publisher.point(write_key, bundle)
        except redis.RedisError as exc:
            self.store.mark_unpublished([write_key])
            return True, _pending_error(exc)
        self.store.clear_unpublished([write_key])
        return False, ""

    def _result(self, source: Source, bundle: Bundle, changed: bool, *, pending: bool = False,
                error: str = "", revision: int | None = None) -> PublishResult:
        visible = (bundle.published_at + self.propagation_seconds  # (not yet: unknown)
                   if self.propagation_seconds is not None and not pending else None)
        return PublishResult(
            write_key=source.write_key,
            revision=source.revision if revision is None else revision,
            version=bundle.version, etag=bundle.etag, published_at=bundle.published_at,
            changed=changed, pending=pending, error=error, visible_everywhere_by=visible)
