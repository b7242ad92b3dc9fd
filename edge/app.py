"""The edge's ASGI application: a raw fast path for the settings route, Starlette for the rest.

``create_app`` builds everything lazily: the Redis client, cache and (in instant mode) the
publish-channel subscription are opened in the Starlette lifespan and shared with every
request through typed lifespan state; nothing happens at import. The settings route skips
Starlette's routing and middleware; its answer comes from edge/answer.py, which edge/server.py
(the HTTP protocol settings-cdn-edge runs) shares for the GET/HEAD it answers without an ASGI
task.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TypedDict

import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from edge import assets, http, propagation, snippet
from edge.answer import Runtime, scan, settings_answer
from edge.cache import BundleCache
from edge.instant import Subscription
from edge.metrics import CONTENT_TYPE, Gauges, Metrics, Report, WorkerFiles, exposition, scrape
from edge.mirror import Mirror, Upstream
from edge.replica_link import ReplicaLink
from edge.settings import EdgeSettings
from edge.store import Store, StoreUnavailable, make_client

SETTINGS_PREFIX = "/v1/projects/"
SETTINGS_SUFFIX = "/settings"
_START, _END = len(SETTINGS_PREFIX), -len(SETTINGS_SUFFIX)


class State(TypedDict):
    edge: Runtime
    mirror: Mirror


async def _respond(send: Send, status: int, headers: http.Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_settings(scope: Scope, send: Send, rt: Runtime) -> None:
    """``GET``/``HEAD``/``OPTIONS /v1/projects/{writeKey}/settings``."""
    method = scope["method"]
    metrics = rt.metrics
    if method == "OPTIONS":
        requested = None
        for name, value in scope["headers"]:
            if name == b"access-control-request-headers":
                requested = value.decode("latin-1")
        metrics.requests["settings", 204] += 1
        return await _respond(send, 204, http.preflight_headers(requested), b"")
    if method != "GET" and method != "HEAD":
        metrics.requests["settings", 405] += 1
        return await _respond(send, 405, http.method_not_allowed_headers(), b"")
    accept_encoding, if_none_match, if_modified_since, _ = scan(scope["headers"])
    status, lines, body = await settings_answer(
        rt, scope["path"][_START:_END], method == "HEAD", accept_encoding, if_none_match,
        if_modified_since)
    await _respond(send, status, http.header_list(lines), body)


class EdgeApp:
    """Dispatches the settings route to ``serve_settings`` and everything else to Starlette."""

    def __init__(self, app: Starlette, settings: EdgeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rt: Runtime = scope["state"]["edge"]
        path: str = scope["path"]
        if path.startswith(SETTINGS_PREFIX) and path.endswith(SETTINGS_SUFFIX):
            return await serve_settings(scope, send, rt)
        route = ("assets" if path.startswith(assets.PREFIX) else
                 "analytics_js" if path.startswith(snippet.PREFIXES) else "other")

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                rt.metrics.requests[route, message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


# -- Starlette routes (not the hot path) ----------------------------------------------------


def _json(data: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json",
                    headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok", headers={"cache-control": "no-store"})


async def readyz(request: Request) -> Response:
    """Ready once Redis was reached, or while bundles are held to serve; says how stale."""
    rt: Runtime = request.state.edge
    cache = rt.cache
    if not cache.backing_off:
        try:
            await rt.store.ping()
            cache.mark_redis_ok()
        except StoreUnavailable as exc:
            cache.mark_redis_error(exc)
    now = rt.clock()
    entries = list(cache.entries())
    reached = cache.redis_ok_at is not None
    ready = reached or bool(entries)
    body = {
        "ready": ready,
        "reason": ("redis reachable" if cache.redis_up else
                   "redis was reached before" if reached else
                   "serving held bundles" if entries else "redis never reached, nothing held"),
        "redis": "up" if cache.redis_up else "down",
        # whether the last read found sc:loaded (None: no read yet): false while a Redis that
        # lost its data waits for the publisher to load it again (edge/keyspace.py)
        "redis_loaded": rt.store.loaded,
        "seconds_since_redis_ok": None if cache.redis_ok_at is None
        else round(now - cache.redis_ok_at, 3),
        "bundles": len(entries),
        "stale_bundles": sum(1 for e in entries if e.stale),
        "oldest_verified_seconds": max((e.age(now) for e in entries), default=0),
        "instant_subscribed": None if rt.subscription is None else rt.subscription.up,
        # the link of the replica read to its primary; null for a primary (edge/replica_link.py)
        "redis_replica_link": None if cache.replica_link is None
        else "up" if cache.replica_link else "down",
    }
    return _json(body, 200 if ready else 503)


def _gauges(rt: Runtime) -> Gauges:
    return Gauges(
        cached=[(e.write_key, e.version, e.stale) for e in rt.cache.entries()],
        negative_entries=rt.cache.negative_count(),
        redis_up=rt.cache.redis_up,
        subscribed=None if rt.subscription is None else rt.subscription.up,
        replica_link=rt.cache.replica_link,
    )


async def metrics_endpoint(request: Request) -> Response:
    """This process's counters, or every worker's under settings-cdn-edge (edge/metrics.py)."""
    rt: Runtime = request.state.edge
    collector = scrape(rt.metrics, _gauges(rt), request.state.metrics_files)
    # Formatting costs per sample, and edge_bundle_version has one per held bundle: off the
    # event loop, so requests keep being answered meanwhile.
    text = await asyncio.to_thread(exposition, collector)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


def _sharing_metrics(
    lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[State]],
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[dict[str, object]]]:
    """``lifespan``, plus (when settings-cdn-edge runs several workers) this worker's
    publishing of its numbers for the others' /metrics, every PUBLISH_INTERVAL and at exit."""

    @contextlib.asynccontextmanager
    async def sharing(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with lifespan(app) as state:
            files = WorkerFiles.from_env()
            if files is None:
                yield {**state, "metrics_files": None}
                return
            rt = state["edge"]
            task = asyncio.create_task(
                files.run(lambda: Report.of(rt.metrics, _gauges(rt), files.worker)))
            try:
                yield {**state, "metrics_files": files}
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                files.retire(rt.metrics)

    return sharing


async def propagation_endpoint(request: Request) -> Response:
    rt: Runtime = request.state.edge
    return _json(propagation.policy(rt.settings))


async def assets_endpoint(request: Request) -> Response:
    rt: Runtime = request.state.edge
    settings = rt.settings
    if not settings.assets_dir:
        return assets.not_found()
    return await assets.serve(request, settings.assets_dir, settings.assets_latest_max_age,
                              request.state.mirror)


def make_mirror(settings: EdgeSettings, metrics: Metrics) -> Mirror:
    """The /next-integrations/ mirror of ``settings`` (no upstream: the store alone)."""
    upstream = Upstream.parse(settings.assets_upstream) if settings.assets_upstream else None
    return Mirror(os.path.abspath(settings.assets_dir), upstream,
                  timeout=settings.assets_upstream_timeout, max_bytes=settings.assets_max_bytes,
                  negative_ttl=settings.assets_negative_ttl,
                  retry_after=settings.assets_retry_after, metrics=metrics)


async def not_found_endpoint(request: Request) -> Response:
    return PlainTextResponse(http.NOT_FOUND_BODY.decode(), status_code=404,
                             headers={"access-control-allow-origin": "*"})


def create_app(
    settings: EdgeSettings | None = None,
    *,
    clock: Callable[[], float] | None = None,
    redis: aioredis.Redis | None = None,
) -> EdgeApp:
    """The edge app. ``redis``: a client to use instead of one built from the settings (the
    app then leaves closing it to the caller). Raises ``propagation.BudgetExceeded``."""
    settings = settings if settings is not None else EdgeSettings.from_env()
    propagation.check_budget(settings)
    now = clock if clock is not None else time.monotonic
    standalone = snippet.Standalone.load(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        client = redis if redis is not None else make_client(settings)
        store = Store(client)
        metrics = Metrics()
        cache = BundleCache(
            store,
            cache_control=http.cache_control(settings.max_age, settings.s_maxage,
                                             settings.stale_while_revalidate,
                                             settings.stale_if_error),
            clock=now,
            refresh_interval=settings.refresh_interval,
            max_entries=settings.cache_max_entries,
            negative_ttl=settings.negative_ttl,
            negative_max_entries=settings.negative_max_entries,
            retry_interval=settings.redis_retry_interval,
            recheck_grace=propagation.recheck_grace(settings),
            metrics=metrics,
        )
        rt = Runtime(
            settings=settings, clock=now, client=client, store=store, cache=cache,
            metrics=metrics,
            not_found_lines=http.header_block(http.not_found_headers(settings.not_found_max_age)),
            unavailable_lines=http.header_block(http.unavailable_headers(settings.retry_after)),
        )
        try:
            await store.ping()
            cache.mark_redis_ok()
        except StoreUnavailable as exc:
            cache.mark_redis_error(exc)  # start anyway: Redis may come later, readyz says so
        # Everything built so far lives as long as the process: move it out of the garbage
        # collector's generations, so collections triggered by request garbage stay cheap.
        gc.freeze()
        mirror = make_mirror(settings, metrics)
        link = asyncio.create_task(
            ReplicaLink(store, cache, interval=settings.redis_retry_interval).run())
        task: asyncio.Task[None] | None = None
        if settings.instant:
            rt.subscription = Subscription(client, cache,
                                           retry_interval=settings.redis_retry_interval)
            task = asyncio.create_task(rt.subscription.run())
        try:
            yield {"edge": rt, "mirror": mirror}
        finally:
            await mirror.aclose()
            for running in (link, task):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            await store.aclose()
            if redis is None:
                await client.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint, methods=["GET", "HEAD"]),
        Route("/v1/propagation", propagation_endpoint, methods=["GET", "HEAD"]),
        Route(assets.PREFIX + "{path:path}", assets_endpoint,
              methods=["GET", "HEAD", "OPTIONS"]),
        *standalone.routes(),
        Route("/{path:path}", not_found_endpoint,
              methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return EdgeApp(Starlette(routes=routes, lifespan=_sharing_metrics(lifespan)), settings)
