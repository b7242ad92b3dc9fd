"""The publisher's settings: one frozen object per process, read from the environment once.

Every option has an environment variable, a default and a line in the README (the table comes
from ``SETTINGS`` below, so ``--help`` and the README cannot drift apart). A bad value fails at
start with a message naming the variable and the value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge.redis_url import (
    masked_url,
    redis_url_problem,
    sentinel_url_problem,
    sentinels_problem,
)
from edge.settings import MAXIMUM


class SettingsError(ValueError):
    """A setting's value is unusable; the message names the variable and the value."""


# MAXIMUM, the edge's largest number, is the publisher's too: a larger one failed only when used
# — a traceback at start (a socket timeout of 1e30 s, a file read of 2**64 bytes) or every
# publish refused by Redis (PUBLISHER_REDIS_KEEP_VERSIONS beyond 64 bits) and reported as pending.


def _int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {raw!r}")
    if value > MAXIMUM:
        raise SettingsError(f"{name} must be <= {MAXIMUM}, got {raw!r}")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise SettingsError(f"{name} must be >= 0 seconds, got {raw!r}")
    if value > MAXIMUM:
        raise SettingsError(f"{name} must be <= {MAXIMUM} seconds, got {raw!r}")
    return value


def _positive_seconds(name: str, raw: str) -> float:
    value = _seconds(name, raw)
    if value == 0:
        raise SettingsError(f"{name} must be > 0 seconds, got {raw!r}")
    return value


def _port(name: str, raw: str) -> int:
    # not 0: uvicorn would bind a port the OS picks and, logging warnings only, never say which
    value = _int(name, raw, 1)
    if value > 65535:
        raise SettingsError(f"{name} must be a TCP port (1-65535), got {raw!r}")
    return value


def _secret(name: str, raw: str) -> str:
    if raw and not raw.strip():  # a stray space would enable the webhook with a guessable key
        raise SettingsError(f"{name} is only whitespace; leave it empty to disable the webhook")
    return raw


def _nonempty(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} must not be empty")
    return raw.strip()


def _db_path(name: str, raw: str) -> str:
    path = _nonempty(name, raw)
    if path == ":memory:":  # SQLite's name for a database that dies with the connection
        raise SettingsError(f"{name} must name a file, got {raw!r}: an in-memory database "
                            "loses every change when the command exits")
    return path


def _redis_url(name: str, raw: str) -> str:
    problem = redis_url_problem(raw)
    if problem is not None:
        raise SettingsError(f"{name} {problem}, got {masked_url(raw)!r}")
    return raw


def _sentinels(name: str, raw: str) -> str:
    problem = sentinels_problem(raw)
    if problem is not None:
        raise SettingsError(f"{name} {problem}, got {raw!r}")
    return raw.strip()


def _optional_secret(name: str, raw: str) -> str:
    if raw and raw != raw.strip():  # a stray space would be sent as part of the password
        raise SettingsError(f"{name} begins or ends with whitespace")
    return raw


