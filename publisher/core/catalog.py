"""The destination catalog: what each destination supports, its settings' specs included.

The data ships inside the package (``publisher/core/data/destinations.json``): for each
destination its modes, the source types it supports, its integrations key and its settings'
specs (type, required, secret). Lookups accept a catalog slug (``amplitude``), a display name
(``Amplitude``) or the device-mode integrations key / a previous name (``Appboy`` for Braze).
A user's values for those settings are checked in publisher/core/setting_values.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from publisher.errors import InvalidArgument

DATA_PATH = Path(__file__).parent / "data" / "destinations.json"

@dataclass(frozen=True, slots=True)
class SettingSpec:
    name: str
    type: str
    required: bool
    default: Any
    label: str
    secret: bool


@dataclass(frozen=True, slots=True)
class CatalogDestination:
    slug: str
    name: str
    id: str | None
    integrations_key: str
    previous_names: tuple[str, ...]
    categories: tuple[str, ...]
    hidden: bool
    kind: str  # "classic" | "actions"
    multi_instance: str  # cloud_and_one_device | cloud_only | single | unsupported
    device_web: bool
    device_mobile: bool
    cloud_web: bool
    cloud_mobile: bool
    cloud_server: bool
    bundle_version: str | None  # classic analytics.js bundle version (device-mode web)
    bundle_path: str | None
    settings: Mapping[str, SettingSpec]
    # Derived from ``settings`` once, because the compiler reads them for every device-mode
    # entry of every source: the names a bundle may carry (the non-secret ones) and their
    # catalog defaults (``null`` ones left out). Read-only: the values are the catalog's own.
    public_settings: frozenset[str] = field(init=False, repr=False, compare=False)
    public_defaults: MappingProxyType[str, Any] = field(init=False, repr=False,
                                                       compare=False)

    def __post_init__(self) -> None:
        public = {n: s for n, s in self.settings.items() if not s.secret}
        object.__setattr__(self, "public_settings", frozenset(public))
        object.__setattr__(self, "public_defaults", MappingProxyType(
            {n: s.default for n, s in public.items() if s.default is not None}))

    @property
    def is_data_lakes(self) -> bool:
        return self.slug == "data-lakes"

    @property
    def secret_settings(self) -> frozenset[str]:
        return frozenset(n for n, s in self.settings.items() if s.secret)

    def supports(self, source_type: str, connection_mode: str) -> bool:
        """Whether this destination can connect to a source of this type in this mode.

        web and the legacy project source read web modes; ios/android read mobile modes;
        a server source has no device mode at all.
        """
        if connection_mode == "DEVICE":
            if source_type in ("web", "project"):
                return self.device_web
            if source_type in ("ios", "android"):
                return self.device_mobile
            return False
        if source_type in ("web", "project"):
            return self.cloud_web
        if source_type in ("ios", "android"):
            return self.cloud_mobile
        return self.cloud_server

    def to_dict(self) -> dict[str, Any]:
        """The public catalog entry (Config API shape, settings without secrets' values)."""
        return {
            "name": f"catalog/destinations/{self.slug}",
            "slug": self.slug,
            "display_name": self.name,
            "integrations_key": self.integrations_key,
            "previous_names": list(self.previous_names),
            "categories": list(self.categories),
            "multi_instance": self.multi_instance,
            "modes": {
                "device": {"web": self.device_web, "mobile": self.device_mobile},
                "cloud": {"web": self.cloud_web, "mobile": self.cloud_mobile,
                          "server": self.cloud_server},
            },
            "browser_bundle_version": self.bundle_version,
            "settings": [
                {"name": s.name, "type": s.type, "required": s.required,
                 "default": s.default, "label": s.label, "secret": s.secret}
                for s in self.settings.values()
            ],
        }


def _destination(raw: Mapping[str, Any]) -> CatalogDestination:
    modes = raw.get("modes") or {}
    device, cloud = modes.get("device") or {}, modes.get("cloud") or {}
    bundle = raw.get("browser_bundle") or None
    settings = {
        s["name"]: SettingSpec(
            name=s["name"], type=str(s.get("type") or "mixed"), required=bool(s.get("required")),
            default=s.get("default"), label=str(s.get("label") or s["name"]),
            secret=bool(s.get("secret")),
        )
        for s in raw.get("settings") or ()
    }
    return CatalogDestination(
        slug=raw["slug"], name=raw["name"], id=raw.get("id"),
        integrations_key=raw.get("integrations_key") or raw["name"],
        previous_names=tuple(raw.get("previous_names") or ()),
        categories=tuple(raw.get("categories") or ()), hidden=bool(raw.get("hidden")),
        kind=raw.get("kind") or "classic",
        multi_instance=raw.get("multi_instance") or "unsupported",
        device_web=bool(device.get("web")), device_mobile=bool(device.get("mobile")),
        cloud_web=bool(cloud.get("web")), cloud_mobile=bool(cloud.get("mobile")),
        cloud_server=bool(cloud.get("server")),
        bundle_version=bundle["version"] if bundle else None,
        bundle_path=bundle["path"] if bundle else None,
        settings=settings,
    )


class Catalog:
    """All catalog destinations, indexed by slug and by every name they are known by."""

    def __init__(self, destinations: Iterable[CatalogDestination]) -> None:
        self._by_slug: dict[str, CatalogDestination] = {}
        self._by_name: dict[str, CatalogDestination] = {}
        for d in destinations:
            self._by_slug[d.slug] = d
        # Names: the display name and integrations key first, previous names last, so an
        # old name never shadows a current one.
        for d in self._by_slug.values():
            for n in (d.name, d.integrations_key):
                self._by_name.setdefault(n.casefold(), d)
        for d in self._by_slug.values():
            for n in d.previous_names:
                self._by_name.setdefault(n.casefold(), d)

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        data = orjson.loads(path.read_bytes())
        return cls(_destination(raw) for raw in data["destinations"])

    def __len__(self) -> int:
        return len(self._by_slug)

    def __iter__(self) -> Any:
        return iter(self._by_slug.values())

    def find(self, ref: str) -> CatalogDestination | None:
        if not isinstance(ref, str):
            return None
        return self._by_slug.get(ref) or self._by_name.get(ref.casefold())

    def get(self, ref: str) -> CatalogDestination:
        """The destination for a slug or a name; ``InvalidArgument`` naming it otherwise."""
        found = self.find(ref)
        if found is None:
            raise InvalidArgument(f"unknown catalog destination {ref!r}",
                                  code="unknown_destination")
        return found

    def search(self, text: str = "") -> list[CatalogDestination]:
        needle = text.casefold().strip()
        return [
            d for d in self._by_slug.values()
            if not needle or needle in d.name.casefold() or needle in d.slug
            or any(needle in n.casefold() for n in d.previous_names)
        ]


@cache
def default_catalog() -> Catalog:
    """The catalog shipped with the package (loaded once per process)."""
    return Catalog.from_file(DATA_PATH)
