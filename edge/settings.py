"""The edge's one frozen settings object, read once from the environment.

Every option has an environment variable, a default and a line in ``OPTIONS``; the table is
the single source for parsing, validation, ``settings-cdn-edge --help`` and the README
(``settings_table()`` renders it). A bad value raises ``SettingsError`` naming the variable
and the value, so the edge stops at start instead of misbehaving later.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from edge.redis_url import (
    masked_url,
    redis_url_problem,
    sentinel_url_problem,
    sentinels_problem,
)


class SettingsError(ValueError):
    """A setting has a value the edge cannot run with; the message names variable and value."""


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout: float = 0.25
    redis_connect_timeout: float = 0.25
    redis_max_connections: int = 64
    redis_retry_interval: float = 1.0
    refresh_interval: float = 30.0
    cache_max_entries: int = 10_000
    negative_ttl: float = 5.0
    negative_max_entries: int = 10_000
    not_found_max_age: int = 10
    max_age: int = 60
    s_maxage: int = 300
    stale_while_revalidate: int = 60
    stale_if_error: int = 86_400
    retry_after: int = 5
    propagation_budget: int = 1800
    caches_honour_age: bool = False
    instant: bool = False
    fast_path: bool = True
    assets_dir: str = ""
    assets_latest_max_age: int = 120
    redis_sentinels: str = ""
    redis_sentinel_service: str = "mymaster"
    redis_sentinel_password: str = ""
    redis_role: str = "replica"

    def __post_init__(self) -> None:
        for option in OPTIONS:
            value = getattr(self, option.field)
            problem = option.check(value)
            if problem:
                raise SettingsError(f"{option.env}={shown(option, value)!r} is invalid: {problem}")
        if self.redis_sentinels and sentinel_url_problem(self.redis_url):
            raise SettingsError(f"REDIS_URL={masked_url(self.redis_url)!r} is invalid with "
                                f"EDGE_REDIS_SENTINELS: {sentinel_url_problem(self.redis_url)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EdgeSettings:
        """Settings from ``environ`` (default ``os.environ``); unset or empty means default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = env.get(option.env)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[option.field] = option.parse(raw.strip())
            except ValueError:
                raise SettingsError(
                    f"{option.env}={shown(option, raw)!r} is invalid: expected {option.kind}"
                ) from None
        return cls(**values)


# -- parsers and checks (a check returns a problem description, or None when fine) ------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if _not_finite(value) or value > MAXIMUM:
            return f"must be a number <= {MAXIMUM}"
        return None if value >= minimum else f"must be >= {minimum:g}"

    return check


