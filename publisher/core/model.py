"""Plain data the rules, the compiler and the store pass between them (no I/O here)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

SourceType = Literal["web", "ios", "android", "server", "project"]
SOURCE_TYPES: tuple[str, ...] = ("web", "ios", "android", "server", "project")
MOBILE_SOURCE_TYPES = frozenset({"ios", "android"})

# The last segment of a resource name the Config API can address (filter and destination ids)
RESOURCE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

ConnectionMode = Literal["CLOUD", "DEVICE"]
CONNECTION_MODES: tuple[str, ...] = ("CLOUD", "DEVICE")


@dataclass(frozen=True, slots=True)
class Workspace:
    id: int
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class Source:
    id: int
    workspace_id: int
    slug: str
    name: str
    type: SourceType
    write_key: str
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Filter:
    """A destination filter in Config API shape (``if`` is FQL; ``actions`` as the API has them)."""

    id: str
    if_: str
    actions: tuple[dict[str, Any], ...]
    title: str
    description: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Instance:
    """One destination instance connected to a source.

    ``id`` is URL-safe and unique within its source (the last segment of the resource name
    ``workspaces/{ws}/sources/{src}/destinations/{id}``); ``catalog_slug`` names the catalog
    destination; ``display_name`` is unique within the source.
    """

    id: str
    catalog_slug: str
    display_name: str
    connection_mode: ConnectionMode
    enabled: bool
    settings: dict[str, Any] = field(default_factory=dict)
    filters: tuple[Filter, ...] = ()
    created_at: str = ""
    updated_at: str = ""
