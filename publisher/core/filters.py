"""Destination filters: the Config API (v1beta) shape in, tsub routing rules out.

A filter is ``{"if": <FQL or "all">, "actions": [...], "title", "description"?, "enabled"?}``
(docs/CONFIG-API.md, "Filters"). Write paths call ``validate_filter``; the compiler calls
``routing_rules`` for the enabled filters of an enabled device-mode instance, and the result
goes to ``middlewareSettings.routingRules`` where analytics-next's tsub middleware reads it
(docs/CLIENT-CONTRACT.md §5). One filter becomes one rule with one matcher, whose transformer
list follows the order Segment documents for applying actions: sample, drop, drop properties,
allow properties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from publisher.core.fql import BROWSER_FUNCTIONS, functions_used, ir_json, parse
from publisher.core.model import Filter
from publisher.errors import (
    CompileError,
    FQLError,
    InvalidArgument,
    RuleViolation,
    shown,
    type_name,
)

MAX_FILTERS_PER_DESTINATION = 10  # "Segment supports 10 filters per destination"
MAX_TITLE_CHARS = 64  # "filter name max 64"

# Segment's application order: "Sample, Drop, Drop Properties, Allow Properties".
ACTION_TYPES = ("sample_event", "drop_event", "blacklist_fields", "whitelist_fields")
_ALIASES = {"blocklist_fields": "blacklist_fields"}  # the docs' spelling of the same action
FIELD_SCOPES = ("properties", "context", "traits")
_FILTER_KEYS = frozenset({"if", "actions", "title", "description", "enabled", "name", "id"})
_ACTION_KEYS = {
    "drop_event": frozenset({"type"}),
    "sample_event": frozenset({"type", "percent", "path"}),
    "blacklist_fields": frozenset({"type", "fields"}),
    "whitelist_fields": frozenset({"type", "fields"}),
}

RULE_SCOPE = "destinations"
RULE_TARGET_TYPE = "workspace::project::destination::config"


def _unknown_keys(where: str, raw: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise InvalidArgument(f"{where}: unknown field{'s' * (len(unknown) > 1)} "
                              f"{', '.join(map(repr, unknown))}")


def _is_all(expr: str) -> bool:
    return expr.strip() == "all"


def _validate_if(expr: Any, *, device_mode: bool) -> str:
    if expr is None:
        raise InvalidArgument("filter.if is required (FQL, or \"all\" for every event)")
    if not isinstance(expr, str):
        raise InvalidArgument(f"filter.if must be a string, got {type_name(expr)}")
    if _is_all(expr):
        return "all"
    try:
        ir = parse(expr)
    except FQLError as exc:
        detail = exc.message.removesuffix(f" (at position {exc.position})")
        raise FQLError(f"filter.if is not valid FQL: {detail}", position=exc.position,
                       code=exc.code) from None
    unsupported = sorted(functions_used(ir) - BROWSER_FUNCTIONS)
    if device_mode and unsupported:
        raise InvalidArgument(
            f"filter.if uses {', '.join(f'{n}()' for n in unsupported)}, which device-mode "
            f"filters cannot evaluate in the browser (supported there: "
            f"{', '.join(f'{n}()' for n in sorted(BROWSER_FUNCTIONS))})",
            code="fql_unsupported_in_device_mode")
    return expr


def _validate_fields(where: str, fields: Any) -> dict[str, Any]:
    if not isinstance(fields, Mapping) or not fields:
        raise InvalidArgument(f"{where} must be a non-empty object keyed by "
                              f"{', '.join(FIELD_SCOPES)}")
    _unknown_keys(where, fields, frozenset(FIELD_SCOPES))
    result: dict[str, Any] = {}
    for scope in FIELD_SCOPES:
        if scope not in fields:
            continue
        entry = fields[scope]
        if not isinstance(entry, Mapping) or "fields" not in entry:
            raise InvalidArgument(f'{where}.{scope} must be an object {{"fields": [...]}}')
        _unknown_keys(f"{where}.{scope}", entry, frozenset({"fields"}))
        names = entry["fields"]
        if not isinstance(names, list) or not names:
            raise InvalidArgument(f"{where}.{scope}.fields must be a non-empty array of names")
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise InvalidArgument(f"{where}.{scope}.fields[{i}] must be a non-empty "
                                      f"string, got {shown(name)}")
        result[scope] = {"fields": list(dict.fromkeys(names))}  # de-duplicated, order kept
    return result


def _validate_action(where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{where} must be an object, got {type_name(raw)}")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise InvalidArgument(f"{where}.type is required and must be a string")
    kind = _ALIASES.get(kind, kind)
    if kind not in _ACTION_KEYS:
        raise InvalidArgument(f"{where}.type: unknown action {raw['type']!r} (expected one of "
                              f"drop_event, sample_event, whitelist_fields, blacklist_fields)")
    _unknown_keys(where, raw, _ACTION_KEYS[kind])
    action: dict[str, Any] = {"type": kind}
    if kind == "sample_event":
        percent = raw.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int | float) \
                or not math.isfinite(percent) or not 0 <= percent <= 1:
            raise InvalidArgument(f"{where}.percent must be a number between 0.0 and 1.0, "
                                  f"got {shown(percent)}")
        action["percent"] = float(percent)
        path = raw.get("path")
        if path is not None and not isinstance(path, str):
            raise InvalidArgument(f"{where}.path must be a string (a field path), "
                                  f"got {type_name(path)}")
        if path and path.strip():
            action["path"] = path.strip()
    elif kind != "drop_event":
        if "fields" not in raw:
            raise InvalidArgument(f"{where}.fields is required for {kind}")
        action["fields"] = _validate_fields(f"{where}.fields", raw["fields"])
    return action


def _validate_actions(raw: Any, where: str = "filter.actions") -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        got = "an empty array" if raw == [] else type_name(raw)
        raise InvalidArgument(f"{where} must be a non-empty array of actions, got {got}")
    actions: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        action = _validate_action(f"{where}[{i}]", item)
        if any(a["type"] == action["type"] for a in actions):
            raise InvalidArgument(f"{where}[{i}]: duplicate action type {action['type']!r}")
        actions.append(action)
    return actions


def validate_filter(raw: Mapping[str, Any], *, device_mode: bool = False) -> dict[str, Any]:
    """Check a Config API filter and return it normalized (percent as float, "all" bare).

    ``device_mode`` also refuses FQL functions that tsub cannot evaluate in the browser.
    ``name`` and ``id`` (identities a GET returns; the caller assigns them) are accepted as
    strings and dropped.
    """
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"filter must be an object, got {type_name(raw)}")
    _unknown_keys("filter", raw, _FILTER_KEYS)
    for key in ("name", "id"):
        if key in raw and not isinstance(raw[key], str):
            raise InvalidArgument(f"filter.{key} must be a string, got {type_name(raw[key])}")
    expr = _validate_if(raw.get("if"), device_mode=device_mode)
    if "actions" not in raw:
        raise InvalidArgument("filter.actions is required")
    actions = _validate_actions(raw["actions"])
    if "title" not in raw:
        raise InvalidArgument("filter.title is required")
    title = raw["title"]
    if not isinstance(title, str):
        raise InvalidArgument(f"filter.title must be a string, got {type_name(title)}")
    if not title.strip():
        raise InvalidArgument("filter.title must not be empty")
    title = title.strip()
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidArgument(f"filter.title is {len(title)} characters; the limit is "
                              f"{MAX_TITLE_CHARS}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidArgument(f"filter.description must be a string, "
                              f"got {type_name(description)}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidArgument(f"filter.enabled must be true or false, got {shown(enabled)}")
    return {"if": expr, "actions": actions, "title": title,
            "description": description or "", "enabled": enabled}


def to_filter(filter_id: str, validated: Mapping[str, Any]) -> Filter:
    """The model object for a ``validate_filter`` result."""
    return Filter(id=filter_id, if_=validated["if"], actions=tuple(validated["actions"]),
                  title=validated["title"], description=validated["description"],
                  enabled=validated["enabled"])


def check_filter_count(count: int, where: str = "a destination") -> None:
    """Refuse a destination instance with more than MAX_FILTERS_PER_DESTINATION filters."""
    if count > MAX_FILTERS_PER_DESTINATION:
        raise RuleViolation(f"{where} has at most {MAX_FILTERS_PER_DESTINATION} filters; "
                            f"this change would make {count}", code="too_many_filters")


def _transformer(action: Mapping[str, Any]) -> dict[str, Any]:
    kind = action["type"]
    if kind == "drop_event":
        return {"type": "drop"}
    if kind == "sample_event":
        return {"type": "sample_event",
                "config": {"sample": {"percent": action["percent"],
                                      "path": action.get("path", "")}}}
    by_scope = {scope: entry["fields"] for scope, entry in action["fields"].items()}
    if kind == "blacklist_fields":
        return {"type": "drop_properties", "config": {"drop": by_scope}}
    return {"type": "allow_properties", "config": {"allow": by_scope}}


def _rule(destination_name: str, f: Filter) -> dict[str, Any]:
    if _is_all(f.if_):
        matcher: dict[str, Any] = {"type": "all", "ir": ""}
    else:
        matcher = {"type": "fql", "ir": ir_json(f.if_), "config": {"expr": f.if_}}
    actions = sorted(_validate_actions(list(f.actions), f"filter {f.id!r} actions"),
                     key=lambda a: ACTION_TYPES.index(a["type"]))
    return {"scope": RULE_SCOPE, "target_type": RULE_TARGET_TYPE,
            "destinationName": destination_name, "matchers": [matcher],
            "transformers": [[_transformer(a) for a in actions]]}


def routing_rules(destination_name: str, filters: Sequence[Filter]) -> list[dict[str, Any]]:
    """The tsub rules for one device-mode destination: one per enabled filter, in order.

    ``destination_name`` is the catalog's integrations key (the name analytics-next matches
    against ``rule.destinationName``). Stored filters that no longer validate mean the
    store broke an invariant: CompileError, so nothing half-right is published.
    """
    if not destination_name:
        raise CompileError("routing rules need the destination's integrations key")
    rules = []
    for f in filters:
        if not f.enabled:
            continue
        try:
            rules.append(_rule(destination_name, f))
        except InvalidArgument as exc:  # FQLError included
            raise CompileError(f"stored filter {f.id!r} of {destination_name!r} is invalid: "
                               f"{exc.message}", code="invalid_stored_filter") from None
    return rules
