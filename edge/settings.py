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

from edge.mirror import upstream_problem
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
    assets_dir: str = "var/assets"
    assets_latest_max_age: int = 120
    analytics_js: str = ""
    analytics_js_max_age: int = 300
    assets_upstream: str = "https://cdn.segment.com"
    assets_upstream_timeout: float = 5.0
    assets_max_bytes: int = 8 * 1024 * 1024
    assets_negative_ttl: int = 10
    assets_retry_after: int = 5
    keep_alive_timeout: int = 5
    header_timeout: float = 10.0
    max_header_line: int = 8192
    max_header_size: int = 32768
    max_connections: int = 4096
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
        if self.max_header_size < self.max_header_line:
            raise SettingsError(
                f"EDGE_MAX_HEADER_SIZE={self.max_header_size!r} is invalid: must be >= "
                f"EDGE_MAX_HEADER_LINE={self.max_header_line!r} (a head holds its longest line)")
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
            if raw is not None and raw.strip() == "" and option.empty is not None:
                values[option.field] = option.empty
                continue
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


def _readable_file(value: Any) -> str | None:
    if value == "" or (os.path.isfile(value) and os.access(value, os.R_OK)):
        return None
    return "is not a readable file"


def _assets_dir(value: Any) -> str | None:
    # Created when the mirror stores its first file; an existing path must be a directory.
    if value == "" or os.path.isdir(value) or not os.path.lexists(value):
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
    empty: Any = None  # the value an empty variable gives (None: the default applies)


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
           "Local store served at /next-integrations/: files put there by hand and those the "
           "mirror fetched from EDGE_ASSETS_UPSTREAM (a relative path is from the working "
           "directory; created when the first file is stored). Workers and edges may share it."),
    Option("EDGE_ASSETS_LATEST_MAX_AGE", "assets_latest_max_age", int, "an integer",
           _at_least(0), "max-age of unversioned ('latest') assets; versioned ones are "
           "immutable."),
    Option("EDGE_ANALYTICS_JS", "analytics_js", str, "a file", _readable_file,
           "analytics-next's standalone build (dist/umd/standalone.js of the "
           "@segment/analytics-next npm package), served at /analytics.js/v1/{writeKey}/"
           "analytics.min.js for every known write key, its chunks beside it at "
           "/analytics-next/bundles/ (unset: those paths are 404, logged at start)."),
    Option("EDGE_ANALYTICS_JS_MAX_AGE", "analytics_js_max_age", int, "an integer",
           _at_least(0), "Cache-Control max-age of analytics.min.js (its chunks are "
           "immutable)."),
    Option("EDGE_ASSETS_UPSTREAM", "assets_upstream", str, "an http:// or https:// URL",
           upstream_problem, "CDN origin the /next-integrations/ mirror fetches files the "
           "store lacks from (<URL>/next-integrations/<path>), checks and stores; a stored "
           "'latest' file is fetched again in the background after EDGE_ASSETS_LATEST_MAX_AGE. "
           "Empty disables the mirror (unlike other variables, empty is not the default).",
           empty=""),
    Option("EDGE_ASSETS_UPSTREAM_TIMEOUT", "assets_upstream_timeout", float,
           "a number of seconds", _above(0), "Longest one upstream fetch may take (connect, "
           "headers and body); then 504 for a file not stored. Stored files never wait on "
           "the upstream."),
    Option("EDGE_ASSETS_MAX_BYTES", "assets_max_bytes", int, "an integer", _at_least(1),
           "Largest file the mirror stores; a larger upstream answer is refused (502)."),
    Option("EDGE_ASSETS_NEGATIVE_TTL", "assets_negative_ttl", int, "an integer",
           _at_least(0), "An upstream 404 is passed on with this max-age and remembered this "
           "long per worker (never stored)."),
    Option("EDGE_ASSETS_RETRY_AFTER", "assets_retry_after", int, "an integer", _at_least(0),
           "Retry-After of the mirror's 502/504; for this long a worker answers that path so "
           "without asking the upstream again."),
    Option("EDGE_KEEP_ALIVE_TIMEOUT", "keep_alive_timeout", int, "an integer", _at_least(1),
           "Seconds an idle keep-alive connection stays open after its last answer (uvicorn's "
           "timeout_keep_alive). A connection with a request in progress, a pipelined request "
           "queued or an answer not yet written is never closed by it."),
    Option("EDGE_HEADER_TIMEOUT", "header_timeout", float, "a number of seconds", _above(0),
           "Time a request's head (request line and headers) may take to arrive, counted from "
           "the connection's start for its first request and from the head's first bytes "
           "after that (nginx's client_header_timeout). A head still incomplete then gets 408 "
           "and the connection is closed; a new connection that sent nothing is closed "
           "without an answer. 10 s leaves a lossy mobile link several TCP retransmissions of "
           "a head that fits one packet."),
    Option("EDGE_MAX_HEADER_LINE", "max_header_line", int, "a number of bytes", _at_least(1024),
           "Longest request line (longer: 414) and longest header line (longer: 431); the "
           "connection is then closed (nginx's large_client_header_buffers size)."),
    Option("EDGE_MAX_HEADER_SIZE", "max_header_size", int, "a number of bytes",
           _at_least(1024), "Largest request head, request line and header lines together "
           "(larger: 431 and the connection is closed); at least EDGE_MAX_HEADER_LINE."),
    Option("EDGE_MAX_CONNECTIONS", "max_connections", int, "an integer", _at_least(1),
           "Open connections per worker; a connection accepted above it is closed at once, "
           "without an answer (as nginx does past worker_connections). Keep it below the "
           "process's open-file limit (ulimit -n)."),
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
