"""The Config API's single-resource writes: add, change or remove one instance or filter.

Each is a ``mutate``: the whole desired set still goes through the same validation, rules and
transaction; these only say how one resource changes within it. So an edit is refused for
what it does to the whole set (a filter title already taken, a rule the source's other
destinations then break) exactly as a declarative write is.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from publisher.core.model import CONNECTION_MODES, Filter, Instance, Source
from publisher.core.rules import default_display_name
from publisher.core.specs import InstanceSpec, SpecBuilder, filter_dict, new_instance_id
from publisher.errors import AlreadyExists, InvalidArgument, NotFound
from publisher.publish import PublishResult
from publisher.staging import Staging


class ConfigEdits(SpecBuilder, Staging):
    """``Service``'s single-resource writes (a mixin)."""

    def add_instance(self, source: Source, spec: InstanceSpec,
                     copy_from: Instance | None = None) -> tuple[Instance, PublishResult]:
        """Connect a new instance; ``copy_from`` (same catalog destination) lends its settings."""
        made: list[str] = []

        def change(existing: list[Instance]) -> list[Instance]:
            dest = self.catalog.get(spec.destination)
            if spec.connection_mode not in CONNECTION_MODES:
                raise InvalidArgument(
                    f"connection_mode must be CLOUD or DEVICE, got {spec.connection_mode!r}",
                    code="invalid_connection_mode")
            name = default_display_name(dest, existing, spec.display_name)
            self._check_name_free(existing, name, None)
            settings = dict(spec.settings)
            if copy_from is not None:
                if copy_from.catalog_slug != dest.slug:
                    raise InvalidArgument(
                        f"copy_settings_from: instance {copy_from.id!r} is a "
                        f"{copy_from.catalog_slug} instance, not {dest.slug}; settings can only "
                        "be copied between instances of the same catalog destination",
                        code="copy_settings_mismatch")
                settings = {**copy_from.settings, **settings}
            inst_id = new_instance_id(name, {i.id for i in existing})
            flt = self.build_filters((), spec.filters or [])
            made.append(inst_id)
            return [*existing, Instance(
                id=inst_id, catalog_slug=dest.slug, display_name=name,
                connection_mode=spec.connection_mode,  # type: ignore[arg-type]
                enabled=spec.enabled, settings=settings, filters=flt)]

        with self._writing():
            staged = self._mutate(source, change)
            made_instance = self.instance(source, made[0])
        return made_instance, self._publish(staged)

    def update_instance(self, source: Source, instance_id: str, fields: Mapping[str, Any],
                        settings_patch: Mapping[str, Any] | None = None
                        ) -> tuple[Instance, PublishResult]:
        """Change the given fields (display_name, enabled, connection_mode, settings).

        ``settings_patch`` sets the settings it names on top of the current ones (``None``
        removes one), as a Config API ``config`` update does.
        """

        def change(existing: list[Instance]) -> list[Instance]:
            out = []
            found = False
            for inst in existing:
                if inst.id != instance_id:
                    out.append(inst)
                    continue
                found = True
                new = replace(inst, **{k: v for k, v in fields.items()
                                       if k in ("display_name", "enabled", "settings")})
                if settings_patch is not None:
                    merged = {**new.settings, **settings_patch}
                    new = replace(new, settings={k: v for k, v in merged.items()
                                                 if v is not None})
                if "connection_mode" in fields:
                    mode = fields["connection_mode"]
                    if mode not in CONNECTION_MODES:
                        raise InvalidArgument(
                            f"connection_mode must be CLOUD or DEVICE, got {mode!r}",
                            code="invalid_connection_mode")
                    new = replace(new, connection_mode=mode)
                if "display_name" in fields:
                    self._check_name_free(existing, new.display_name, inst.id)
                out.append(new)
            if not found:
                raise NotFound(f"destination {instance_id!r} not found on source "
                               f"{source.slug!r}")
            return out

        with self._writing():
            staged = self._mutate(source, change)
            changed_instance = self.instance(source, instance_id)
        return changed_instance, self._publish(staged)

    def delete_instance(self, source: Source, instance_id: str) -> PublishResult:
        def change(existing: list[Instance]) -> list[Instance]:
            kept = [i for i in existing if i.id != instance_id]
            if len(kept) == len(existing):
                raise NotFound(f"destination {instance_id!r} not found on source "
                               f"{source.slug!r}")
            return kept

        return self.mutate(source, change)

    def add_filter(self, source: Source, instance_id: str,
                   raw: Mapping[str, Any]) -> tuple[Filter, PublishResult]:
        made: list[Filter] = []

        def change(flt: tuple[Filter, ...], inst: Instance) -> tuple[Filter, ...]:
            # (a title already taken is refused by _commit, as on every other write)
            new = replace(self.build_filters((), [raw])[0], id="df_" + secrets.token_urlsafe(12))
            made.append(new)
            return (*flt, new)

        result = self._mutate_filters(source, instance_id, change)
        return made[0], result

    def update_filter(self, source: Source, instance_id: str, filter_id: str,
                      fields: Mapping[str, Any]) -> tuple[Filter, PublishResult]:
        """Change the given fields (``if``, ``actions``, ``title``, ``description``, ...)."""
        made: list[Filter] = []

        def change(flt: tuple[Filter, ...], inst: Instance) -> tuple[Filter, ...]:
            old = self._filter(flt, inst, filter_id)
            raw = {**filter_dict(old), **fields}
            new = replace(self.build_filters((), [raw])[0], id=old.id)
            made.append(new)
            return tuple(new if f.id == filter_id else f for f in flt)

        result = self._mutate_filters(source, instance_id, change)
        return made[0], result

    def delete_filter(self, source: Source, instance_id: str, filter_id: str) -> PublishResult:
        def change(flt: tuple[Filter, ...], inst: Instance) -> tuple[Filter, ...]:
            self._filter(flt, inst, filter_id)
            return tuple(f for f in flt if f.id != filter_id)

        return self._mutate_filters(source, instance_id, change)

    # -- helpers of the single-resource writes ---------------------------------------------

    def _check_name_free(self, existing: Sequence[Instance], name: str,
                         own_id: str | None) -> None:
        key = name.strip().casefold()
        for inst in existing:
            if inst.id != own_id and inst.display_name.strip().casefold() == key:
                raise AlreadyExists(
                    f"display name {name.strip()!r} is already used by destination {inst.id!r} "
                    f"on this source [duplicate_display_name: display names are unique on a "
                    f"source (case-insensitive)]", code="duplicate_display_name")

    @staticmethod
    def _filter(flt: Sequence[Filter], inst: Instance, filter_id: str) -> Filter:
        for f in flt:
            if f.id == filter_id:
                return f
        raise NotFound(f"filter {filter_id!r} not found on destination {inst.id!r}")

    def _mutate_filters(self, source: Source, instance_id: str,
                        change: Callable[[tuple[Filter, ...], Instance], tuple[Filter, ...]]
                        ) -> PublishResult:
        def apply(existing: list[Instance]) -> list[Instance]:
            for n, inst in enumerate(existing):
                if inst.id == instance_id:
                    existing[n] = replace(inst, filters=change(inst.filters, inst))
                    return existing
            raise NotFound(f"destination {instance_id!r} not found on source {source.slug!r}")

        return self.mutate(source, apply)
