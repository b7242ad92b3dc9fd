"""What the web app's forms send, turned into the values the write path takes — and back.

Pure functions, no I/O. A form field is text; a destination setting is a JSON value of the
catalog's type (publisher/core/setting_values.py checks it on the write path). This module only
reads the text as the type the input stood for — a number input as a number, a checkbox as a
boolean, a JSON field as JSON — and says which field a refusal of the write path is about, so
the page can show the message next to it. It decides nothing the write path decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from publisher.api.shapes import masked
from publisher.core.catalog import CatalogDestination, SettingSpec
from publisher.errors import InvalidArgument, PublisherError

MAX_FIELDS = 2000

_TEXT = frozenset({"string", "password", "color", "select"})
_JSON = frozenset({"array", "strings", "list", "map", "text-map"})


class Form:
    """An ``application/x-www-form-urlencoded`` body: every value of each name, in order."""

    def __init__(self, body: bytes) -> None:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument("the form is not UTF-8 text", code="bad_form") from None
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except ValueError as exc:
            raise InvalidArgument(f"the form cannot be read: {exc}", code="bad_form") from None
        self.values: dict[str, list[str]] = {}
        for name, value in pairs:
            self.values.setdefault(name, []).append(value)

    def get(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[-1] if found else default

    def has(self, name: str) -> bool:
        return name in self.values

    def all(self) -> dict[str, str]:
        return {k: v[-1] for k, v in self.values.items()}


@dataclass
class FieldErrors:
    """Messages by form field; ``""`` holds the ones that belong to no single field."""

    by_field: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, message)

    def __bool__(self) -> bool:
        return bool(self.by_field)

    def get(self, name: str) -> str:
        return self.by_field.get(name, "")


# -- settings: catalog spec <-> form input ---------------------------------------------------

def input_kind(spec: SettingSpec) -> str:
    """How the form asks for a setting: text, secret, number, checkbox, textarea or json."""
    if spec.secret:
        return "secret"
    if spec.type == "boolean":
        return "checkbox"
    if spec.type == "number":
        return "number"
    if spec.type == "multi_line_string":
        return "textarea"
    if spec.type in _TEXT:
        return "text"
    return "json"


def shown_value(spec: SettingSpec, value: Any) -> str:
    """A stored value as its input shows it (secrets are never shown: ``masked`` instead)."""
    if value is None:
        return ""
    kind = input_kind(spec)
    if kind == "secret":
        return masked(value)
    if kind in ("text", "textarea") and isinstance(value, str):
        return value
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    if kind == "json" and isinstance(value, str) and spec.type not in _JSON:
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def setting_field(name: str) -> str:
    return f"s.{name}"


def read_settings(dest: CatalogDestination, form: Form, current: Mapping[str, Any],
                  errors: FieldErrors) -> dict[str, Any]:
    """The settings patch a settings form states (``None`` removes a setting): a secret left
    empty keeps its stored value; another field left empty removes the setting."""
    patch: dict[str, Any] = {}
    for spec in dest.settings.values():
        key = setting_field(spec.name)
        kind = input_kind(spec)
        if kind == "checkbox":
            if form.has(key + ".present"):
                checked = form.has(key)
                if spec.name in current or checked != bool(spec.default):
                    patch[spec.name] = checked
            continue
        if not form.has(key):
            continue
        text = form.get(key)
        if kind == "secret":
            if text:
                patch[spec.name] = text
            continue
        if kind in ("text", "textarea"):
            patch[spec.name] = text if text.strip() else None
            continue
        if not text.strip():
            patch[spec.name] = None
            continue
        if kind == "number":
            number = _number(text)
            if number is None:
                errors.add(key, f"{spec.label}: {text.strip()[:40]!r} is not a number")
            else:
                patch[spec.name] = number
            continue
        try:
            patch[spec.name] = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if spec.type in _JSON:
                errors.add(key, f"{spec.label}: not valid JSON ({exc})")
            else:  # (mixed, oauth: any JSON value; plain text is a string)
                patch[spec.name] = text
    return {k: v for k, v in patch.items()
            if ((k in current) if v is None else current.get(k) != v)}


def _number(text: str) -> int | float | None:
    t = text.strip()
    if re.fullmatch(r"[+-]?\d{1,16}", t):
        return int(t)
    try:
        value = float(t)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# -- refusals of the write path, placed next to a field --------------------------------------

_MODE_CODES = frozenset({"invalid_connection_mode", "no_device_mode_on_server",
                         "mode_not_supported", "one_device_instance", "cloud_instance_limit"})
_SOURCE_CODES = frozenset({"single_instance_source", "data_lakes_single_instance",
                           "device_only_single_instance", "multi_instance_unsupported"})
_NAME_CODES = frozenset({"display_name_required", "duplicate_display_name",
                         "display_name_taken", "invalid_text"})
_SETTING_RE = re.compile(r"setting '([^']+)'")
_FILTER_RE = re.compile(r"filter\.(if|actions|title|description|enabled)")


def place(exc: PublisherError, errors: FieldErrors, *, source_field: str = "") -> None:
    """Put a refusal next to the field it is about (``""``: the form as a whole)."""
    message = exc.message
    code = exc.code
    if code in _MODE_CODES:
        errors.add("connection_mode", message)
    elif code in _SOURCE_CODES:
        errors.add(source_field or "connection_mode", message)
    elif code in _NAME_CODES:
        errors.add("display_name", message)
    elif code == "copy_settings_mismatch":
        errors.add("copy_from", message)
    elif code.startswith("fql") or code == "fql_unsupported_in_device_mode":
        errors.add("if", message)
    elif (m := _SETTING_RE.search(message)) and code in (
            "unknown_setting", "setting_too_deep", "wrong_setting_type",
            "missing_required_setting"):
        errors.add(setting_field(m.group(1)), message)
    elif (m := _FILTER_RE.search(message)) is not None:
        errors.add(m.group(1), message)
    elif "title" in message and code in ("already_exists", "duplicate_filter_title"):
        errors.add("title", message)
    else:
        errors.add("", message)


# -- filters: form <-> Config API filter shape ----------------------------------------------

ACTIONS = (("drop_event", "Drop the event"), ("sample_event", "Sample events"),
           ("blacklist_fields", "Drop properties"), ("whitelist_fields", "Only keep properties"))


def read_filter(form: Form, errors: FieldErrors) -> dict[str, Any]:
    """A filter in Config API shape from the filter form (``filters.validate_filter`` on the
    write path checks the rest)."""
    action = form.get("action", "drop_event")
    act: dict[str, Any] = {"type": action}
    if action == "sample_event":
        number = _number(form.get("percent"))
        if number is None:
            errors.add("percent", "Percent of events to keep: a number from 0 to 100")
        else:
            act["percent"] = number / 100
    elif action in ("blacklist_fields", "whitelist_fields"):
        names = [n.strip() for n in re.split(r"[,\n]", form.get("fields")) if n.strip()]
        if not names:
            errors.add("fields", "name at least one property (comma-separated)")
        act["fields"] = {"properties": {"fields": names}}
    return {"title": form.get("title").strip(), "description": form.get("description"),
            "if": form.get("if").strip() or "all", "actions": [act],
            "enabled": form.has("enabled")}


def filter_form(f: Mapping[str, Any]) -> dict[str, str]:
    """A stored filter (Config API shape) as the filter form's values."""
    act = (f.get("actions") or [{}])[0]
    out = {"title": f.get("title", ""), "description": f.get("description", ""),
           "if": f.get("if", ""), "action": act.get("type", "drop_event"),
           "enabled": "1" if f.get("enabled", True) else "", "percent": "", "fields": ""}
    if act.get("type") == "sample_event":
        out["percent"] = f"{act.get('percent', 0) * 100:g}"
    if act.get("type") in ("blacklist_fields", "whitelist_fields"):
        out["fields"] = ", ".join((act.get("fields") or {}).get("properties", {})
                                  .get("fields", []))
    return out
