"""What a settings request is answered with, for both ways in.

edge/server.py answers a plain ``GET``/``HEAD`` of a settings path inside uvicorn's HTTP
protocol, without an ASGI task; the ASGI app (edge/app.py) answers the rest. Both read the
request's headers with ``scan`` and take status, header lines and body from
``settings_answer`` (``choose`` for a held bundle), so the two cannot answer differently.
Everything here is on the hot path: header lines are pre-built bytes, and values browsers
repeat (Accept-Encoding, Age) are parsed or formatted once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from edge import http
from edge.cache import BundleCache, Unavailable
from edge.entry import Entry
from edge.instant import Subscription
from edge.metrics import Metrics
from edge.settings import EdgeSettings
from edge.store import Store

log = logging.getLogger("edge.answer")


@dataclass(eq=False)
class Runtime:
    """Everything a request needs, created by the lifespan."""

    settings: EdgeSettings
    clock: Callable[[], float]
    client: aioredis.Redis
    store: Store
    cache: BundleCache
    metrics: Metrics
    not_found_lines: bytes  # header lines (http.header_block) of the 404, Age aside
    unavailable_lines: bytes  # of the 503
    subscription: Subscription | None = None


@functools.lru_cache(maxsize=512)
def _accepts_gzip(raw: bytes) -> bool:
    # Browsers send a handful of distinct values: parse each once.
    return http.accepts_gzip(raw.decode("latin-1"))


# Request headers after which a GET is not answered by edge/server.py itself: it may carry a
# body, wait for "100 Continue" or switch protocols.
_NOT_PLAIN = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


def scan(headers: Sequence[tuple[bytes, bytes]]
         ) -> tuple[bytes | None, bytes | None, bytes | None, bool]:
    """Accept-Encoding, If-None-Match, If-Modified-Since (repeated fields joined with commas,
    RFC 9110 §5.3), and whether the request is plain: none of ``_NOT_PLAIN``."""
    accept_encoding = if_none_match = if_modified_since = None
    plain = True
    for name, value in headers:
        if name == b"accept-encoding":
            if accept_encoding is not None:
                return _scan_repeated(headers)
            accept_encoding = value
        elif name == b"if-none-match":
            if if_none_match is not None:
                return _scan_repeated(headers)
            if_none_match = value
        elif name == b"if-modified-since":
            if if_modified_since is not None:
                return _scan_repeated(headers)
            if_modified_since = value
        elif name in _NOT_PLAIN:
            plain = False
    return accept_encoding, if_none_match, if_modified_since, plain


def _scan_repeated(headers: Sequence[tuple[bytes, bytes]]
                   ) -> tuple[bytes | None, bytes | None, bytes | None, bool]:
    """``scan`` of a request that repeats one of the fields: each joined once, in linear time
    (joining as they come copied the whole field again for each repeat: 20,000 repeats cost
    56 ms of the event loop). Two If-Modified-Since dates joined are no date: ignored."""
    found: dict[bytes, list[bytes]] = {b"accept-encoding": [], b"if-none-match": [],
                                       b"if-modified-since": []}
    plain = True
    for name, value in headers:
        if name in found:
            found[name].append(value)
        elif name in _NOT_PLAIN:
            plain = False
    ae, inm, ims = (b",".join(v) if v else None for v in found.values())
    return ae, inm, ims, plain


async def settings_answer(rt: Runtime, write_key: str, head: bool, accept_encoding: bytes | None,
                          if_none_match: bytes | None, if_modified_since: bytes | None
                          ) -> tuple[int, bytes, bytes]:
    """Status, header lines (``http.header_block``, ``Date`` aside) and body of a ``GET`` or
    ``HEAD`` of a settings path, counted: the bundle (``choose``), 404 or 503.

    Shared by the ASGI path and edge/server.py, which writes it without an ASGI task.
    """
    metrics = rt.metrics
    if not http.valid_write_key(write_key):  # no Redis access for keys that cannot exist
        metrics.requests["settings", 404] += 1
        return 404, rt.not_found_lines + _age_line(0), b"" if head else http.NOT_FOUND_BODY
    try:
        entry = await rt.cache.get(write_key)
    except Unavailable:
        metrics.requests["settings", 503] += 1
        return 503, rt.unavailable_lines, b"" if head else http.UNAVAILABLE_BODY
    if entry is None:
        metrics.requests["settings", 404] += 1
        return (404, rt.not_found_lines + _age_line(rt.cache.not_found_age(write_key)),
                b"" if head else http.NOT_FOUND_BODY)
    status, lines, tail, body = choose(rt, entry, accept_encoding, if_none_match,
                                       if_modified_since)
    return status, lines + tail, b"" if head else body


def choose(rt: Runtime, entry: Entry, accept_encoding: bytes | None,
           if_none_match: bytes | None, if_modified_since: bytes | None
           ) -> tuple[int, bytes, bytes, bytes]:
    """Status, header lines (``http.header_block``: the bundle's, then ``tail``: the lines all
    bundles share, ``Age`` and the stale marker) and body of a held bundle's answer, counted.

    The caller adds the server's ``Date`` and drops the body of a ``HEAD``.
    """
    # RFC 9110 §13.2.2: If-None-Match is evaluated first; If-Modified-Since only without it.
    if if_none_match is not None:
        # A revalidating client sends back exactly our ETag: compare bytes before parsing.
        unchanged = if_none_match == entry.etag_bytes or http.none_match(
            if_none_match.decode("latin-1"), entry.etag)
    elif if_modified_since is not None:
        unchanged = http.not_modified_since(if_modified_since.decode("latin-1"),
                                            entry.published_at)
    else:
        unchanged = False
    cache = rt.cache
    if unchanged:
        rt.metrics.requests["settings", 304] += 1
        return 304, entry.wire_304, cache.shared_304 + age_line(rt, entry), b""
    if accept_encoding is not None and _accepts_gzip(accept_encoding):
        rt.metrics.requests["settings", 200] += 1
        return 200, entry.wire_gzip, cache.shared_200 + age_line(rt, entry), entry.gzip
    try:
        lines, body = entry.identity()
    except ValueError as exc:  # the store holds a broken gzip stream: nothing to serve
        log.error("cannot serve %s v%d uncompressed: %s", entry.write_key, entry.version, exc)
        rt.metrics.requests["settings", 503] += 1
        return 503, rt.unavailable_lines, b"", http.UNAVAILABLE_BODY
    rt.metrics.requests["settings", 200] += 1
    return 200, lines, cache.shared_200 + age_line(rt, entry), body


def age_line(rt: Runtime, entry: Entry) -> bytes:
    """``Age``: seconds since the copy was last verified against Redis (edge/propagation.py),
    plus the stale marker while Redis cannot be reached."""
    line = _age_line(entry.age(rt.clock()))
    return line + _STALE_LINE if entry.stale else line


_STALE_LINE = http.STALE_HEADER + b": 1\r\n"


@functools.lru_cache(maxsize=4096)
def _age_line(age: int) -> bytes:
    return b"age: %d\r\n" % age
