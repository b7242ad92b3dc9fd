"""Config API (v1beta) JSON shapes: strict request parsing and resource rendering — pure.

Resource names follow the Config API: ``workspaces/{ws}/sources/{src}/destinations/{id}``
and ``…/destinations/{id}/filters/{filter_id}``. Request bodies are checked field by field
(``publisher.api.fields.Obj``): a wrong type or an unknown field is an ``InvalidArgument``
naming the field's path, so bad input is a 400 that says what to fix, never a crash.
Read-only fields a GET returns (``parent``, ``create_time``, ``update_time``) may be echoed
back and are ignored.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from publisher.api.fields import Obj, T
from publisher.core.catalog import Catalog
from publisher.core.model import RESOURCE_ID_RE, Filter, Instance, Source
from publisher.core.specs import InstanceSpec, filter_dict
from publisher.errors import InvalidArgument, type_name

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 200
_ID_RE = RESOURCE_ID_RE
_READ_ONLY = frozenset({"parent", "create_time", "update_time"})


# -- names ---------------------------------------------------------------------------------

def source_name(ws: str, src: str) -> str:
    return f"workspaces/{ws}/sources/{src}"


def destination_name(ws: str, src: str, inst_id: str) -> str:
    return f"{source_name(ws, src)}/destinations/{inst_id}"


def last_segment(name: str, prefix: str, where: str) -> str:
    """``name``'s last segment, after checking it is ``prefix/<segment>`` (or bare)."""
    if "/" not in name:
        segment = name
    elif name.startswith(prefix + "/"):
        segment = name[len(prefix) + 1:]
    else:
        raise InvalidArgument(f"{where} {name!r} must be {prefix}/<id>", code="wrong_name")
    if not _ID_RE.match(segment):
        raise InvalidArgument(f"{where} {name!r}: the id must be 1-100 letters, digits, "
                              "'_' or '-'", code="wrong_name")
    return segment


# -- rendering -----------------------------------------------------------------------------

def workspace_dict(slug: str, name: str) -> dict[str, Any]:
    return {"name": f"workspaces/{slug}", "slug": slug, "display_name": name}


def source_dict(ws: str, source: Source) -> dict[str, Any]:
    return {"name": source_name(ws, source.slug), "parent": f"workspaces/{ws}",
            "slug": source.slug, "display_name": source.name, "type": source.type,
            "write_keys": [source.write_key], "revision": source.revision}


MASK = "\u2022" * 8


def masked(value: Any) -> str:
    """A secret setting's value as a read token sees it: bullets, and the last four
    characters of a string of 12 or more (as the Public API shows a secret: ``••••dada``)."""
    return MASK + value[-4:] if isinstance(value, str) and len(value) >= 12 else MASK


def destination_dict(ws: str, src: str, inst: Instance, catalog: Catalog, *,
                     mask_secrets: bool = False) -> dict[str, Any]:
    name = destination_name(ws, src, inst.id)
    dest = catalog.find(inst.catalog_slug)
    specs = dest.settings if dest else {}
    secret = dest.secret_settings if dest and mask_secrets else frozenset()
    config = [{"name": f"{name}/config/{key}",
               "display_name": specs[key].label if key in specs else key,
               "value": masked(value) if key in secret else value,
               "type": specs[key].type if key in specs else "mixed"}
              for key, value in sorted(inst.settings.items())]
    return {"name": name, "parent": source_name(ws, src), "id": inst.id,
            "slug": inst.catalog_slug, "catalog_name": f"catalog/destinations/{inst.catalog_slug}",
            "display_name": inst.display_name, "connection_mode": inst.connection_mode,
            "enabled": inst.enabled, "config": config, "filter_count": len(inst.filters),
            "create_time": inst.created_at, "update_time": inst.updated_at}


def filter_resource(ws: str, src: str, inst_id: str, f: Filter) -> dict[str, Any]:
    out = filter_dict(f)
    out["name"] = f"{destination_name(ws, src, inst_id)}/filters/{f.id}"
    return out


# -- parsing -------------------------------------------------------------------------------

def parse_config(entries: Sequence[Any], where: str, *, allow_null: bool) -> dict[str, Any]:
    """Config entries ``[{"name": ".../config/<key>" | "<key>", "value": ...}]`` -> settings."""
    settings: dict[str, Any] = {}
    for n, raw in enumerate(entries):
        entry = Obj(raw, f"{where}[{n}]")
        name = entry.text("name", required=True) or ""
        key = name.rsplit("/config/", 1)[-1]
        if not key or "/" in key:
            raise InvalidArgument(f"{entry.path('name')} {name!r} must be a setting name or "
                                  "<destination name>/config/<setting>", code="wrong_name")
        if "value" not in entry.raw:
            raise InvalidArgument(f"{entry.path('value')} is required", code="missing_field")
        entry.seen.add("value")
        if entry.raw["value"] is None and not allow_null:
            raise InvalidArgument(f"{entry.path('value')} must not be null", code="wrong_type")
        entry.text("type")
        entry.text("display_name")
        entry.done()
        if key in settings:
            raise InvalidArgument(f"{where}: setting {key!r} is given twice", code="duplicate")
        settings[key] = entry.raw["value"]
    return settings


