"""Reading a request's JSON object field by field: the Config API's and the webhook's bodies.

Every field read names its expected type; a wrong type is an ``InvalidArgument`` naming the
field's path (``destination.config[2].value``) and the JSON type it got, and ``done()``
refuses a field nobody read. So a body is either understood whole or refused with a 400 that
says what to fix — never half-applied, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from publisher.errors import InvalidArgument, shown, type_name

MAX_INT = 2**63 - 1  # SQLite's INTEGER
T = TypeVar("T")


def check_unique_keys(data: bytes | str, what: str) -> None:
    """Refuse a JSON text (already parsed by orjson, which keeps the last of a repeated key)
    in which an object names one key twice: which value was meant cannot be told, and taking
    one silently would apply what the writer may not have meant (RFC 8259 §4: "names SHOULD
    be unique")."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise InvalidArgument(f"{what} names the key {shown(key)} twice in one object",
                                      code="duplicate_key")
            out[key] = value
        return out

    try:
        json.loads(data, object_pairs_hook=pairs)
    except RecursionError:  # (orjson read it; nothing valid nests this deep: refused anyway)
        raise InvalidArgument(f"{what} nests arrays and objects too deeply",
                              code="too_deep") from None


class Obj:
    """One JSON object of a request, read field by field; ``done()`` refuses the leftovers."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{where} must be an object, got {type_name(raw)}",
                                  code="wrong_type")
        self.raw: dict[str, Any] = raw
        self.where = where
        self.seen: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, kind: type[T] | tuple[type, ...], what: str, *,
            required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            if required:
                got = ", ".join(repr(k) for k in sorted(self.raw)[:10]) or "none"
                raise InvalidArgument(f"{self.path(key)} is required (fields given: {got})",
                                      code="missing_field")
            return None
        value = self.raw[key]
        bad_bool = isinstance(value, bool) and kind is int
        if not isinstance(value, kind) or bad_bool:
            got = type_name(value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                got += " " + shown(value)  # 1.0, 1e+30: which number was not a whole one
            raise InvalidArgument(f"{self.path(key)} must be {what}, got {got}",
                                  code="wrong_type")
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.get(key, str, "a string", required=required)
        if required and not value.strip():
            raise InvalidArgument(f"{self.path(key)} must not be empty", code="missing_field")
        return value  # type: ignore[no-any-return]

    def flag(self, key: str) -> bool | None:
        return self.get(key, bool, "true or false")  # type: ignore[no-any-return]

    def number(self, key: str, *, required: bool = False, minimum: int = 0) -> int | None:
        value = self.get(key, int, "a whole number", required=required)
        if value is not None and not minimum <= value <= MAX_INT:
            raise InvalidArgument(f"{self.path(key)} must be a whole number from {minimum} to "
                                  f"{MAX_INT}, got {value}", code="out_of_range")
        return value  # type: ignore[no-any-return]

    def array(self, key: str, *, required: bool = False) -> list[Any] | None:
        return self.get(key, list, "an array", required=required)  # type: ignore[no-any-return]

    def object(self, key: str, *, required: bool = False) -> Obj | None:
        self.get(key, dict, "an object", required=required)
        return Obj(self.raw[key], self.path(key)) if key in self.raw else None

    def check(self, keys: Sequence[str], *, flags: Collection[str] = (),
              arrays: Collection[str] = ()) -> None:
        """Type-check each of ``keys`` given — a flag, an array, or else a string — reading
        nothing else: a PATCH checks the fields outside its mask, and changes only those in."""
        for key in keys:
            if key in flags:
                self.flag(key)
            elif key in arrays:
                self.array(key)
            else:
                self.text(key)

    def done(self, *ignored: str) -> None:
        unknown = sorted(k for k in self.raw if k not in self.seen and k not in ignored)
        if unknown:
            raise InvalidArgument(f"{self.where or 'body'}: unknown field "
                                  f"{self.path(unknown[0])!r}", code="unknown_field")
