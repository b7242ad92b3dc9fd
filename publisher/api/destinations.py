"""Config API destination instances: list, create (or copy), get, PATCH (``update_mask``),
delete.

Apart from publisher/api/app.py as the filters are (publisher/api/filters.py): a destination's
request shapes — the mask, ``config`` entries, ``copy_settings_from`` — are the API's largest.
A field outside the mask is type-checked and left alone; ``copy_settings_from`` resolves only
within the caller's workspace.
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
from publisher.errors import InvalidArgument, NotFound
from publisher.service import Service

_DEST_FIELDS = ("display_name", "enabled", "connection_mode", "config")
_ECHOED = ("name", "id", "slug", "catalog_name", "filter_count", "parent", "create_time",
           "update_time", "copy_settings_from", "filters", "update_mask")


def _dest(request: Request, svc: Service, source: Source, inst: Any) -> dict[str, Any]:
    """A destination as the caller may see it: a read token gets the settings the catalog
    marks secret masked (a write token, which may replace them, their values)."""
    return shapes.destination_dict(request.path_params["ws"], source.slug, inst, svc.catalog,
                                   mask_secrets=request.state.principal.scope != "write")


async def list_destinations(request: Request) -> Response:
    svc, source = await source_of(request)
    insts = await run_in_threadpool(svc.instances, source)
    return page(request, "destinations", [_dest(request, svc, source, i) for i in insts])


async def create_destination(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    ws = request.path_params["ws"]
    body = Obj(await read_json(request), "")
    raw = body.object("destination", required=True)
    body.done()
    assert raw is not None
    spec, copy_ref = shapes.parse_destination(
        raw.raw, "destination", f"{shapes.source_name(ws, source.slug)}/destinations",
        webhook=False)
    copy_from = None
    if copy_ref is not None:
        copy_from = await run_in_threadpool(_resolve_instance, svc, ws, copy_ref)
    inst, result = await run_in_threadpool(svc.add_instance, source, spec, copy_from)
    return written("destination", _dest(request, svc, source, inst), result)


def _resolve_instance(svc: Service, ws: str, name: str) -> Any:
    """An instance by resource name, only within the caller's workspace (404 otherwise)."""
    parts = name.split("/")
    if len(parts) != 6 or parts[0] != "workspaces" or parts[2] != "sources" \
            or parts[4] != "destinations":
        raise InvalidArgument(f"copy_settings_from {name[:200]!r} must be "
                              "workspaces/<ws>/sources/<src>/destinations/<id>",
                              code="wrong_name")
    if parts[1] != ws:
        raise NotFound(f"destination {name[:200]!r} not found")
    return svc.instance(svc.source(ws, parts[3]), parts[5])


async def get_destination(request: Request) -> Response:
    svc, source = await source_of(request)
    inst = await run_in_threadpool(svc.instance, source, request.path_params["dest"])
    return json_response(_dest(request, svc, source, inst))


async def update_destination(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    body = Obj(await read_json(request), "")
    paths = shapes.update_mask(body, "destination", _DEST_FIELDS)
    d = body.object("destination") or Obj({}, "destination")
    body.done()
    fields: dict[str, Any] = {}
    patch: dict[str, Any] | None = None
    for path in paths:
        if path == "enabled":
            fields["enabled"] = bool(d.flag("enabled"))
        elif path == "config":
            entries = d.array("config")
            patch = (shapes.parse_config(entries, "destination.config", allow_null=True)
                     if entries is not None else None)
            if entries is None:
                fields["settings"] = {}
        else:
            fields[path] = d.text(path) or ""
    d.check(_DEST_FIELDS, flags={"enabled"}, arrays={"config"})  # outside the mask: left alone
    d.done(*_ECHOED)
    inst, result = await run_in_threadpool(svc.update_instance, source,
                                           request.path_params["dest"], fields, patch)
    return written("destination", _dest(request, svc, source, inst), result)


async def delete_destination(request: Request) -> Response:
    svc, source = await source_of(request, write=True)
    result = await run_in_threadpool(svc.delete_instance, source, request.path_params["dest"])
    return json_response({"bundle": result.to_dict()})


def routes(src: str, dest: str) -> list[Route]:
    """The destination routes under a source path ``src`` (``dest``: one destination's)."""
    return [
        Route(src + "/destinations", list_destinations),
        Route(src + "/destinations", create_destination, methods=["POST"]),
        Route(dest, get_destination),
        Route(dest, update_destination, methods=["PATCH"]),
        Route(dest, delete_destination, methods=["DELETE"]),
    ]
