"""A user's setting values checked against the catalog: names, types, depth, required ones.

Every write path (Config API, webhook, workspace file) stores settings only after this check,
so what is stored always fits the catalog the bundle compiler reads (publisher/core/compile.py):
an unknown name, a value of the wrong JSON type or one nested past ``MAX_SETTING_DEPTH`` is a
``SettingError`` naming the setting and its destination, never a crash later on.
"""

from __future__ import annotations

import math
from typing import Any

from publisher.core.catalog import CatalogDestination
from publisher.errors import SettingError, type_name

# Catalog setting type -> predicate over the JSON value a user supplied.
_STRINGY = frozenset({"string", "password", "color", "select", "multi_line_string"})


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _type_ok(kind: str, value: Any) -> bool:
    if kind in _STRINGY:
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    if kind in ("array", "strings", "list"):
        return isinstance(value, list)
    if kind in ("map", "text-map"):
        return isinstance(value, dict)
    return True  # mixed, oauth: any JSON value


_EXPECTED = {
    "boolean": "a boolean",
    "number": "a number",
    "array": "an array",
    "strings": "an array",
    "list": "an array",
    "map": "an object",
    "text-map": "an object",
}


# Arrays and objects inside one setting's value. Real settings nest two or three levels
# (a list of mappings); the bound keeps every value inside what the store, the API's answers
# and the bundle can serialize (orjson stops at 254 levels, and a bundle wraps each setting
# in a few more).
MAX_SETTING_DEPTH = 32


def nesting(value: Any, limit: int) -> int:
    """Levels of arrays and objects in ``value`` (0 for a scalar), counted up to ``limit + 1``."""
    level, depth = [value], 0
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            return depth
        depth += 1
        level = [x for v in containers for x in (v.values() if isinstance(v, dict) else v)]
    return depth


def validate_settings(
    dest: CatalogDestination, settings: Any, *, enabled: bool, where: str = ""
) -> dict[str, Any]:
    """Check settings against the catalog; returns them unchanged or raises ``SettingError``.

    Unknown names, wrong types, values nested deeper than ``MAX_SETTING_DEPTH`` and (when the
    instance is enabled) missing required settings are refused, each naming the setting. An
    empty string does not satisfy a required string.
    """
    at = f" ({where})" if where else ""
    if not isinstance(settings, dict):
        raise SettingError(f"settings of {dest.name}{at} must be an object, got "
                           f"{type_name(settings)}", code="settings_not_object")
    for name, value in settings.items():
        spec = dest.settings.get(name)
        if spec is None:
            raise SettingError(f"unknown setting {name!r} for destination {dest.name}{at}",
                               code="unknown_setting")
        if nesting(value, MAX_SETTING_DEPTH) > MAX_SETTING_DEPTH:
            raise SettingError(f"setting {name!r} of {dest.name}{at} nests arrays and objects "
                               f"more than {MAX_SETTING_DEPTH} levels deep",
                               code="setting_too_deep")
        if not _type_ok(spec.type, value):
            expected = _EXPECTED.get(spec.type, "a string")
            raise SettingError(
                f"setting {name!r} of {dest.name}{at} must be {expected} (catalog type "
                f"{spec.type}), got {type_name(value)}", code="wrong_setting_type")
    if enabled:
        for spec in dest.settings.values():
            if spec.required and settings.get(spec.name) in (None, "", [], {}):
                raise SettingError(
                    f"required setting {spec.name!r} of {dest.name}{at} is missing "
                    "(required to enable the destination)", code="missing_required_setting")
    return settings
