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
