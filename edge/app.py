"""The edge's ASGI application: a raw fast path for the settings route, Starlette for the rest.

``create_app`` builds everything lazily: the Redis client, cache and (in instant mode) the
publish-channel subscription are opened in the Starlette lifespan and shared with every
request through typed lifespan state; nothing happens at import. The settings route skips
Starlette's routing and middleware. Its answer is computed here (``scan``,
``settings_answer``, ``choose``) for both ways in: this ASGI app, and edge/server.py, the HTTP
protocol settings-cdn-edge runs, which answers GET/HEAD of the route without an ASGI task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from edge import assets, http, propagation
from edge.cache import BundleCache, Entry, Unavailable
from edge.instant import Subscription
from edge.metrics import Metrics, render
from edge.settings import EdgeSettings
from edge.store import Store, StoreUnavailable, make_client

log = logging.getLogger("edge.app")

SETTINGS_PREFIX = "/v1/projects/"
SETTINGS_SUFFIX = "/settings"
_START, _END = len(SETTINGS_PREFIX), -len(SETTINGS_SUFFIX)


@dataclass(eq=False)
class Runtime:
    """Everything a request needs, created by the lifespan."""

    settings: EdgeSettings
    clock: Callable[[], float]
    client: aioredis.Redis
    store: Store
    cache: BundleCache
    metrics: Metrics
    not_found_lines: bytes  # header lines (http.header_block) of the 404, Age aside
    unavailable_lines: bytes  # of the 503
    subscription: Subscription | None = None


class State(TypedDict):
    edge: Runtime


@functools.lru_cache(maxsize=512)
def _accepts_gzip(raw: bytes) -> bool:
    # Browsers send a handful of distinct values: parse each once.
    return http.accepts_gzip(raw.decode("latin-1"))


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


# Request headers after which a GET is not answered by edge/server.py itself: it may carry a
# body, wait for "100 Continue" or switch protocols.
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


def scan(headers: Sequence[tuple[bytes, bytes]]
         ) -> tuple[bytes | None, bytes | None, bytes | None, bool]:
    """Accept-Encoding, If-None-Match, If-Modified-Since (repeated fields joined with commas,
    RFC 9110 §5.3), and whether the request is plain: none of ``_NOT_PLAIN``."""
    accept_encoding = if_none_match = if_modified_since = None
    plain = True
    for name, value in headers:
        if name == b"accept-encoding":
            if accept_encoding is not None:
                return _scan_repeated(headers)
            accept_encoding = value
        elif name == b"if-none-match":
            if if_none_match is not None:
                return _scan_repeated(headers)
            if_none_match = value
        elif name == b"if-modified-since":
            if if_modified_since is not None:
                return _scan_repeated(headers)
            if_modified_since = value
        elif name in _NOT_PLAIN:
            plain = False
    return accept_encoding, if_none_match, if_modified_since, plain


def _scan_repeated(headers: Sequence[tuple[bytes, bytes]]
                   ) -> tuple[bytes | None, bytes | None, bytes | None, bool]:
    """``scan`` of a request that repeats one of the fields: each joined once, in linear time
    (joining as they come copied the whole field again for each repeat: 20,000 repeats cost
    56 ms of the event loop). Two If-Modified-Since dates joined are no date: ignored."""
    found: dict[bytes, list[bytes]] = {b"accept-encoding": [], b"if-none-match": [],
                                       b"if-modified-since": []}
    plain = True
    for name, value in headers:
        if name in found:
            found[name].append(value)
        elif name in _NOT_PLAIN:
            plain = False
    ae, inm, ims = (b",".join(v) if v else None for v in found.values())
    return ae, inm, ims, plain


async def settings_answer(rt: Runtime, write_key: str, head: bool, accept_encoding: bytes | None,
                          if_none_match: bytes | None, if_modified_since: bytes | None
                          ) -> tuple[int, bytes, bytes]:
    """Status, header lines (``http.header_block``, ``Date`` aside) and body of a ``GET`` or
    ``HEAD`` of a settings path, counted: the bundle (``choose``), 404 or 503.

    Shared by the ASGI path and edge/server.py, which writes it without an ASGI task.
    """
    metrics = rt.metrics
    if not http.valid_write_key(write_key):  # no Redis access for keys that cannot exist
        metrics.requests["settings", 404] += 1
        return 404, rt.not_found_lines + _age_line(0), b"" if head else http.NOT_FOUND_BODY
    try:
        entry = await rt.cache.get(write_key)
    except Unavailable:
        metrics.requests["settings", 503] += 1
        return 503, rt.unavailable_lines, b"" if head else http.UNAVAILABLE_BODY
    if entry is None:
        metrics.requests["settings", 404] += 1
        return (404, rt.not_found_lines + _age_line(rt.cache.not_found_age(write_key)),
                b"" if head else http.NOT_FOUND_BODY)
    status, lines, tail, body = choose(rt, entry, accept_encoding, if_none_match,
                                       if_modified_since)
    return status, lines + tail, b"" if head else body


def choose(rt: Runtime, entry: Entry, accept_encoding: bytes | None,
           if_none_match: bytes | None, if_modified_since: bytes | None
           ) -> tuple[int, bytes, bytes, bytes]:
    """Status, header lines (``http.header_block``: the bundle's, then ``tail``: the lines all
    bundles share, ``Age`` and the stale marker) and body of a held bundle's answer, counted.

    The caller adds the server's ``Date`` and drops the body of a ``HEAD``.
    """
    # RFC 9110 §13.2.2: If-None-Match is evaluated first; If-Modified-Since only without it.
    if if_none_match is not None:
        # A revalidating client sends back exactly our ETag: compare bytes before parsing.
        unchanged = if_none_match == entry.etag_bytes or http.none_match(
            if_none_match.decode("latin-1"), entry.etag)
    elif if_modified_since is not None:
        unchanged = http.not_modified_since(if_modified_since.decode("latin-1"),
                                            entry.published_at)
    else:
        unchanged = False
    cache = rt.cache
    if unchanged:
        rt.metrics.requests["settings", 304] += 1
        return 304, entry.wire_304, cache.shared_304 + age_line(rt, entry), b""
    if accept_encoding is not None and _accepts_gzip(accept_encoding):
        rt.metrics.requests["settings", 200] += 1
        return 200, entry.wire_gzip, cache.shared_200 + age_line(rt, entry), entry.gzip
    try:
        lines, body = entry.identity()
    except ValueError as exc:  # the store holds a broken gzip stream: nothing to serve
        log.error("cannot serve %s v%d uncompressed: %s", entry.write_key, entry.version, exc)
        rt.metrics.requests["settings", 503] += 1
        return 503, rt.unavailable_lines, b"", http.UNAVAILABLE_BODY
    rt.metrics.requests["settings", 200] += 1
    return 200, lines, cache.shared_200 + age_line(rt, entry), body


def age_line(rt: Runtime, entry: Entry) -> bytes:
    """``Age``: seconds since the copy was last verified against Redis (edge/propagation.py),
    plus the stale marker while Redis cannot be reached."""
    line = _age_line(entry.age(rt.clock()))
    return line + _STALE_LINE if entry.stale else line


_STALE_LINE = http.STALE_HEADER + b": 1\r\n"


@functools.lru_cache(maxsize=4096)
def _age_line(age: int) -> bytes:
    return b"age: %d\r\n" % age


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
        route = "assets" if path.startswith(assets.PREFIX) else "other"

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
        "seconds_since_redis_ok": None if cache.redis_ok_at is None
        else round(now - cache.redis_ok_at, 3),
        "bundles": len(entries),
        "stale_bundles": sum(1 for e in entries if e.stale),
        "oldest_verified_seconds": max((e.age(now) for e in entries), default=0),
        "instant_subscribed": None if rt.subscription is None else rt.subscription.up,
    }
    return _json(body, 200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    rt: Runtime = request.state.edge
    text = render(
        rt.metrics,
        cached=((e.write_key, e.version, e.stale) for e in rt.cache.entries()),
        negative_entries=rt.cache.negative_count(),
        redis_up=rt.cache.redis_up,
        subscribed=None if rt.subscription is None else rt.subscription.up,
    )
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def propagation_endpoint(request: Request) -> Response:
    rt: Runtime = request.state.edge
    return _json(propagation.policy(rt.settings))


async def assets_endpoint(request: Request) -> Response:
    rt: Runtime = request.state.edge
    settings = rt.settings
    if not settings.assets_dir:
        return assets.not_found()
    return await assets.serve(request, settings.assets_dir, settings.assets_latest_max_age)


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
        task: asyncio.Task[None] | None = None
        if settings.instant:
            rt.subscription = Subscription(client, cache,
                                           retry_interval=settings.redis_retry_interval)
            task = asyncio.create_task(rt.subscription.run())
        try:
            yield {"edge": rt}
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        Route("/{path:path}", not_found_endpoint,
              methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ]
    return EdgeApp(Starlette(routes=routes, lifespan=lifespan), settings)
