"""Every write goes through here: validate, apply the rules, commit, compile, publish.

The Config API, the webhook and the declarative workspace file all describe a change as a new
*desired set* of a source's instances. ``Service`` checks that set (catalog settings, filters,
destination rules) before anything is written, stages the new revision and the new bundle row
in one SQLite transaction, writes the bundle to Redis as that transaction's last step, then
commits. So a refusal changes nothing, and an accepted change is never lost: if Redis is
unreachable the bundle is in SQLite, recorded as unpublished, and the result says
``pending``; ``serve`` publishes it once Redis answers again (``retry_pending``, every
``PUBLISHER_RETRY_INTERVAL``; ``find_pending`` at start), and ``republish --all`` or the next
write of the source does too.

One lock serialises a process's writes. Another process may write too (``republish --all`` or
the CLI beside ``serve``): since every Redis write happens inside a SQLite write transaction,
SQLite's write lock orders the Redis writes of all of them as it orders their commits, and the
install script never lets a late publish move a pointer to a lower version unless it is a
rollback (publisher/publish.py). The price: a hung Redis holds the write lock for up to
``PUBLISHER_REDIS_TIMEOUT`` per write, and other processes' writes wait behind it (up to 15 s,
then a 503). Should the commit itself fail after Redis took the bundle, Redis is ahead of
SQLite until the source's next write or ``republish --all``.
"""

from __future__ import annotations

import difflib
import itertools
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from edge import keyspace
from publisher import filters as filters_mod
from publisher.catalog import Catalog, validate_settings
from publisher.compile import CompileOptions, compile_bytes
from publisher.errors import AlreadyExists, InvalidArgument, NotFound
from publisher.model import (
    CONNECTION_MODES,
    RESOURCE_ID_RE,
    SOURCE_TYPES,
    Filter,
    Instance,
    Source,
    Workspace,
)
from publisher.publish import Bundle, RedisPublisher, make_bundle
from publisher.rules import RuleLimits, check_source, default_display_name
from publisher.store import Store, new_instance_id

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")



def check_slug(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidArgument(
            f"{kind} slug must be 1-64 lowercase letters, digits or '-' (not at either end), "
            f"got {value!r}", code="invalid_slug")
    return value


def check_write_key(value: Any) -> str:
    # The keyspace decides what a write key may be; a chosen one must also not be guessable
    # by its length alone (generated keys are 32 characters).
    if not isinstance(value, str) or not (8 <= len(value) <= 128) \
            or not keyspace.WRITE_KEY_RE.fullmatch(value):
        raise InvalidArgument(
            f"write key must be 8-128 characters of A-Z a-z 0-9 _ -, got {value!r}",
            code="invalid_write_key")
    return value


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a write did to the source's bundle."""

    write_key: str
    revision: int
    version: int
    etag: str
    published_at: int
    changed: bool  # a new bundle version was made
    pending: bool = False  # committed, but Redis could not be written yet
    error: str = ""
    visible_everywhere_by: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "write_key": self.write_key, "revision": self.revision, "version": self.version,
            "etag": self.etag, "published_at": _rfc3339(self.published_at),
            "changed": self.changed, "pending": self.pending,
        }
        if self.visible_everywhere_by is not None:
            out["visible_everywhere_by"] = _rfc3339(self.visible_everywhere_by)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class InstanceSpec:
    """A desired instance as a write path states it (catalog ref, not yet validated)."""

    destination: str
    connection_mode: str
    enabled: bool = False
    display_name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    filters: list[Mapping[str, Any]] | None = None  # None: keep the existing filters
    id: str | None = None


