"""Compile one source into the settings document real clients read (pure: no I/O).

The document is what ``GET /v1/projects/{writeKey}/settings`` returns; its shape follows
docs/CLIENT-CONTRACT.md (§2, §3, §6, §8). It is public — any visitor of a
page can read it — so the one hard rule here is that a cloud-mode instance's settings and any
setting the catalog marks ``secret`` never reach it. Choices made where the contract leaves
room:

* Every top-level key is always present as an object, array or boolean, never ``null``: the
  Kotlin client rejects a whole document with one ``null`` object (contract §6, §9).
* A device-mode entry carries the catalog defaults of every non-secret setting, overlaid with
  the instance's own non-secret settings — as Segment's documents do (contract §8.1), so a
  destination sees the same values whichever settings were left at their default. Settings
  the catalog no longer knows are dropped (a bundle only carries what the catalog vouches
  for); defaults of ``null`` are left out.
* ``versionSettings.version`` is the catalog's browser bundle version; a destination without
  one gets no ``version``, which analytics-next resolves to ``latest`` (contract §3.3).
  Mobile entries carry ``componentTypes`` ``["ios"]``/``["android"]`` and ``type`` the
  platform, without a version (the app bundles its own plugin).
* ``Segment.io.unbundledIntegrations`` lists the integrations keys of enabled cloud-mode
  destinations that could have run on the device: browser-capable (catalog ``device_web``) for
  web/project sources, mobile-capable (``device_mobile``) for ios/android — the Swift client
  reads the list the same way (contract §6). A destination with a device-mode and a cloud-mode
  instance appears both as an entry and here; ``maybeBundledConfigIds`` names the one bundled
  instance, so the cloud-mode one is still delivered server-side. Server sources have no
  device mode: their document is ``Segment.io`` only.
* ``consentSettings`` is ``{"allCategories": [], "hasUnmappedDestinations": true}``. With
  ``false``, analytics-consent-tools' ``segmentShouldBeDisabled`` disables Analytics.js for
  every visitor (no consented category is in an empty ``allCategories``); ``true`` is also the
  truth — no destination is mapped to a consent category here.
* Stored data that breaks an invariant the rules guarantee — two enabled device-mode
  instances of one destination, device mode where the destination or source has none, an
  unknown catalog destination — raises ``CompileError``: refuse to publish, never guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from publisher.core.catalog import Catalog, CatalogDestination
from publisher.core.model import Filter, Instance, Source
from publisher.errors import CompileError

SEGMENT_IO = "Segment.io"
# analytics-next reads nothing from it; every real document carries this value (contract §2.2).
SEGMENT_IO_VERSION = "4.4.7"
_PLATFORMS = {"web": "browser", "project": "browser", "ios": "ios", "android": "android"}


@dataclass(frozen=True)
class CompileOptions:
    api_host: str = "api.segment.io/v1"    # PUBLISHER_API_HOST
    metrics_sample_rate: float = 0.0

    def __post_init__(self) -> None:
        host = self.api_host
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
            raise ValueError(f"api_host must be a host and path such as 'api.segment.io/v1', "
                             f"got {host!r}")
        rate = self.metrics_sample_rate
        if (isinstance(rate, bool) or not isinstance(rate, int | float)
                or not math.isfinite(rate) or not 0 <= rate <= 1):
            raise ValueError(f"metrics_sample_rate must be a number from 0 to 1, got {rate!r}")


def compile_source(source: Source, instances: Sequence[Instance], catalog: Catalog,
                   options: CompileOptions = CompileOptions()) -> dict[str, Any]:
    """The settings document of ``source`` with its ``instances`` (disabled ones ignored).

    A fresh object: it shares no mutable value with the instances or the catalog.
    """
    document: dict[str, Any] = orjson.loads(compile_bytes(source, instances, catalog, options))
    return document


def compile_bytes(source: Source, instances: Sequence[Instance], catalog: Catalog,
                  options: CompileOptions = CompileOptions()) -> bytes:
    """``canonical_bytes(compile_source(...))``, serialised once: what a bundle stores."""
    return canonical_bytes(_document(source, instances, catalog, options))


def _document(source: Source, instances: Sequence[Instance], catalog: Catalog,
              options: CompileOptions) -> dict[str, Any]:
    # Shares values with the instances and the catalog rather than copying each device entry
    # (compile runs for every source of a `republish --all`): both callers serialise it at once.
    platform = _PLATFORMS.get(source.type)
    if platform is None and source.type != "server":
        raise CompileError(f"source {source.slug!r} has unknown type {source.type!r}",
                           code="invalid_source_type")
    enabled = [(i, _destination(source, i, catalog)) for i in instances if i.enabled]
    device = _device_entries(source, enabled)
    unbundled = sorted({
        dest.integrations_key for inst, dest in enabled
        if inst.connection_mode == "CLOUD"
        and (dest.device_web if platform == "browser" else
             dest.device_mobile if platform is not None else False)
    })
    segment_io: dict[str, Any] = {
        "apiKey": source.write_key,
        "apiHost": options.api_host,
        "addBundledMetadata": True,
        "unbundledIntegrations": unbundled,
        "maybeBundledConfigIds": {key: [inst.id] for key, (inst, _) in device.items()},
    }
    if platform == "browser":
        segment_io["versionSettings"] = {"version": SEGMENT_IO_VERSION,
                                         "componentTypes": ["browser"]}
    integrations: dict[str, Any] = {SEGMENT_IO: segment_io}
    for key, (inst, dest) in device.items():
        assert platform is not None  # _device_entries refuses device mode on server sources
        integrations[key] = _device_settings(inst, dest, platform)
    rules = _routing_rules(device)
    return {
        "integrations": integrations,
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "metrics": {"sampleRate": options.metrics_sample_rate},
        "middlewareSettings": {"routingRules": rules} if rules else {},
        "enabledMiddleware": {},
        "remotePlugins": [],
        "legacyVideoPluginsEnabled": False,
        "edgeFunction": {},
        "consentSettings": {"allCategories": [], "hasUnmappedDestinations": True},
    }


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """The one serialization of a document: compact JSON, keys sorted at every level."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def _where(source: Source, inst: Instance) -> str:
    return f"instance {inst.id!r} ({inst.display_name!r}) of source {source.slug!r}"