# (field, variable, default, parser, description)
SETTINGS: tuple[tuple[str, str, str, Callable[[str, str], Any], str], ...] = (
    ("db_path", "PUBLISHER_DB", "settings-cdn.db", _db_path,
     "SQLite database file: the source of truth (WAL mode)"),
    ("redis_url", "REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url,
     "Redis the bundles are published to"),
    ("redis_timeout", "PUBLISHER_REDIS_TIMEOUT", "5", _positive_seconds,
     "socket timeout of each Redis command (connecting: at most 2 s): a hung Redis holds a "
     "write this long, then the write is accepted as pending"),
    ("host", "PUBLISHER_HOST", "127.0.0.1", _nonempty, "Config API / webhook bind address"),
    ("port", "PUBLISHER_PORT", "8081", _port, "Config API / webhook port"),
    ("api_host", "PUBLISHER_API_HOST", "api.segment.io/v1", _nonempty,
     "`integrations[\"Segment.io\"].apiHost` in every bundle: where clients send events"),
    ("keep_versions", "PUBLISHER_KEEP_VERSIONS", "10", lambda n, r: _int(n, r, 1),
     "published versions kept per source in SQLite, for rollback, diff and republish"),
    ("redis_keep_versions", "PUBLISHER_REDIS_KEEP_VERSIONS", "2", lambda n, r: _int(n, r, 2),
     "published versions kept per source in Redis: the current one and the ones before it "
     "that an edge which read the pointer just before a publish may still fetch (at least 2; "
     "nothing reads older versions from Redis)"),
    ("max_cloud_instances", "PUBLISHER_MAX_CLOUD_INSTANCES", "10", lambda n, r: _int(n, r, 1),
     "cloud-mode instances of one destination allowed on one source"),
    ("max_file_bytes", "PUBLISHER_MAX_FILE_BYTES", "1048576", lambda n, r: _int(n, r, 1),
     "largest workspace file `apply` accepts"),
    ("max_body_bytes", "PUBLISHER_MAX_BODY_BYTES", "262144", lambda n, r: _int(n, r, 1),
     "largest Config API / webhook request body (413 above)"),
    ("body_timeout", "PUBLISHER_BODY_TIMEOUT", "30", _positive_seconds,
     "seconds a client may take to send a Config API / webhook request body (408 after)"),
    ("webhook_secret", "PUBLISHER_WEBHOOK_SECRET", "", _secret,
     "HMAC-SHA256 secret of `POST /hooks/config-changed` (empty: the webhook is disabled)"),
    ("webhook_tolerance", "PUBLISHER_WEBHOOK_TOLERANCE", "300", lambda n, r: _int(n, r, 1),
     "seconds a webhook timestamp may differ from the publisher's clock"),
    ("rate_limit", "PUBLISHER_RATE_LIMIT", "200", lambda n, r: _int(n, r, 1),
     "Config API requests per minute per token (429 above)"),
    ("retry_interval", "PUBLISHER_RETRY_INTERVAL", "10", _seconds,
     "`serve`: seconds between attempts to publish what a Redis failure left pending "
     "(0: never, and no comparison with Redis at start or after a Redis restart either; "
     "`republish --all` still does)"),
    ("redis_sentinels", "PUBLISHER_REDIS_SENTINELS", "", _sentinels,
     "Redis Sentinel addresses (`host:port,host:port`): the publisher writes to the primary "
     "they name, and follows a failover; `REDIS_URL` then gives only the password, database "
     "and options (empty: write to `REDIS_URL`'s server)"),
    ("redis_sentinel_service", "PUBLISHER_REDIS_SENTINEL_SERVICE", "mymaster", _nonempty,
     "the Sentinel service (`sentinel monitor <name> ...`) whose primary is written"),
    ("redis_sentinel_password", "PUBLISHER_REDIS_SENTINEL_PASSWORD", "", _optional_secret,
     "password of the Sentinels themselves (their `requirepass`; empty: none); the Redis "
     "servers' password is `REDIS_URL`'s"),
)


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    db_path: str = "settings-cdn.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8081
    api_host: str = "api.segment.io/v1"
    keep_versions: int = 10
    redis_keep_versions: int = 2
    max_cloud_instances: int = 10
    max_file_bytes: int = 1048576
    max_body_bytes: int = 262144
    body_timeout: float = 30.0
    webhook_secret: str = ""
    webhook_tolerance: int = 300
    rate_limit: int = 200
    retry_interval: float = 10.0
    redis_sentinels: str = ""
    redis_sentinel_service: str = "mymaster"
    redis_sentinel_password: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PublisherSettings:
        env = os.environ if environ is None else environ
        values = {field: parse(var, env.get(var, default)) for field, var, default, parse, _
                  in SETTINGS}
        problem = sentinel_url_problem(values["redis_url"])
        if values["redis_sentinels"] and problem:
            raise SettingsError(f"REDIS_URL {problem} (PUBLISHER_REDIS_SENTINELS is set), got "
                                f"{masked_url(values['redis_url'])!r}")
        return cls(**values)


def settings_table() -> str:
    """The settings as a markdown table (README and ``--help`` print this)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{var}` | `{default}` | {text} |" for _, var, default, _, text in SETTINGS]
    return "\n".join(rows)
