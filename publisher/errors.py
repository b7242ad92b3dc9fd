"""The publisher's exceptions, mapped to HTTP statuses and Config API codes in one place.

    PublisherError                  500 / 13  (never raised for bad input)
    ├── InvalidArgument             400 / 3   malformed JSON, wrong types, bad values
    │   ├── RuleViolation           400 / 3   a destination rule refused the change (rule code)
    │   ├── SettingError            400 / 3   a destination setting failed catalog validation
    │   └── FQLError                400 / 3   a filter's FQL does not parse (with position)
    ├── Unauthenticated             401 / 16  missing or unknown token / webhook signature
    ├── PermissionDenied            403 / 7   read token on a write
    ├── NotFound                    404 / 5   unknown resource (also: other workspace's)
    ├── AlreadyExists               409 / 6   duplicate name
    ├── RequestTimeout              408 / 4   the body did not arrive within the time allowed
    ├── PayloadTooLarge             413 / 3   body or file over the size limit
    ├── RateLimited                 429 / 8
    ├── Busy                        503 / 14  other writes (this process's or another's) held
    │                                         the write lock for store.BUSY_TIMEOUT_MS (15 s)
    └── CompileError                500 / 13  stored data breaks an invariant: refuse to publish

Every error carries ``code`` — a stable, machine-readable string such as
``one_device_instance`` — and a message naming the values at fault.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import orjson


class PublisherError(Exception):
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[int] = 13
    default_code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def located(self, where: str) -> PublisherError:
        """Name the part of a larger document at fault (``source 'web'``,
        ``destinations[2].filters[0]``) in front of the message, once."""
        if where not in self.message:
            self.message = f"{where}: {self.message}"
            self.args = (self.message,)
        return self

    def to_dict(self) -> dict[str, object]:
        """The Config API error body: ``{"error": ..., "code": N, "reason": ...}``."""
        return {"error": self.message, "code": self.grpc_code, "reason": self.code}


class InvalidArgument(PublisherError):
    http_status = 400
    grpc_code = 3
    default_code = "invalid_argument"


class RuleViolation(InvalidArgument):
    default_code = "rule_violation"


class SettingError(InvalidArgument):
    default_code = "invalid_setting"


class FQLError(InvalidArgument):
    default_code = "fql_syntax"

    def __init__(self, message: str, *, position: int, code: str | None = None) -> None:
        super().__init__(f"{message} (at position {position})", code=code)
        self.position = position


class Unauthenticated(PublisherError):
    http_status = 401
    grpc_code = 16
    default_code = "unauthenticated"


class PermissionDenied(PublisherError):
    http_status = 403
    grpc_code = 7
    default_code = "permission_denied"


class NotFound(PublisherError):
    http_status = 404
    grpc_code = 5
    default_code = "not_found"


class AlreadyExists(PublisherError):
    http_status = 409
    grpc_code = 6
    default_code = "already_exists"


class RequestTimeout(PublisherError):
    http_status = 408
    grpc_code = 4
    default_code = "body_timeout"


class PayloadTooLarge(PublisherError):
    http_status = 413
    grpc_code = 3
    default_code = "payload_too_large"


class RateLimited(PublisherError):
    http_status = 429
    grpc_code = 8
    default_code = "resource_exhausted"


class Busy(PublisherError):
    http_status = 503
    grpc_code = 14
    default_code = "database_busy"


class CompileError(PublisherError):
    default_code = "compile_refused"


# -- values in messages: JSON's words, not Python's ------------------------------------------

def type_name(value: Any) -> str:
    """A request value's JSON type: ``null``, ``boolean``, ``number``, ``string``, ``array``
    or ``object``."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def shown(value: Any, limit: int = 40) -> str:
    """A request value as JSON text, cut at ``limit`` characters (``null``, not ``None``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # (only from Python callers: JSON has no NaN; orjson writes null)
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = type_name(value)
    return text if len(text) <= limit else text[:limit] + "…"
