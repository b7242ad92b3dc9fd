"""The declarative workspace file: ``settings-cdn-publisher apply FILE``.

A file states the complete desired configuration of the sources it lists (sources it does not
list are left alone)::

    {"workspace": {"slug": "acme", "name": "Acme"},
     "sources": [
       {"slug": "website", "name": "Website", "type": "web",
        "write_key": "optional: keep a key you already use",
        "destinations": [
          {"destination": "amplitude", "connection_mode": "DEVICE", "enabled": true,
           "display_name": "optional for the first instance", "settings": {"apiKey": "..."},
           "filters": [{"title": "...", "if": "...", "actions": [...]}]}]}]}

The same rules as every other write path apply. Applying is all-or-nothing — every source is
checked before the single transaction commits — and idempotent: instances are matched by
display name (filters by title), so applying the same file twice changes nothing, not even a
revision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from publisher.api.fields import check_unique_keys
from publisher.core.model import SOURCE_TYPES
from publisher.core.specs import InstanceSpec, check_slug, check_text, check_write_key
from publisher.errors import InvalidArgument, PayloadTooLarge, type_name
from publisher.publish import PublishResult
from publisher.service import Service
from publisher.staging import Staged

_TOP = {"workspace", "sources"}
_SOURCE = {"slug", "name", "type", "write_key", "destinations"}
_DEST = {"destination", "connection_mode", "enabled", "display_name", "settings", "filters",
         "id"}


@dataclass(frozen=True, slots=True)
class SourceDecl:
    slug: str
    name: str
    type: str
    write_key: str | None
    destinations: list[InstanceSpec]


@dataclass(frozen=True, slots=True)
class WorkspaceDecl:
    slug: str
    name: str
    sources: list[SourceDecl]


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object, got {type_name(value)}")
    return value


def _unknown(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise InvalidArgument(f"{where}: unknown field {extra[0]!r} (allowed: "
                              f"{', '.join(sorted(allowed))})", code="unknown_field")


def _str(obj: Mapping[str, Any], key: str, where: str, *, required: bool = True,
         default: str | None = None) -> str | None:
    value = obj.get(key, default)
    if value is None:
        if required:
            raise InvalidArgument(f"{where}.{key} is required", code="missing_field")
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key} must be a string, got {type_name(value)}",
                              code="wrong_type")
    return value


def parse(data: bytes) -> WorkspaceDecl:
    """Parse and structurally check a workspace file (no catalog or rule checks yet)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"workspace file is not valid JSON: {exc}",
                              code="malformed_json") from None
    check_unique_keys(data, "workspace file")
    top = _obj(doc, "workspace file")
    _unknown(top, _TOP, "workspace file")
    ws = _obj(top.get("workspace"), "workspace")
    _unknown(ws, {"slug", "name"}, "workspace")
    ws_slug = check_slug("workspace", _str(ws, "slug", "workspace"))
    ws_name = _str(ws, "name", "workspace", required=False) or ws_slug
    raw_sources = top.get("sources", [])
    if not isinstance(raw_sources, list):
        raise InvalidArgument("sources must be an array", code="wrong_type")
    sources: list[SourceDecl] = []
    seen: set[str] = set()
    for n, raw in enumerate(raw_sources):
        where = f"sources[{n}]"
        src = _obj(raw, where)
        _unknown(src, _SOURCE, where)
        slug = check_slug("source", _str(src, "slug", where))
        if slug in seen:
            raise InvalidArgument(f"{where}: source {slug!r} is listed twice",
                                  code="duplicate_source")
        seen.add(slug)
        write_key = _str(src, "write_key", where, required=False)
        if write_key is not None:
            check_write_key(write_key)
        raw_dests = src.get("destinations", [])
        if not isinstance(raw_dests, list):
            raise InvalidArgument(f"{where}.destinations must be an array", code="wrong_type")
        sources.append(SourceDecl(
            slug=slug, name=check_text(_str(src, "name", where, required=False) or slug,
                                       f"{where}.name"),
            type=_str(src, "type", where) or "", write_key=write_key,
            destinations=[_dest(d, f"{where}.destinations[{i}]") for i, d in enumerate(raw_dests)],
        ))
    return WorkspaceDecl(slug=ws_slug, name=ws_name, sources=sources)


def _dest(raw: Any, where: str) -> InstanceSpec:
    d = _obj(raw, where)
    _unknown(d, _DEST, where)
    enabled = d.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidArgument(f"{where}.enabled must be a boolean", code="wrong_type")
    settings = d.get("settings", {})
    if not isinstance(settings, dict):
        raise InvalidArgument(f"{where}.settings must be an object", code="wrong_type")
    flt = d.get("filters", [])
    if not isinstance(flt, list):
        raise InvalidArgument(f"{where}.filters must be an array", code="wrong_type")
    return InstanceSpec(
        destination=_str(d, "destination", where) or "",
        connection_mode=_str(d, "connection_mode", where) or "",
        enabled=enabled,
        display_name=_str(d, "display_name", where, required=False),
        settings=settings,
        filters=flt,
        id=_str(d, "id", where, required=False),
    )


def read(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise PayloadTooLarge(f"workspace file {str(path)!r} is {size} bytes; the limit "
                                  f"is {max_bytes} (PUBLISHER_MAX_FILE_BYTES)")
        # O_NONBLOCK: opening a named pipe nobody writes to would wait forever; once open,
        # reads block again (a pipe with a writer, as <(...) or /dev/stdin, is read to EOF)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidArgument(f"cannot read workspace file {str(path)!r}: {exc.strerror}",
                              code="unreadable_file") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"workspace file {str(path)!r} exceeds {max_bytes} bytes "
                              "(PUBLISHER_MAX_FILE_BYTES)")
    return data


def apply(service: Service, decl: WorkspaceDecl) -> list[tuple[str, PublishResult]]:
    """Apply a parsed file in one transaction, then publish the changed bundles to Redis."""
    store = service.store
    staged: list[Staged] = []
    with service._writing():
        ws = store.get_workspace(decl.slug) or store.create_workspace(decl.slug, decl.name)
        for src in decl.sources:
            source = store.get_source(ws.id, src.slug)
            if source is None:
                if src.write_key and store.get_source_by_write_key(src.write_key):
                    raise InvalidArgument(
                        f"source {src.slug!r}: write key is already used by another source",
                        code="write_key_taken")
                if src.type not in SOURCE_TYPES:
                    raise InvalidArgument(
                        f"source {src.slug!r}: type must be one of "
                        f"{', '.join(SOURCE_TYPES)}; got {src.type!r}",
                        code="invalid_source_type")
                source = store.create_source(ws.id, src.slug, src.name, src.type,
                                             write_key=src.write_key)
                created = True
            else:
                created = False
                if src.type != source.type:
                    raise InvalidArgument(
                        f"source {src.slug!r} is a {source.type} source; the file says "
                        f"{src.type!r} (a source's type cannot change)",
                        code="source_type_change")
                if src.write_key and src.write_key != source.write_key:
                    raise InvalidArgument(
                        f"source {src.slug!r}: its write key cannot change",
                        code="write_key_change")
            existing = store.list_instances(source.id)
            try:
                desired = service.build_instances(source, existing, src.destinations)
                if created and not desired:
                    staged.append(service._stage(source, []))
                else:
                    staged.append(service._commit(source, existing, desired))
            except InvalidArgument as exc:
                exc.located(f"source {src.slug!r}")
                raise
    # Every source checked and committed: publish each (a failure leaves it pending)
    return [(st.source.slug, service._publish(st)) for st in staged]
