"""A Redis URL, checked before anything connects and shown without its password.

The edge and the publisher both read ``REDIS_URL``. redis-py accepts a URL it cannot use and
fails only later — a traceback at start or at the first write — or reads it quietly as
another one; and a URL in an error message ends up in logs. So the URL is checked here, once,
for both, and every message shows it through ``masked_url``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis


def masked_url(raw: str) -> str:
    """``raw`` with its password — in the user part or a ``password=`` parameter, both of
    which redis-py reads — replaced by ``***``: errors and logs never carry it. Done on the
    text, so a URL that does not parse is masked too."""
    scheme, sep, rest = raw.partition("://")
    if sep:
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        userinfo, at, host = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{host}{rest[end:]}"
        raw = f"{scheme}://{rest}"
    return _PASSWORD_PARAM.sub(r"\1***", raw)


_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redis_url_problem(value: Any) -> str | None:
    """What is wrong with a Redis URL (the publisher checks its own with this too), or None.

    redis-py reads a URL it cannot make sense of quietly: a database that is not a number
    becomes database 0; an option in the query it does not know, or cannot read, fails only
    when the first connection is made — a traceback at start, or at the first write.
    """
    raw = str(value)
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        return "must start with redis://, rediss:// or unix://"
    try:
        url = urlsplit(raw)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 host
        return f"cannot be read as a URL ({exc})"
    try:
        url.port  # noqa: B018 (raises on a port that is no number or out of range)
    except ValueError:
        return "has no valid port"
    db = url.path.strip("/") if url.scheme != "unix" else parse_qs(url.query).get("db", [""])[0]
    if db and not (db.isascii() and db.isdigit()):
        return f"names database {db!r}; a database is a number"
    try:  # the query's options (?db=, ?socket_timeout=, ...): build a connection, unopened
        pool = redis.ConnectionPool.from_url(raw)
        pool.connection_class(**pool.connection_kwargs)
    except (ValueError, TypeError) as exc:
        return f"is refused by redis-py: {exc}"
    return None


def parse_sentinels(raw: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (an IPv6 host in brackets: ``[::1]:26379``) as addresses;
    raises ``ValueError`` naming the entry at fault. Empty: no Sentinel."""
    addresses: list[tuple[str, int]] = []
    if not raw.strip():
        return addresses
    for entry in raw.split(","):
        item = entry.strip()
        host, sep, port = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or "/" in host or any(c.isspace() for c in host):
            raise ValueError(f"{item!r} is not host:port")
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r} has no valid port (1-65535)")
        if (host, int(port)) in addresses:
            raise ValueError(f"{item!r} is listed twice")
        addresses.append((host, int(port)))
    return addresses


def sentinels_problem(value: Any) -> str | None:
    """What is wrong with a list of Sentinel addresses, or None."""
    try:
        parse_sentinels(str(value))
    except ValueError as exc:
        return f"must be a comma-separated list of Sentinel host:port addresses: {exc}"
    return None


def sentinel_url_problem(url: str) -> str | None:
    """What keeps a Redis URL from giving the connection options (password, database, TLS)
    for servers that Sentinel names by host and port, or None."""
    if url.startswith("unix://"):
        return ("is a unix:// URL, but Sentinel names its servers by host and port: use "
                "redis:// or rediss:// (its password, database and options apply; its host "
                "and port are not used)")
    return None