def _above(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if _not_finite(value) or value > MAXIMUM:
            return f"must be a number <= {MAXIMUM}"
        return None if value > minimum else f"must be > {minimum:g}"

    return check


# The largest number any setting takes (RFC 9111 §1.2.2: no sender generates delta-seconds
# above 2**31). Larger ones were accepted and failed later: --check and /v1/propagation were a
# traceback (orjson holds 64-bit integers), and the headers carried lifetimes caches cap.
MAXIMUM = 2**31 - 1


def _not_finite(value: Any) -> bool:
    # float() reads "inf" and "nan": an infinite timeout waits forever for a hung Redis
    # (requests and shutdown hang), an infinite lifetime has no worst case to compare.
    return isinstance(value, float) and not math.isfinite(value)


def _port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port 1-65535"


MAX_WORKERS = 1024  # (one per core is the norm: more than this is a typo, not a machine)


def _workers(value: Any) -> str | None:
    return None if 1 <= value <= MAX_WORKERS else f"must be from 1 to {MAX_WORKERS}"


def shown(option: Option, value: Any) -> Any:
    """A setting's value as an error message may show it (a URL without its password)."""
    return masked_url(str(value)) if option.env == "REDIS_URL" else value


def _assets_dir(value: Any) -> str | None:
    if value == "" or os.path.isdir(value):
        return None
    return "is not a directory"


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _log_level(value: Any) -> str | None:
    return None if value in _LOG_LEVELS else f"must be one of {', '.join(_LOG_LEVELS)}"


def _nonempty(value: Any) -> str | None:
    return None if str(value).strip() else "must not be empty"


def _role(value: Any) -> str | None:
    return None if value in ("replica", "primary") else "must be replica or primary"


@dataclass(frozen=True, slots=True)
class Option:
    env: str
    field: str
    parse: Callable[[str], Any]
    kind: str
    check: Callable[[Any], str | None]
    help: str


OPTIONS: tuple[Option, ...] = (
    Option("EDGE_HOST", "host", str, "a host name or address", _nonempty,
           "Address uvicorn binds."),
    Option("EDGE_PORT", "port", int, "an integer", _port, "TCP port uvicorn binds."),
    Option("EDGE_WORKERS", "workers", int, "an integer", _workers,
           "uvicorn worker processes (each holds its own cache), 1-1024."),
    Option("EDGE_LOG_LEVEL", "log_level", str.lower, "a log level", _log_level,
           "uvicorn log level (access log is off)."),
    Option("REDIS_URL", "redis_url", str, "a redis:// URL", redis_url_problem,
           "Redis (or replica) holding the published bundles."),
    Option("EDGE_REDIS_TIMEOUT", "redis_timeout", float, "a number of seconds", _above(0),
           "Socket timeout of every Redis command: a hung Redis cannot hang requests."),
    Option("EDGE_REDIS_CONNECT_TIMEOUT", "redis_connect_timeout", float,
           "a number of seconds", _above(0), "Timeout to open a Redis connection."),
    Option("EDGE_REDIS_MAX_CONNECTIONS", "redis_max_connections", int, "an integer",
           _at_least(1), "redis-py connection pool size per worker: the instant-mode "
           "subscription and, for a rediss:// URL, every read (redis:// and unix:// reads share "
           "one pipelined connection, edge/pipe.py)."),
    Option("EDGE_REDIS_RETRY_INTERVAL", "redis_retry_interval", float, "a number of seconds",
           _at_least(0), "After a Redis error, serve from memory without asking Redis for "
           "this long (after one source's malformed data, for that source alone); also the "
           "wait before the instant-mode subscription reconnects (at least 0.05 s)."),
    Option("EDGE_REFRESH_INTERVAL", "refresh_interval", float, "a number of seconds",
           _above(0), "Age after which a cached bundle is re-checked against the Redis "
           "pointer (the edge's propagation term)."),
    Option("EDGE_CACHE_MAX_ENTRIES", "cache_max_entries", int, "an integer", _at_least(1),
           "Bundles held in memory; above it the least recently verified against Redis "
           "are dropped (a hit does not reorder them: a requested bundle is re-verified every "
           "EDGE_REFRESH_INTERVAL)."),
    Option("EDGE_NEGATIVE_TTL", "negative_ttl", float, "a number of seconds", _at_least(0),
           "How long an unknown write key is remembered as unknown (0 disables)."),
    Option("EDGE_NEGATIVE_MAX_ENTRIES", "negative_max_entries", int, "an integer",
           _at_least(1), "Unknown write keys remembered (separate from bundles)."),
    Option("EDGE_NOT_FOUND_MAX_AGE", "not_found_max_age", int, "an integer", _at_least(0),
           "Cache-Control max-age of the 404 for an unknown write key."),
    Option("EDGE_MAX_AGE", "max_age", int, "an integer", _at_least(0),
           "Cache-Control max-age: the browser's lifetime."),
    Option("EDGE_S_MAXAGE", "s_maxage", int, "an integer", _at_least(0),
           "Cache-Control s-maxage: shared caches' (CDN, nginx) lifetime."),
    Option("EDGE_STALE_WHILE_REVALIDATE", "stale_while_revalidate", int, "an integer",
           _at_least(0), "Cache-Control stale-while-revalidate (RFC 5861), every cache."),
    Option("EDGE_STALE_IF_ERROR", "stale_if_error", int, "an integer", _at_least(0),
           "Cache-Control stale-if-error (RFC 5861): only while the origin fails."),
    Option("EDGE_RETRY_AFTER", "retry_after", int, "an integer", _at_least(0),
           "Retry-After seconds of the 503 for a never-seen key while Redis is down."),
    Option("EDGE_PROPAGATION_BUDGET", "propagation_budget", int, "an integer", _above(0),
           "Largest allowed worst-case propagation time; the edge refuses to start above it."),
    Option("EDGE_CACHES_HONOUR_AGE", "caches_honour_age", _bool, "a boolean", _nonempty,
           "Declare that every downstream cache honours Age (RFC 9111 §4.2.3): the "
           "propagation terms then take their maximum instead of adding up."),
    Option("EDGE_INSTANT", "instant", _bool, "a boolean", _nonempty,
           "Subscribe to the publish channel and re-check a replaced bundle at once."),
    Option("EDGE_FAST_PATH", "fast_path", _bool, "a boolean", _nonempty,
           "Answer GET/HEAD of the settings route inside the HTTP protocol (edge/server.py): "
           "held bundles without any task; false sends every request through the ASGI app."),
    Option("EDGE_ASSETS_DIR", "assets_dir", str, "a directory", _assets_dir,
           "Directory served at /next-integrations/ (unset: those paths are 404)."),
    Option("EDGE_ASSETS_LATEST_MAX_AGE", "assets_latest_max_age", int, "an integer",
           _at_least(0), "max-age of unversioned ('latest') assets; versioned ones are "
           "immutable."),
    Option("EDGE_REDIS_SENTINELS", "redis_sentinels", str, "host:port,host:port",
           sentinels_problem, "Redis Sentinel addresses (host:port, comma-separated): the edge "
           "asks them which server to read (EDGE_REDIS_ROLE) and asks again after a connection "
           "error; REDIS_URL then gives only the password, database and options (unset: read "
           "REDIS_URL's server)."),
    Option("EDGE_REDIS_SENTINEL_SERVICE", "redis_sentinel_service", str, "a service name",
           _nonempty, "The Sentinel service (`sentinel monitor <name> ...`) whose servers the "
           "edge reads."),
    Option("EDGE_REDIS_SENTINEL_PASSWORD", "redis_sentinel_password", str, "a password",
           lambda value: None, "Password of the Sentinels themselves (their `requirepass`; "
           "unset: none). The Redis servers' password is REDIS_URL's."),
    Option("EDGE_REDIS_ROLE", "redis_role", str.lower, "replica or primary", _role,
           "With EDGE_REDIS_SENTINELS: read a replica (any one Sentinel holds healthy; the "
           "primary while none is) or the primary."),
)

if {o.field for o in OPTIONS} != {f.name for f in fields(EdgeSettings)}:  # pragma: no cover
    raise AssertionError("edge.settings: OPTIONS and EdgeSettings fields differ")


def _default_text(option: Option) -> str:
    value = getattr(EdgeSettings(), option.field)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "(unset)"


def settings_table() -> str:
    """Every option as a markdown table: variable, default, meaning (the README copies it)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for option in OPTIONS:
        lines.append(f"| `{option.env}` | `{_default_text(option)}` | {option.help} |")
    return "\n".join(lines) + "\n"