def _destination(source: Source, inst: Instance, catalog: Catalog) -> CatalogDestination:
    dest = catalog.find(inst.catalog_slug)
    if dest is None:
        raise CompileError(f"{_where(source, inst)} names unknown catalog destination "
                           f"{inst.catalog_slug!r}", code="unknown_destination")
    if inst.connection_mode not in ("CLOUD", "DEVICE"):
        raise CompileError(f"{_where(source, inst)} has connection mode "
                           f"{inst.connection_mode!r}, not CLOUD or DEVICE",
                           code="invalid_connection_mode")
    if not isinstance(inst.settings, dict):
        raise CompileError(f"{_where(source, inst)} has settings of type "
                           f"{type(inst.settings).__name__}, not an object",
                           code="settings_not_object")
    if inst.connection_mode == "DEVICE" and not dest.supports(source.type, "DEVICE"):
        raise CompileError(f"{_where(source, inst)}: {dest.name} has no device mode on a "
                           f"{source.type} source", code="mode_not_supported")
    return dest


def _device_entries(
    source: Source, enabled: list[tuple[Instance, CatalogDestination]]
) -> dict[str, tuple[Instance, CatalogDestination]]:
    """Enabled device-mode instances by integrations key; two of one destination is refused."""
    entries: dict[str, tuple[Instance, CatalogDestination]] = {}
    for inst, dest in enabled:
        if inst.connection_mode != "DEVICE":
            continue
        key = dest.integrations_key
        if key == SEGMENT_IO:
            raise CompileError(f"{_where(source, inst)}: {dest.name} would replace "
                               f"{SEGMENT_IO}", code="reserved_integrations_key")
        if key in entries:
            other = entries[key][0]
            raise CompileError(
                f"source {source.slug!r} has two enabled device-mode instances of {dest.name} "
                f"({other.id!r} and {inst.id!r}); a bundle carries at most one — disable or "
                "delete one before publishing", code="one_device_instance")
        entries[key] = (inst, dest)
    return entries


def _device_settings(inst: Instance, dest: CatalogDestination, platform: str) -> dict[str, Any]:
    entry = dest.public_defaults.copy()
    public = dest.public_settings
    for name, value in inst.settings.items():
        if name in public:
            entry[name] = value
    version_settings: dict[str, Any] = {"componentTypes": [platform]}
    if platform == "browser" and dest.bundle_version:
        version_settings["version"] = dest.bundle_version
    entry["versionSettings"] = version_settings
    entry["type"] = platform
    entry["bundlingStatus"] = "bundled"
    return entry


def _routing_rules(
    device: dict[str, tuple[Instance, CatalogDestination]]
) -> list[dict[str, Any]]:
    wanted: list[tuple[str, tuple[Filter, ...]]] = []
    for key in sorted(device):
        stored = device[key][0].filters
        filters = tuple(f for f in stored if f.enabled) if stored else ()
        if filters:
            wanted.append((key, filters))
    if not wanted:
        return []
    # Imported only when needed: a source without filters compiles without the FQL machinery.
    from publisher.core.filters import routing_rules

    rules: list[dict[str, Any]] = []
    for key, filters in wanted:
        rules.extend(routing_rules(key, filters))
    return rules
