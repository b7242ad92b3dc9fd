"""Config API destination filters: list, create, get, PATCH (``update_mask``), delete.

A filter is validated (FQL parsed, with the position of a syntax error) before anything is
written; on a device-mode instance, FQL the browser cannot evaluate is refused too. Each write
recompiles the source, so the bundle's ``middlewareSettings.routingRules`` follow at once.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from publisher.api import shapes
from publisher.api.fields import Obj
from publisher.api.plumbing import json_response, page, read_json, source_of, written
from publisher.core.model import Source
from publisher.errors import NotFound

FIELDS = ("if", "actions", "title", "description", "enabled")
_EMPTY: dict[str, Any] = {"if": "", "actions": [], "title": "", "description": "",
                          "enabled": False}


def _filter_out(request: Request, source: Source, f: Any) -> dict[str, Any]:
    return shapes.filter_resource(request.path_params["ws"], source.slug,
                                  request.path_params["dest"], f)


async def list_filters(request: Request) -> Response:
    svc, source = await source_of(request)
    inst = await run_in_threadpool(svc.instance, source, request.path_params["dest"])
    return page(request, "filters", [_filter_out(request, source, f) for f in inst.filters])


async def create_filter(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    body = Obj(await read_json(request), "")
    raw = body.object("filter", required=True)
    body.object("update_mask")  # the Go client sends one on create; it changes nothing
    body.done()
    assert raw is not None
    given = shapes.parse_filters([raw.raw], "filter")[0]
    f, result = await run_in_threadpool(svc.add_filter, source, request.path_params["dest"],
                                        given)
    return written("filter", _filter_out(request, source, f), result)


async def get_filter(request: Request) -> Response:
    svc, source = await source_of(request)
    inst = await run_in_threadpool(svc.instance, source, request.path_params["dest"])
    fid = request.path_params["fid"]
    for f in inst.filters:
        if f.id == fid:
            return json_response(_filter_out(request, source, f))
    raise NotFound(f"filter {fid!r} not found on destination {inst.id!r}")


async def update_filter(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    body = Obj(await read_json(request), "")
    paths = shapes.update_mask(body, "filter", FIELDS)
    f = body.object("filter") or Obj({}, "filter")
    body.done()
    f.check(FIELDS, flags={"enabled"}, arrays={"actions"})  # in the mask or not, as destinations
    fields = {p: f.raw[p] if p in f.raw else _EMPTY[p] for p in paths}
    f.done("name", "id", "update_mask")
    new, result = await run_in_threadpool(svc.update_filter, source, request.path_params["dest"],
                                          request.path_params["fid"], fields)
    return written("filter", _filter_out(request, source, new), result)


async def delete_filter(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    p = request.path_params
    result = await run_in_threadpool(svc.delete_filter, source, p["dest"], p["fid"])
    return json_response({"bundle": result.to_dict()})


def routes(dest: str) -> list[Route]:
    """The filter routes under a destination path."""
    return [
        Route(dest + "/filters", list_filters),
        Route(dest + "/filters", create_filter, methods=["POST"]),
        Route(dest + "/filters/{fid}", get_filter),
        Route(dest + "/filters/{fid}", update_filter, methods=["PATCH"]),
        Route(dest + "/filters/{fid}", delete_filter, methods=["DELETE"]),
    ]
