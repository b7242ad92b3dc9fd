"""Every write goes through here: validate, apply the rules, commit, then publish.

The Config API, the webhook and the declarative workspace file all describe a change as a new
*desired set* of a source's instances. ``Service`` checks that set (catalog settings, filters,
destination rules) before anything is written, then commits in one SQLite transaction the new
revision, the new bundle and the source's outbox record (``unpublished``); after the COMMIT it
publishes the bundle to Redis and clears the record (a transactional outbox). So a refusal
changes nothing, nothing is served that SQLite did not commit, and an accepted change is never
lost: if Redis is unreachable the record stays and the result says ``pending``; ``serve``
publishes it once Redis answers again (``retry_pending``, every ``PUBLISHER_RETRY_INTERVAL``;
``find_pending`` at start), and ``republish --all`` or the next write of the source does too.
A deletion is committed with an outbox record the same way; the Redis deletion follows.

One lock serialises a process's transactions; none holds a Redis call, so a hung Redis delays
a write's reply, never another write's commit. Publishes of every publisher process (the CLI
beside ``serve``, ``republish --all``) are ordered by Redis itself: versions only grow — a
rollback publishes the old bytes as a new version — and the publish script refuses a version
below the one served (publisher/publish.py), so a late or concurrent publish never moves a
source back. A refused publish reads SQLite again: a newer commit is served, or Redis serves
a version SQLite never made current, which is then replaced (``Staging._install_committed``).
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis

from publisher.core.catalog import Catalog, default_catalog
from publisher.core.compile import CompileOptions
from publisher.core.model import SOURCE_TYPES, Instance, Source, Workspace
from publisher.core.rules import RuleLimits
from publisher.core.specs import InstanceSpec, check_slug, check_text, check_write_key
from publisher.edits import ConfigEdits
from publisher.errors import AlreadyExists, InvalidArgument, NotFound
from publisher.publish import PublishResult, RedisPublisher
from publisher.recovery import Recovery
from publisher.redis_client import make_client
from publisher.settings import PublisherSettings
from publisher.staging import Staged
from publisher.store import Store
from publisher.webhook_events import WebhookEvents


class Service(ConfigEdits, WebhookEvents, Recovery):
    """The one write path. The steps every write takes are ``Staging``'s
    (publisher/staging.py); the Config API's single-resource writes, the webhook and Redis
    recovery are mixins (publisher/edits.py, webhook_events.py, recovery.py)."""

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
        with self._writing():
            if self.store.get_workspace(slug) is not None:
                raise AlreadyExists(f"workspace {slug!r} already exists")
            return self.store.create_workspace(slug, name or slug)

    def ensure_workspace(self, slug: str, name: str | None = None) -> Workspace:
        check_slug("workspace", slug)
        with self._writing():
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
        if name is not None:
            check_text(name, "source display name")
        with self._writing():
            ws = self.workspace(workspace_slug)
            if self.store.get_source(ws.id, slug) is not None:
                raise AlreadyExists(
                    f"source {slug!r} already exists in workspace {workspace_slug!r}")
            if write_key is not None and self.store.get_source_by_write_key(write_key):
                raise AlreadyExists("write key is already used by another source")
            source = self.store.create_source(ws.id, slug, name or slug, source_type,
                                              write_key=write_key)
            staged = self._stage(source, [])
        return source, self._publish(staged)

    def delete_source(self, source: Source) -> str:
        """Delete the source and its bundles from SQLite, with an outbox record; then from
        Redis. Returns ``""``, or why Redis may still serve it (the record stays: ``serve``'s
        retry loop deletes it)."""
        with self._writing():
            self.store.delete_source(source.id)
            self.store.add_to_outbox([source.write_key])
        return self._sync_redis([(source.write_key, None)]).error

    # -- instances -------------------------------------------------------------------------

    def set_instances(self, source: Source, specs: Sequence[InstanceSpec],
                      *, revision: int | None = None) -> PublishResult:
        """Make ``specs`` the complete set of the source's instances (declarative)."""
        with self._writing():
            current = self.store.get_source_by_write_key(source.write_key) or source
            existing = self.store.list_instances(current.id)
            desired = self.build_instances(current, existing, specs)
            staged = self._commit(current, existing, desired, revision=revision)
        return self._publish(staged)

    def mutate(self, source: Source,
               change: Callable[[list[Instance]], list[Instance]]) -> PublishResult:
        """Apply ``change`` to the current instances, commit the result, publish it."""
        with self._writing():
            staged = self._mutate(source, change)
        return self._publish(staged)

    def _mutate(self, source: Source,
                change: Callable[[list[Instance]], list[Instance]]) -> Staged:
        """``mutate``'s transaction step (a single-resource edit reads its result back in it)."""
        current = self.store.get_source_by_write_key(source.write_key) or source
        existing = self.store.list_instances(current.id)
        return self._commit(current, existing, change(list(existing)))

    def publish(self, source: Source) -> PublishResult:
        """Compile the stored configuration; publish a new version only if the bytes changed."""
        with self._writing():
            current = self.store.get_source_by_write_key(source.write_key) or source
            staged = self._stage(current, self.store.list_instances(current.id))
        return self._publish(staged)

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
        out.update(self._result(Staged(source, current, False)).to_dict())
        out.pop("changed", None)
        try:
            out["pending"] = self.publisher is not None and (
                self.publisher.current(source.write_key) != (current.version, current.etag))
        except redis.RedisError:  # unknown: as good as not published
            out["pending"] = True
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


def propagation_seconds() -> int | None:
    """The edge's worst-case propagation time, from the same environment the edge reads."""
    from edge.propagation import worst_case_seconds
    from edge.settings import EdgeSettings

    return int(worst_case_seconds(EdgeSettings.from_env()))


def build_service(settings: PublisherSettings, *, with_redis: bool = True) -> Service:
    """The Service the settings describe, for both programs: each CLI command's, and the
    Config API's when ``create_app`` is given none. ``with_redis=False`` is for the commands
    that never write Redis."""
    store = Store.open(settings.db_path)
    publisher = None
    if with_redis:
        client = make_client(settings)  # REDIS_URL's server, or Sentinel's primary
        publisher = RedisPublisher(client, keep_versions=settings.redis_keep_versions)
    return Service(
        store, default_catalog(), publisher,
        limits=RuleLimits(max_cloud_instances=settings.max_cloud_instances),
        compile_options=CompileOptions(api_host=settings.api_host),
        keep_versions=settings.keep_versions,
        propagation_seconds=propagation_seconds(),
    )
