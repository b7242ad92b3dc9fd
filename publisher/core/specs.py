"""What a write path states, checked and turned into the model's objects.

The Config API, the webhook and the workspace file each state a change in their own terms:
slugs and write keys a caller chose, an ``InstanceSpec`` per desired instance (a catalog
reference, not yet validated) and filters in Config API shape. This module checks the names
and builds ``Instance`` and ``Filter`` values from the rest, matched to the existing ones by id
or name so that stating a set again keeps their ids; ``filter_dict`` is the way back. Nothing
here reads or writes SQLite or Redis: ``Service`` checks the built set as a whole before it is
stored (publisher/staging.py).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge import keyspace
from publisher.core import filters as filters_mod
from publisher.core.catalog import Catalog
from publisher.core.model import CONNECTION_MODES, RESOURCE_ID_RE, Filter, Instance, Source
from publisher.core.rules import default_display_name
from publisher.errors import InvalidArgument

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


# C0 controls and DEL: a name or title is one line of text; a description may also hold
# tabs and line breaks. (JSON lets a string carry any of them, NUL included.)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(value: str, what: str, *, multiline: bool = False) -> str:
    """``value`` unless it holds a control character (a 400 naming ``what`` and where)."""
    found = (_CONTROL_IN_TEXT_RE if multiline else _CONTROL_RE).search(value)
    if found:
        raise InvalidArgument(
            f"{what} must not contain control characters, got U+{ord(found.group()):04X} at "
            f"position {found.start()}", code="invalid_text")
    return value


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


def filter_dict(f: Filter) -> dict[str, Any]:
    """A filter in Config API shape (without its resource name)."""
    return {"id": f.id, "if": f.if_, "actions": [dict(a) for a in f.actions], "title": f.title,
            "description": f.description, "enabled": f.enabled}


def slugify(text: str) -> str:
    """A URL-safe lower-case slug of a name: "Google Analytics 4" -> "google-analytics-4"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:64].rstrip("-") or "destination"


def new_instance_id(display_name: str, taken: Collection[str]) -> str:
    """A URL-safe id for a new instance, from its display name, not in ``taken``."""
    base = slugify(display_name)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


class SpecBuilder:
    """Builds a source's desired instances and filters; a mixin of ``Service`` that needs
    only the catalog."""

    catalog: Catalog

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