class Service:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        publisher: RedisPublisher | None,
        *,
        limits: RuleLimits | None = None,
        compile_options: CompileOptions | None = None,
        keep_versions: int = 10,
        propagation_seconds: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.publisher = publisher
        self.limits = limits or RuleLimits()
        self.compile_options = compile_options or CompileOptions()
        self.keep_versions = keep_versions
        self.propagation_seconds = propagation_seconds
        self.clock = clock
        self._lock = threading.RLock()

    # -- lookups -------------------------------------------------------------------------

    def workspace(self, slug: str) -> Workspace:
        found = self.store.get_workspace(slug) if isinstance(slug, str) else None
        if found is None:
            raise NotFound(f"workspace {slug!r} not found")
        return found

    def source(self, workspace_slug: str, source_slug: str) -> Source:
        ws = self.workspace(workspace_slug)
        found = self.store.get_source(ws.id, source_slug) if isinstance(source_slug, str) else None
        if found is None:
            raise NotFound(f"source {source_slug!r} not found in workspace {workspace_slug!r}")
        return found

    def resolve_source(self, ref: str) -> Source:
        """A source named ``WORKSPACE/SOURCE`` or by its write key."""
        if "/" in ref:
            ws, _, src = ref.partition("/")
            return self.source(ws, src)
        found = self.store.get_source_by_write_key(ref)
        if found is None:
            raise NotFound(f"no source {ref!r}: give WORKSPACE/SOURCE or a write key")
        return found

    def instances(self, source: Source) -> list[Instance]:
        return self.store.list_instances(source.id)

    def instance(self, source: Source, instance_id: str) -> Instance:
        for inst in self.instances(source):
            if inst.id == instance_id:
                return inst
        raise NotFound(f"destination {instance_id!r} not found on source {source.slug!r}")

    # -- workspaces and sources ----------------------------------------------------------

    def create_workspace(self, slug: str, name: str | None = None) -> Workspace:
        check_slug("workspace", slug)
        with self._lock, self.store.transaction():
            if self.store.get_workspace(slug) is not None:
                raise AlreadyExists(f"workspace {slug!r} already exists")
            return self.store.create_workspace(slug, name or slug)

    def ensure_workspace(self, slug: str, name: str | None = None) -> Workspace:
        check_slug("workspace", slug)
        with self._lock, self.store.transaction():
            found = self.store.get_workspace(slug)
            return found or self.store.create_workspace(slug, name or slug)

    def create_source(self, workspace_slug: str, slug: str, source_type: str,
                      name: str | None = None, write_key: str | None = None
                      ) -> tuple[Source, PublishResult]:
        check_slug("source", slug)
        if source_type not in SOURCE_TYPES:
            raise InvalidArgument(f"source type must be one of {', '.join(SOURCE_TYPES)}, got "
                                  f"{source_type!r}", code="invalid_source_type")
        if write_key is not None:
            check_write_key(write_key)
        with self._lock:
            with self.store.transaction():
                ws = self.workspace(workspace_slug)
                if self.store.get_source(ws.id, slug) is not None:
                    raise AlreadyExists(
                        f"source {slug!r} already exists in workspace {workspace_slug!r}")
                if write_key is not None and self.store.get_source_by_write_key(write_key):
                    raise AlreadyExists("write key is already used by another source")
                source = self.store.create_source(ws.id, slug, name or slug, source_type,
                                                  write_key=write_key)
                bundle, changed = self._stage(source, [])
            return source, self._push(source, bundle, changed)

    def delete_source(self, source: Source) -> None:
        with self._lock:
            with self.store.transaction():
                self.store.delete_source(source.id)
                # until Redis forgets it too (retry_pending, across restarts)
                self.store.mark_unpublished([source.write_key])
            if self.publisher is not None:
                try:
                    self.publisher.delete_source(source.write_key)
                except redis.RedisError:  # Redis would serve it on: retry_pending deletes it
                    return
                self.store.clear_unpublished([source.write_key])

    # -- instances -------------------------------------------------------------------------

    def set_instances(self, source: Source, specs: Sequence[InstanceSpec],
                      *, revision: int | None = None) -> PublishResult:
        """Make ``specs`` the complete set of the source's instances (declarative)."""
        with self._lock:
            with self.store.transaction():
                current = self.store.get_source_by_write_key(source.write_key) or source
                existing = self.store.list_instances(current.id)
                desired = self.build_instances(current, existing, specs)
                bundle, changed = self._commit(current, existing, desired, revision=revision)
                return self._push(current, bundle, changed)

    def mutate(self, source: Source,
               change: Callable[[list[Instance]], list[Instance]]) -> PublishResult:
        """Apply ``change`` to the current instances and commit the result (API writes)."""
        with self._lock:
            with self.store.transaction():
                current = self.store.get_source_by_write_key(source.write_key) or source
                existing = self.store.list_instances(current.id)
                desired = change(list(existing))
                bundle, changed = self._commit(current, existing, desired)
                return self._push(current, bundle, changed)

    def build_instances(self, source: Source, existing: Sequence[Instance],
                        specs: Sequence[InstanceSpec]) -> list[Instance]:
        """Turn specs into Instances, matching existing ones by id or display name."""
        by_id = {i.id: i for i in existing}
        by_name = {i.display_name.strip().casefold(): i for i in existing}
        out: list[Instance] = []
        taken: set[str] = set()
        for n, spec in enumerate(specs):
            where = f"destinations[{n}]"
            try:
                dest = self.catalog.get(spec.destination)
            except InvalidArgument as exc:
                exc.located(where)
                raise
            if spec.connection_mode not in CONNECTION_MODES:
                raise InvalidArgument(
                    f"{where}: connection_mode must be CLOUD or DEVICE, got "
                    f"{spec.connection_mode!r}", code="invalid_connection_mode")
            name = default_display_name(dest, out, spec.display_name)
            match = by_id.get(spec.id) if spec.id else by_name.get(name.strip().casefold())
            if match is not None:
                inst_id = match.id
            else:
                inst_id = spec.id or new_instance_id(name, taken | by_id.keys())
            if inst_id in taken:
                raise InvalidArgument(f"{where}: duplicate destination id {inst_id!r}",
                                      code="duplicate_id")
            taken.add(inst_id)
            if spec.filters is None:
                flt = match.filters if match else ()
            else:
                flt = self.build_filters(match.filters if match else (), spec.filters,
                                         where=f"{where}.filters")
            out.append(Instance(
                id=inst_id, catalog_slug=dest.slug, display_name=name,
                connection_mode=spec.connection_mode,  # type: ignore[arg-type]
                enabled=spec.enabled, settings=dict(spec.settings), filters=flt,
                created_at=match.created_at if match else "",
                updated_at=match.updated_at if match else "",
            ))
        return out

    def build_filters(self, existing: Sequence[Filter], raws: Sequence[Mapping[str, Any]], *,
                      where: str = "") -> tuple[Filter, ...]:
        """Filters from requests' shapes, matched to ``existing`` by id or title; an error
        names ``where[m]`` (the filter's place in a larger document) when ``where`` is given."""
        by_title = {f.title: f for f in existing}
        by_id = {f.id: f for f in existing}
        out: list[Filter] = []
        for m, raw in enumerate(raws):
            try:
                out.append(self.make_filter(raw, by_id, by_title))
            except InvalidArgument as exc:
                if where:
                    exc.located(f"{where}[{m}]")
                raise
        return tuple(out)

    def make_filter(self, raw: Mapping[str, Any], by_id: Mapping[str, Filter] | None = None,
                    by_title: Mapping[str, Filter] | None = None) -> Filter:
        valid = filters_mod.validate_filter(raw)
        given_id = raw.get("id") if isinstance(raw, Mapping) else None
        if isinstance(given_id, str) and not RESOURCE_ID_RE.match(given_id):
            raise InvalidArgument(f"filter.id {given_id[:40]!r} must be 1-100 letters, digits, "
                                  "'_' or '-' (the last part of the filter's resource name)",
                                  code="bad_id")
        match = (by_id or {}).get(given_id) if isinstance(given_id, str) else \
            (by_title or {}).get(valid["title"])
        filter_id = match.id if match else (given_id if isinstance(given_id, str)
                                            else "df_" + secrets.token_urlsafe(12))
        return Filter(id=filter_id, if_=valid["if"], actions=tuple(valid["actions"]),
                      title=valid["title"], description=valid.get("description") or "",
                      enabled=bool(valid.get("enabled", True)))

    # -- commit, compile, publish --------------------------------------------------------

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
        if changed or self._redis_behind(source, bundle):
            pending, error = self._write_redis(source.write_key, bundle)
        revision = self.store.get_source_by_write_key(source.write_key)
        return self._result(source, bundle, changed, pending=pending, error=error,
                            revision=revision.revision if revision else source.revision)

    def _redis_behind(self, source: Source, bundle: Bundle) -> bool:
        if self.publisher is None:
            return False
        try:
            return self.publisher.current(source.write_key) != (bundle.version, bundle.etag)
        except (redis.RedisError, ValueError, UnicodeDecodeError):  # (a malformed pointer)
            return True

    def _write_redis(self, write_key: str, bundle: Bundle, *,
                     rolled_back: bool = False) -> tuple[bool, str]:
        """Publish ``bundle`` (``point`` it when the source is rolled back to it); returns
        ``(pending, error)``. A higher version Redis already serves stays (``write``)."""
        if self.publisher is None:
            return True, "no Redis configured"
        try:
            if rolled_back:
                self.publisher.point(write_key, bundle)
            else:
                self.publisher.write(write_key, bundle)
        except redis.RedisError as exc:
            self.store.mark_unpublished([write_key])
            return True, (f"Redis unreachable, publish pending ({exc}); `serve` retries it, "
                          "or run `republish --all`")
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

    def publish(self, source: Source) -> PublishResult:
        """Compile the stored configuration; publish a new version only if the bytes changed."""
        with self._lock:
            with self.store.transaction():
                current = self.store.get_source_by_write_key(source.write_key) or source
                bundle, changed = self._stage(current, self.store.list_instances(current.id))
                return self._push(current, bundle, changed)

    def republish_all(self, *, batch: int = 500) -> Iterator[PublishResult]:
        """Rebuild Redis from SQLite: every source's current bundle, byte for byte.

        This restores what was served (after a rollback, the rolled-back version); it does
        not recompile — ``publish`` does that. A source never published is compiled and
        published now. Sources go to Redis ``batch`` at a time, one round trip per batch.
        """
        last = 0
        while True:
            pending, error = False, ""
            # One write transaction per page, the Redis writes inside it: no publisher process
            # commits between this read and those writes, so none of them can be stale.
            with self._lock, self.store.transaction():
                chunk = self.store.current_bundles(last, batch)
                if not chunk:
                    return
                last = chunk[-1][0].id
                first = self._stage_unpublished([src for src, cur, _ in chunk if cur is None])
                staged = [(src, first[src.id], True) if current is None else (src, current, False)
                          for src, current, _ in chunk]
                rolled_back = {src.write_key for src, _, back in chunk if back}
                keys = [src.write_key for src, _, _ in staged]
                if self.publisher is None:
                    pending, error = True, "no Redis configured"
                else:
                    try:
                        self.publisher.write_many(
                            ((src.write_key, bundle) for src, bundle, _ in staged), batch=batch,
                            rolled_back=rolled_back)
                    except redis.RedisError as exc:
                        self.store.mark_unpublished(keys)
                        pending, error = True, (f"Redis unreachable, publish pending ({exc}); "
                                                "run `republish --all`")
                    else:
                        self.store.clear_unpublished(keys)
            for src, bundle, changed in staged:
                yield self._result(src, bundle, changed, pending=pending, error=error)

    def rollback(self, source: Source, version: int) -> PublishResult:
        """Serve an earlier kept version again (the configuration itself is unchanged).

        The version is re-dated to now: its Last-Modified and ``visible_everywhere_by`` count
        from the rollback, so a client's If-Modified-Since from the version rolled away does
        not keep that one (its bytes, and so its ETag, are the old version's).
        """
        with self._lock:
            with self.store.transaction():
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
        what a stop between commit and publish, or a Redis flush, leaves behind — and return
        how many. Raises ``redis.RedisError`` when Redis cannot be read."""
        if self.publisher is None:
            return 0
        found: list[str] = []
        rows = self.store.current_pointers()
        while chunk := list(itertools.islice(rows, batch)):
            served = self.publisher.currents([write_key for write_key, _, _ in chunk])
            found += [write_key for (write_key, version, etag), pointer
                      in zip(chunk, served, strict=True) if pointer != (version, etag)]
            time.sleep(0.001)  # (in serve's thread pool: let the API's requests have the GIL)
        self.store.mark_unpublished(found)
        return len(found)

    def retry_pending(self) -> tuple[int, int]:
        """Bring Redis in line with SQLite for each pending source: publish the current bundle
        it lacks, or delete a source SQLite no longer has. One source at a time, its read and
        its Redis write inside one write transaction (no publisher process commits between
        them); stops at the first Redis failure. Returns ``(published or deleted, still
        pending)``."""
        published = 0
        for write_key in self.store.unpublished():
            with self._lock, self.store.transaction():
                source = self.store.get_source_by_write_key(write_key)
                bundle = None if source is None else self.store.current_bundle(source.id)
                try:
                    if source is None and self.publisher is not None:  # deleted: not served
                        self.publisher.delete_source(write_key)
                        published += 1
                    elif (source is not None and bundle is not None
                          and self._redis_behind(source, bundle)):
                        latest = self.store.latest_bundle(source.id)
                        back = latest is not None and bundle.version < latest.version
                        if self._write_redis(write_key, bundle, rolled_back=back)[0]:
                            break
                        published += 1
                except redis.RedisError:
                    break
                self.store.clear_unpublished([write_key])
        return published, len(self.store.unpublished())

    def status(self, source: Source) -> dict[str, Any]:
        """Publish status: current version, ETag, times, kept versions, Redis agreement."""
        current = self.store.current_bundle(source.id)
        out: dict[str, Any] = {
            "write_key": source.write_key, "source": source.slug, "type": source.type,
            "revision": source.revision,
            "versions": [b.version for b in self.store.list_bundles(source.id)],
        }
        if current is None:
            out["version"] = None
            return out
        out.update(self._result(source, current, False).to_dict())
        out.pop("changed", None)
        out["pending"] = self._redis_behind(source, current)
        return out

    def diff(self, source: Source) -> str:
        """Unified diff between the served bundle and what publishing now would serve."""
        current = self.store.current_bundle(source.id)
        old = orjson.loads(current.json) if current else {}
        new = orjson.loads(self.compile(source))
        opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        a = orjson.dumps(old, option=opts).decode().splitlines(keepends=True)
        b = orjson.dumps(new, option=opts).decode().splitlines(keepends=True)
        label = f"v{current.version}" if current else "(unpublished)"
        return "".join(difflib.unified_diff(a, b, fromfile=f"{source.slug} {label}",
                                            tofile=f"{source.slug} (compiled now)"))

    # -- single-resource writes (Config API) and the webhook -------------------------------
    # Each is a ``mutate``: the whole desired set still goes through the same validation,
    # rules and transaction; these only say how one resource changes within it.

    def add_instance(self, source: Source, spec: InstanceSpec,
                     copy_from: Instance | None = None) -> tuple[Instance, PublishResult]:
        """Connect a new instance; ``copy_from`` (same catalog destination) lends its settings."""
        made: list[str] = []

        def change(existing: list[Instance]) -> list[Instance]:
            dest = self.catalog.get(spec.destination)
            if spec.connection_mode not in CONNECTION_MODES:
                raise InvalidArgument(
                    f"connection_mode must be CLOUD or DEVICE, got {spec.connection_mode!r}",
                    code="invalid_connection_mode")
            name = default_display_name(dest, existing, spec.display_name)
            self._check_name_free(existing, name, None)
            settings = dict(spec.settings)
            if copy_from is not None:
                if copy_from.catalog_slug != dest.slug:
                    raise InvalidArgument(
                        f"copy_settings_from: instance {copy_from.id!r} is a "
                        f"{copy_from.catalog_slug} instance, not {dest.slug}; settings can only "
                        "be copied between instances of the same catalog destination",
                        code="copy_settings_mismatch")
                settings = {**copy_from.settings, **settings}
            inst_id = new_instance_id(name, {i.id for i in existing})
            flt = self.build_filters((), spec.filters or [])
            made.append(inst_id)
            return [*existing, Instance(
                id=inst_id, catalog_slug=dest.slug, display_name=name,
                connection_mode=spec.connection_mode,  # type: ignore[arg-type]
                enabled=spec.enabled, settings=settings, filters=flt)]

        with self._lock:
            result = self.mutate(source, change)
            return self.instance(source, made[0]), result

    def update_instance(self, source: Source, instance_id: str, fields: Mapping[str, Any],
                        settings_patch: Mapping[str, Any] | None = None
                        ) -> tuple[Instance, PublishResult]:
        """Change the given fields (display_name, enabled, connection_mode, settings).

        ``settings_patch`` sets the settings it names on top of the current ones (``None``
        removes one), as a Config API ``config`` update does.
        """

        def change(existing: list[Instance]) -> list[Instance]:
            out = []
            found = False
            for inst in existing:
                if inst.id != instance_id:
                    out.append(inst)
                    continue
                found = True
                new = replace(inst, **{k: v for k, v in fields.items()
                                       if k in ("display_name", "enabled", "settings")})
                if settings_patch is not None:
                    merged = {**new.settings, **settings_patch}
                    new = replace(new, settings={k: v for k, v in merged.items()
                                                 if v is not None})
                if "connection_mode" in fields:
                    mode = fields["connection_mode"]
                    if mode not in CONNECTION_MODES:
                        raise InvalidArgument(
                            f"connection_mode must be CLOUD or DEVICE, got {mode!r}",
                            code="invalid_connection_mode")
                    new = replace(new, connection_mode=mode)
                if "display_name" in fields:
                    self._check_name_free(existing, new.display_name, inst.id)
                out.append(new)
            if not found:
                raise NotFound(f"destination {instance_id!r} not found on source "
                               f"{source.slug!r}")
            return out

        with self._lock:
            result = self.mutate(source, change)
            return self.instance(source, instance_id), result

    def delete_instance(self, source: Source, instance_id: str) -> PublishResult:
        def change(existing: list[Instance]) -> list[Instance]:
            kept = [i for i in existing if i.id != instance_id]
            if len(kept) == len(existing):
                raise NotFound(f"destination {instance_id!r} not found on source "
                               f"{source.slug!r}")
            return kept

        return self.mutate(source, change)

    def add_filter(self, source: Source, instance_id: str,
                   raw: Mapping[str, Any]) -> tuple[Filter, PublishResult]:
        made: list[Filter] = []

        def change(flt: tuple[Filter, ...], inst: Instance) -> tuple[Filter, ...]:
            # (a title already taken is refused by _commit, as on every other write)
            new = replace(self.build_filters((), [raw])[0], id="df_" + secrets.token_urlsafe(12))
            made.append(new)
            return (*flt, new)

        with self._lock:
            result = self._mutate_filters(source, instance_id, change)
            return made[0], result

    def update_filter(self, source: Source, instance_id: str, filter_id: str,
                      fields: Mapping[str, Any]) -> tuple[Filter, PublishResult]:
        """Change the given fields (``if``, ``actions``, ``title``, ``description``, ...)."""
        made: list[Filter] = []

        def change(flt: tuple[Filter, ...], inst: Instance) -> tuple[Filter, ...]:
            old = self._filter(flt, inst, filter_id)
            raw = {**filter_dict(old), **fields}
            new = replace(self.build_filters((), [raw])[0], id=old.id)
            made.append(new)
            return tuple(new if f.id == filter_id else f for f in flt)

        with self._lock:
            result = self._mutate_filters(source, instance_id, change)
            return made[0], result

    def delete_filter(self, source: Source, instance_id: str, filter_id: str) -> PublishResult:
        def change(flt: tuple[Filter, ...], inst: Instance) -> tuple[Filter, ...]:
            self._filter(flt, inst, filter_id)
            return tuple(f for f in flt if f.id != filter_id)

        return self._mutate_filters(source, instance_id, change)

    def apply_webhook(self, workspace_slug: str, source_slug: str, source_type: str | None,
                      specs: Sequence[InstanceSpec], *, revision: int, event_id: str,
                      render: Callable[[Source, PublishResult], dict[str, Any]]
                      ) -> tuple[int, dict[str, Any], bool]:
        """Apply a control plane's desired set once per ``event_id``, newest revision only.

        Returns ``(status, body, duplicate)``. The event record, the source (created when
        ``source_type`` is given and it does not exist), the instances and the bundle row are
        one transaction; a refused change records nothing, so the sender may fix and resend.
        """
        with self._lock:
            with self.store.transaction():
                seen = self.store.get_webhook_event(event_id)
                if seen is not None:
                    return seen.status, seen.response, True
                ws = self.workspace(workspace_slug)
                source = self.store.get_source(ws.id, source_slug)
                if source is None and source_type is None:
                    raise NotFound(f"source {source_slug!r} not found in workspace "
                                   f"{workspace_slug!r} (send 'type' to create it)")
                if source is None:
                    check_slug("source", source_slug)
                    if source_type not in SOURCE_TYPES:
                        raise InvalidArgument(
                            f"type must be one of {', '.join(SOURCE_TYPES)}, got "
                            f"{source_type!r}", code="invalid_source_type")
                    source = self.store.create_source(ws.id, source_slug, source_slug,
                                                      source_type)
                elif source_type is not None and source_type != source.type:
                    raise InvalidArgument(
                        f"source {source_slug!r} is a {source.type} source, the event says "
                        f"{source_type!r} (a source's type cannot change)",
                        code="source_type_change")
                if revision <= source.revision:
                    body: dict[str, Any] = {
                        "status": "ignored", "event_id": event_id,
                        "reason": f"revision {revision} is not newer than the stored revision "
                                  f"{source.revision}",
                        "revision": source.revision}
                    self.store.record_webhook_event(event_id, source.id, 200, body)
                    return 200, body, False
                existing = self.store.list_instances(source.id)
                desired = self.build_instances(source, existing, specs)
                bundle, changed = self._commit(source, existing, desired, revision=revision)
                source = replace(source, revision=revision)
                result = self._result(source, bundle, changed, revision=revision)
                body = {"status": "applied", "event_id": event_id, **render(source, result)}
                self.store.record_webhook_event(event_id, source.id, 200, body)
                pushed = self._push(source, bundle, changed)
                if pushed.pending:  # a duplicate delivery gets this reply, not the one recorded
                    body = {**body, **render(source, pushed)}
                    self.store.update_webhook_response(event_id, body)
            return 200, body, False

    # -- helpers of the single-resource writes ---------------------------------------------

    def _check_name_free(self, existing: Sequence[Instance], name: str,
                         own_id: str | None) -> None:
        key = name.strip().casefold()
        for inst in existing:
            if inst.id != own_id and inst.display_name.strip().casefold() == key:
                raise AlreadyExists(
                    f"display name {name.strip()!r} is already used by destination {inst.id!r} "
                    f"on this source [duplicate_display_name: display names are unique on a "
                    f"source (case-insensitive)]", code="duplicate_display_name")

    @staticmethod
    def _filter(flt: Sequence[Filter], inst: Instance, filter_id: str) -> Filter:
        for f in flt:
            if f.id == filter_id:
                return f
        raise NotFound(f"filter {filter_id!r} not found on destination {inst.id!r}")

    def _mutate_filters(self, source: Source, instance_id: str,
                        change: Callable[[tuple[Filter, ...], Instance], tuple[Filter, ...]]
                        ) -> PublishResult:
        def apply(existing: list[Instance]) -> list[Instance]:
            for n, inst in enumerate(existing):
                if inst.id == instance_id:
                    existing[n] = replace(inst, filters=change(inst.filters, inst))
                    return existing
            raise NotFound(f"destination {instance_id!r} not found on source {source.slug!r}")

        return self.mutate(source, apply)


def filter_dict(f: Filter) -> dict[str, Any]:
    """A filter in Config API shape (without its resource name)."""
    return {"id": f.id, "if": f.if_, "actions": [dict(a) for a in f.actions], "title": f.title,
            "description": f.description, "enabled": f.enabled}
