"""The Config API (v1beta shapes) and the webhook, as one Starlette app.

Every write goes through ``Service`` (validate, rules, one transaction, publish) and answers
with the resource and ``bundle`` — what the write did to the source's published bundle.
Requests authenticate with ``Authorization: Bearer <token>`` (``publisher.api.auth``); shapes
and request parsing live in ``publisher.api.shapes``, bodies and error mapping in
``publisher.api.plumbing``, the destination and filter routes in ``publisher.api.destinations``
and ``publisher.api.filters``. Service calls are synchronous (SQLite, sync Redis) and run in the
thread pool; resources are opened in the lifespan, nothing at import. The lifespan also runs
``publisher.retry``: what a Redis failure left pending is published once Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from publisher.api import destinations as api_destinations
from publisher.api import filters as api_filters
from publisher.api import shapes
from publisher.api.auth import RateLimiter
from publisher.api.fields import Obj
from publisher.api.plumbing import (
    EXCEPTION_HANDLERS,
    ApiState,
    authorize,
    json_response,
    page,
    read_json,
    source_of,
    written,
)
from publisher.api.webhook import config_changed
from publisher.errors import InvalidArgument, NotFound
from publisher.publish import PublishResult
from publisher.retry import publish_pending
from publisher.service import Service, build_service
from publisher.settings import PublisherSettings
from publisher.web.app import web_routes

# -- workspaces and sources ----------------------------------------------------------------

async def list_workspaces(request: Request) -> Response:
    _, who = await authorize(request)
    return json_response({"workspaces": [shapes.workspace_dict(who.workspace.slug,
                                                               who.workspace.name)],
                          "next_page_token": ""})


async def get_workspace(request: Request) -> Response:
    _, who = await authorize(request)
    return json_response(shapes.workspace_dict(who.workspace.slug, who.workspace.name))


async def list_sources(request: Request) -> Response:
    svc, who = await authorize(request)
    sources = await run_in_threadpool(svc.store.list_sources, who.workspace.id)
    return page(request, "sources", [shapes.source_dict(who.workspace.slug, s) for s in sources])


async def create_source(request: Request) -> Response:
    svc, who = await authorize(request, write=True)
    body = Obj(await read_json(request), "")
    s = body.object("source", required=True)
    assert s is not None
    body.done()
    slug = s.text("slug")
    name = s.text("name")
    if name is not None:
        segment = shapes.last_segment(name, f"workspaces/{who.workspace.slug}/sources",
                                      "source.name")
        slug = slug or segment
    if not slug:
        raise InvalidArgument("source.slug (or source.name) is required", code="missing_field")
    kind = s.text("type", required=True) or ""
    display = s.text("display_name")
    s.done("parent", "write_keys", "revision")
    source, result = await run_in_threadpool(svc.create_source, who.workspace.slug, slug, kind,
                                             display)
    return written("source", shapes.source_dict(who.workspace.slug, source), result)


async def get_source(request: Request) -> Response:
    _, source = await source_of(request)
    return json_response(shapes.source_dict(request.path_params["ws"], source))


async def delete_source(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    await run_in_threadpool(svc.delete_source, source)
    return json_response({})


async def publish_status(request: Request) -> Response:
    svc, source = await source_of(request)
    return json_response(await run_in_threadpool(svc.status, source))


async def list_versions(request: Request) -> Response:
    svc, source = await source_of(request)

    def versions() -> dict[str, Any]:
        current = svc.store.current_bundle(source.id)
        return {"current_version": current.version if current else None, "versions": [
            {"version": b.version, "etag": b.etag, "revision": b.revision,
             "published_at": PublishResult(source.write_key, b.revision, b.version, b.etag,
                                           b.published_at, False).to_dict()["published_at"],
             "current": current is not None and b.version == current.version}
            for b in svc.store.list_bundles(source.id)]}

    return json_response(await run_in_threadpool(versions))


async def rollback(request: Request) -> Response:
    """``POST …/rollback {"version": n}``: serve kept version n's bytes again, published as a
    new version (the next number, dated now; history only grows). ``bundle`` is that new
    version: its ``etag`` is version n's. Rolling back to the bytes already served changes
    nothing (``changed: false``)."""
    svc, source = await source_of(request, write=True)
    body = Obj(await read_json(request), "")
    version = body.number("version", required=True, minimum=1) or 0
    body.done()
    result = await run_in_threadpool(svc.rollback, source, version)
    return json_response({"bundle": result.to_dict()})


# -- catalog --------------------------------------------------------------------------------

async def list_catalog(request: Request) -> Response:
    svc, _ = await authorize(request)
    search = request.query_params.get("search", "")
    return page(request, "destinations", [d.to_dict() for d in svc.catalog.search(search)])


async def get_catalog(request: Request) -> Response:
    svc, _ = await authorize(request)
    slug = request.path_params["slug"]
    found = svc.catalog.find(slug)
    if found is None:
        raise NotFound(f"catalog destination {slug[:200]!r} not found")
    return json_response(found.to_dict())


SRC = "/v1beta/workspaces/{ws}/sources/{src}"
DEST = SRC + "/destinations/{dest}"
ROUTES = [
    Route("/v1beta/workspaces", list_workspaces),
    Route("/v1beta/workspaces/{ws}", get_workspace),
    Route("/v1beta/workspaces/{ws}/sources", list_sources),
    Route("/v1beta/workspaces/{ws}/sources", create_source, methods=["POST"]),
    Route(SRC, get_source),
    Route(SRC, delete_source, methods=["DELETE"]),
    Route(SRC + "/publish", publish_status),
    Route(SRC + "/versions", list_versions),
    Route(SRC + "/rollback", rollback, methods=["POST"]),
    *api_destinations.routes(SRC, DEST),
    *api_filters.routes(DEST),
    Route("/v1beta/catalog/destinations", list_catalog),
    Route("/v1beta/catalog/destinations/{slug}", get_catalog),
    Route("/hooks/config-changed", config_changed, methods=["POST"]),
]


def create_app(settings: PublisherSettings, *, service: Service | None = None,
               clock: Callable[[], float] | None = None) -> Starlette:
    """The Config API + webhook app. ``service`` is used as given (its owner closes it);
    without one, the lifespan builds it from ``settings`` and closes it. ``clock`` (Unix
    seconds) drives the rate limit and the webhook's timestamp window."""
    now = clock or time.time

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        svc = service
        if svc is None:
            svc = await run_in_threadpool(build_service, settings)
        limiter = RateLimiter(settings.rate_limit, now)
        retry = (asyncio.create_task(publish_pending(svc, settings.retry_interval))
                 if settings.retry_interval > 0 else None)
        try:
            yield {"api": ApiState(svc, settings, limiter, now)}
        finally:
            if retry is not None:
                retry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retry
            if service is None:
                svc.store.close()

    # The web app (publisher/web/) at /app/, on the same state: the same Service and limits.
    return Starlette(routes=[*ROUTES, *web_routes(now)], lifespan=lifespan,
                     exception_handlers=EXCEPTION_HANDLERS)