def parse_filters(raws: Sequence[Any], where: str) -> list[Mapping[str, Any]]:
    """Filters as given (``filters.validate_filter`` checks them); ids must be URL-safe."""
    out: list[Mapping[str, Any]] = []
    for n, raw in enumerate(raws):
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{where}[{n}] must be an object, got {type_name(raw)}",
                                  code="wrong_type")
        fid = raw.get("id")
        if fid is not None and (not isinstance(fid, str) or not _ID_RE.match(fid)):
            raise InvalidArgument(f"{where}[{n}].id must be 1-100 letters, digits, '_' or '-'",
                                  code="wrong_type")
        out.append({k: v for k, v in raw.items() if k != "name"})
    return out


def parse_destination(raw: Any, where: str, dest_prefix: str, *,
                      webhook: bool) -> tuple[InstanceSpec, str | None]:
    """A destination to create (API) or desired (webhook) -> ``(spec, copy_settings_from)``.

    ``slug`` names the catalog destination. On create, a Config-API-style ``name``
    (``…/destinations/<catalog slug>``) may name it instead; in a webhook, ``name`` or ``id``
    is the instance's own id (so a GET's output can be sent back as the desired state).
    """
    d = Obj(raw, where)
    slug = d.text("slug")
    name = d.text("name")
    inst_id = d.text("id") if webhook else None
    if name is not None:
        segment = last_segment(name, dest_prefix, d.path("name"))
        if webhook:
            inst_id = segment
        elif slug is None:
            slug = segment
    if not slug:
        raise InvalidArgument(f"{d.path('slug')} (the catalog destination) is required",
                              code="missing_field")
    if inst_id is not None and not _ID_RE.match(inst_id):
        raise InvalidArgument(f"{d.path('id')} must be 1-100 letters, digits, '_' or '-'",
                              code="wrong_name")
    mode = d.text("connection_mode", required=True) or ""
    enabled = d.flag("enabled")
    display = d.text("display_name")
    config = d.array("config") or []
    filters = d.array("filters")
    copy_from = None if webhook else d.text("copy_settings_from")
    d.done(*_READ_ONLY, "catalog_name", "filter_count")
    spec = InstanceSpec(
        destination=slug, connection_mode=mode, enabled=bool(enabled), display_name=display,
        settings=parse_config(config, d.path("config"), allow_null=False),
        filters=parse_filters(filters or [], d.path("filters")) if (filters or webhook)
        else None,
        id=inst_id)
    return spec, copy_from


def update_mask(body: Obj, resource: str, allowed: Sequence[str]) -> list[str]:
    """``update_mask.paths`` (top level, or inside the resource as api-design.md shows)."""
    mask = body.object("update_mask")
    inner = body.raw.get(resource)
    if mask is None and isinstance(inner, dict) and "update_mask" in inner:
        mask = Obj(inner["update_mask"], f"{resource}.update_mask")
    if mask is None:
        raise InvalidArgument(f"update_mask.paths is required (any of "
                              f"{', '.join(f'{resource}.{p}' for p in allowed)})",
                              code="missing_field")
    paths = mask.array("paths", required=True) or []
    mask.done()
    out = []
    for n, path in enumerate(paths):
        if not isinstance(path, str):
            raise InvalidArgument(f"{mask.path('paths')}[{n}] must be a string, got "
                                  f"{type_name(path)}", code="wrong_type")
        bare = path.removeprefix(f"{resource}.")
        if bare not in allowed:
            raise InvalidArgument(f"{mask.path('paths')}[{n}]: cannot update {path!r} (allowed: "
                                  f"{', '.join(f'{resource}.{p}' for p in allowed)})",
                                  code="bad_update_mask")
        out.append(bare)
    return out


def paginate(items: Sequence[T], page_size: str | None,
             page_token: str | None) -> tuple[Sequence[T], str]:
    """One page of ``items`` and the ``next_page_token`` ("" at the end)."""
    size = DEFAULT_PAGE_SIZE
    if page_size is not None:
        # isascii: isdigit() also holds for '²' and '５', which int() refuses or reads as 5
        if not (page_size.isascii() and page_size.isdigit()
                and 1 <= int(page_size) <= MAX_PAGE_SIZE):
            raise InvalidArgument(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}, "
                                  f"got {page_size[:40]!r}", code="bad_page_size")
        size = int(page_size)
    start = 0
    if page_token:
        try:
            decoded = base64.urlsafe_b64decode(page_token.encode("ascii")).decode("ascii")
            start = int(decoded.removeprefix("o:"))
            if not decoded.startswith("o:") or start < 0:
                raise ValueError(decoded)
        except (ValueError, UnicodeError):
            raise InvalidArgument(f"page_token {page_token[:60]!r} is not a token this API "
                                  "returned", code="bad_page_token") from None
    page = items[start:start + size]
    end = start + size
    token = base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if end < len(items) else ""
    return page, token
