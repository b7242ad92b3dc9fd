"""The destination rules: which instances one source may connect, checked in one place.

Every write path (Config API, webhook, declarative workspace file) hands the *whole desired set*
of a source's instances to ``check_source`` before anything is stored, so a refusal changes
nothing. The rules (docs/CONFIG-API.md, "Destination rules") follow the product documentation of
the control plane this replaces; each refusal is a ``RuleViolation`` with a stable ``code`` from
``RULES`` and a message naming the source, the destination and the rule. Settings are not
checked here (``setting_values.validate_settings``).

Order of checks, so that the most specific message wins:

1. per instance, in the order given: the catalog destination exists, the display name is not
   empty, the connection mode is valid, and the destination supports it on this source type;
2. per destination (disabled instances count), first the rules that forbid a second instance
   whatever its mode — the source (mobile, legacy project), Data Lakes, device-mode-only
   destinations, the catalog class — then one device-mode instance, then the cloud-mode limit;
3. display names unique on the source (renaming cannot fix a refused connection, so it is last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from publisher.core.catalog import Catalog, CatalogDestination
from publisher.core.model import (
    CONNECTION_MODES,
    MOBILE_SOURCE_TYPES,
    SOURCE_TYPES,
    Instance,
    Source,
)
from publisher.errors import InvalidArgument, RuleViolation

RULES: dict[str, str] = {
    "invalid_source_type": "a source's type is one of web, ios, android, server, project",
    "display_name_required": "an instance needs a non-empty display name; only the first "
                             "instance of a destination defaults to the catalog name",
    "duplicate_display_name": "display names are unique on a source (case-insensitive, "
                              "ignoring surrounding spaces)",
    "invalid_connection_mode": "the connection mode is CLOUD or DEVICE",
    "no_device_mode_on_server": "server sources have no device mode",
    "mode_not_supported": "the destination supports the connection mode for the source type "
                          "(web/project: web modes; ios/android: mobile modes; server: cloud)",
    "single_instance_source": "mobile (ios, android) and legacy project sources connect at "
                              "most one instance of a destination",
    "data_lakes_single_instance": "Data Lakes: one instance per source",
    "device_only_single_instance": "destinations that work in device mode only: one instance "
                                   "per source",
    "multi_instance_unsupported": "only destinations of catalog class cloud_and_one_device or "
                                  "cloud_only may have more than one instance on a source",
    "one_device_instance": "at most one device-mode instance of a destination per source",
    "cloud_instance_limit": "at most max_cloud_instances (default 10) cloud-mode instances of "
                            "a destination per source",
}

MULTI_INSTANCE_CLASSES = frozenset({"cloud_and_one_device", "cloud_only"})


@dataclass(frozen=True)
class RuleLimits:
    max_cloud_instances: int = 10  # PUBLISHER_MAX_CLOUD_INSTANCES

    def __post_init__(self) -> None:
        n = self.max_cloud_instances
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"PUBLISHER_MAX_CLOUD_INSTANCES must be a whole number >= 1, got {n!r}")


def _clean(name: object) -> str:
    return name.strip() if isinstance(name, str) else ""


def _key(name: str) -> str:
    return name.strip().casefold()


def default_display_name(dest: CatalogDestination, existing: Sequence[Instance],
                         given: str | None) -> str:
    """The display name of a new instance: the given one, else the catalog name for the first.

    ``existing`` is the source's current instances; a later instance of the same destination
    must be named, because the catalog name is already the first one's.
    """
    if given is not None and not isinstance(given, str):
        raise RuleViolation(f"display name of a new {dest.name} instance must be a string, "
                            f"got {type(given).__name__}", code="display_name_required")
    if _clean(given):
        return _clean(given)
    if given is not None:
        raise RuleViolation(f"display name of a new {dest.name} instance must not be empty: "
                            f"{RULES['display_name_required']}", code="display_name_required")
    if not any(inst.catalog_slug == dest.slug for inst in existing):
        return dest.name
    raise RuleViolation(
        f"a display name is required: the source already has an instance of {dest.name}, "
        f"so a second one cannot default to {dest.name!r}", code="display_name_required")


class _Where:
    """Formats the 'which source, which destination' part of every message."""

    def __init__(self, source: Source) -> None:
        self.source = f"source {source.slug!r} ({source.name}, {source.type})"

    def refuse(self, inst: Instance, dest: CatalogDestination | None, code: str,
               detail: str) -> RuleViolation:
        what = _clean(inst.display_name) or f"instance {inst.id!r}"
        named = f"{what!r} ({dest.name}, {dest.slug})" if dest else f"{what!r}"
        return RuleViolation(f"{self.source}: destination {named}: {detail} "
                             f"[{code}: {RULES[code]}]", code=code)


def _check_instance(where: _Where, source: Source, inst: Instance,
                    catalog: Catalog) -> CatalogDestination:
    try:
        dest = catalog.get(inst.catalog_slug)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where.source}: instance {inst.id!r}: {exc.message}",
                              code=exc.code) from exc
    if not _clean(inst.display_name):
        raise where.refuse(inst, dest, "display_name_required", "the display name is empty")
    mode = inst.connection_mode
    if mode not in CONNECTION_MODES:
        raise where.refuse(inst, dest, "invalid_connection_mode",
                           f"unknown connection mode {mode!r}")
    if mode == "DEVICE" and source.type == "server":
        raise where.refuse(inst, dest, "no_device_mode_on_server",
                           "a server source cannot connect a destination in device mode")
    if not dest.supports(source.type, mode):
        raise where.refuse(inst, dest, "mode_not_supported",
                           f"{dest.name} does not support {mode} mode on a source of type "
                           f"{source.type}")
    return dest


def _check_destination(where: _Where, source: Source, dest: CatalogDestination,
                       insts: Sequence[Instance], limits: RuleLimits) -> None:
    if len(insts) > 1:
        second = insts[1]
        also = f"{len(insts)} instances given (first: {_clean(insts[0].display_name)!r})"
        if source.type in MOBILE_SOURCE_TYPES or source.type == "project":
            raise where.refuse(second, dest, "single_instance_source",
                               f"a {source.type} source cannot connect multiple instances "
                               f"of a destination; {also}")
        if dest.is_data_lakes:
            raise where.refuse(second, dest, "data_lakes_single_instance", also)
        if dest.multi_instance == "single":
            raise where.refuse(second, dest, "device_only_single_instance", also)
        if dest.multi_instance not in MULTI_INSTANCE_CLASSES:
            raise where.refuse(second, dest, "multi_instance_unsupported",
                               f"catalog class {dest.multi_instance!r}; {also}")
    device = [i for i in insts if i.connection_mode == "DEVICE"]
    if len(device) > 1:
        raise where.refuse(device[1], dest, "one_device_instance",
                           f"{len(device)} device-mode instances given "
                           f"(first: {_clean(device[0].display_name)!r})")
    cloud = [i for i in insts if i.connection_mode == "CLOUD"]
    if len(cloud) > limits.max_cloud_instances:
        raise where.refuse(cloud[limits.max_cloud_instances], dest, "cloud_instance_limit",
                           f"{len(cloud)} cloud-mode instances given, the limit is "
                           f"{limits.max_cloud_instances}")


def check_source(source: Source, instances: Sequence[Instance], catalog: Catalog,
                 limits: RuleLimits = RuleLimits()) -> None:
    """Refuse the desired set of a source's instances if any rule is broken (first one wins).

    Disabled instances count: enabling one later must not be able to break a rule.
    """
    where = _Where(source)
    if source.type not in SOURCE_TYPES:
        raise RuleViolation(f"{where.source}: unknown source type {source.type!r} "
                            f"[invalid_source_type: {RULES['invalid_source_type']}]",
                            code="invalid_source_type")
    by_dest: dict[str, tuple[CatalogDestination, list[Instance]]] = {}
    for inst in instances:
        dest = _check_instance(where, source, inst, catalog)
        by_dest.setdefault(dest.slug, (dest, []))[1].append(inst)
    for dest, insts in by_dest.values():
        _check_destination(where, source, dest, insts, limits)
    seen: dict[str, int] = {}
    for n, inst in enumerate(instances):
        if seen.setdefault(_key(inst.display_name), n) != n:
            first = instances[seen[_key(inst.display_name)]]
            raise where.refuse(inst, catalog.get(inst.catalog_slug), "duplicate_display_name",
                               f"the display name is already used by instance {first.id!r} "
                               f"({catalog.get(first.catalog_slug).name})")
