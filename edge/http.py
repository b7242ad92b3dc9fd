"""HTTP semantics of the settings route in one place: pure functions over header values.

Conditional requests (RFC 9110 §13), content-coding negotiation (RFC 9110 §12.5.3), the
header sets of 200 / 304 / 404 / 503 / preflight, and the write-key syntax check. Header
lists are ASGI-style ``list[tuple[bytes, bytes]]`` so the app can build them once per bundle
and send them as they are.

``Surrogate-Key: <writeKey>`` tags every 200 of a bundle (a 304 keeps only ``NOT_MODIFIED_KEEP``)
so a CDN in front (Fastly's surrogate keys; Varnish/nginx with a purge module keyed on the same
header) can drop one source's cached answers: a purge hook subscribed to the publish channel
(``sc:published``, ``"<writeKey> <version>"``) calls the CDN's purge-by-key API with the write
key, which removes that source's shared-cache term from the propagation bound.
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from datetime import UTC, datetime
from email.utils import formatdate

from edge import keyspace

Headers = list[tuple[bytes, bytes]]

NOT_FOUND_BODY = b"Cannot GET - Invalid path or write key provided."
UNAVAILABLE_BODY = b"Settings are temporarily unavailable; retry shortly."
VERSION_HEADER = b"x-settings-version"
STALE_HEADER = b"x-settings-stale"
# Response headers a cross-origin script may read besides the CORS-safelisted ones.
EXPOSE = b"ETag, Age, X-Settings-Version, X-Settings-Stale"
ALLOW = b"GET, HEAD, OPTIONS"

# Write keys are URL-safe tokens; anything else cannot name a source, so it is answered 404
# without a Redis round trip (and cannot smuggle a '{' into the Redis hash tag).
WRITE_KEY_RE = keyspace.WRITE_KEY_RE


def valid_write_key(write_key: str) -> bool:
    return WRITE_KEY_RE.fullmatch(write_key) is not None


# -- If-None-Match (RFC 9110 §13.1.2) -----------------------------------------------------


def _opaque(tag: str) -> str:
    """Weak comparison ignores the ``W/`` prefix (RFC 9110 §8.8.3.2)."""
    return tag[2:] if tag.startswith("W/") else tag


# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')


def parse_entity_tags(value: str) -> list[str] | None:
    """The entity-tags of an If-None-Match value; ``None`` means ``*``.

    Parsed by scanning, not by splitting on commas: a comma is a legal etagc inside quotes
    (RFC 9110 §8.8.3). A member that is not exactly one entity-tag (``"a"x``, ``W/"a"W/"b"``,
    ``"a b"``) is skipped up to the next comma, so garbage matches nothing.
    """
    text = value.strip()
    if text == "*":
        return None
    tags: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t,":
            i += 1
            continue
        found = _ENTITY_TAG.match(text, i)
        if found is not None:
            end = found.end()
            while end < n and text[end] in " \t":
                end += 1
            if end == n or text[end] == ",":
                tags.append(found.group())
                i = end
                continue
        comma = text.find(",", found.end() if found is not None else i)
        i = n if comma == -1 else comma + 1
    return tags


def none_match(if_none_match: str, etag: str) -> bool:
    """True when the condition is *false*, i.e. the client's copy is current: answer 304.

    ``*`` matches any current representation; otherwise any listed tag weakly equal to
    ``etag`` matches (RFC 9110 §13.1.2: GET/HEAD then get 304 Not Modified).
    """
    tags = parse_entity_tags(if_none_match)
    if tags is None:
        return True
    mine = _opaque(etag)
    return any(_opaque(tag) == mine for tag in tags)


_MONTHS = {m: n for n, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"
# HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime forms a
# recipient must accept; names and GMT are case-sensitive. Anything else is not a date.
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT", re.ASCII)
_RFC850_DATE = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-{_MONTH}-(\d\d) "
    rf"{_TIME} GMT", re.ASCII)
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})", re.ASCII)


def parse_http_date(value: str, *, now: float | None = None) -> int | None:
    """Seconds since the epoch of an HTTP-date, ``None`` unless ``value`` is exactly one.

    An RFC 850 date's two-digit year that would lie more than 50 years after ``now`` (default:
    the clock) is the most recent past year with those digits (RFC 9110 §5.6.7).
    """
    value = value.strip(" \t")
    if found := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hh, mm, ss = found.groups()
    elif found := _ASCTIME_DATE.fullmatch(value):
        month, day, hh, mm, ss, year = found.groups()
    elif found := _RFC850_DATE.fullmatch(value):
        day, month, yy, hh, mm, ss = found.groups()
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        full = this_year - this_year % 100 + int(yy)
        year = str(full - 100 if full > this_year + 50 else full)
    else:
        return None
    try:
        moment = datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss),
                          tzinfo=UTC)
    except ValueError:  # 31 Feb, 25:00:00, a 60th second, year 0
        return None
    return int(moment.timestamp())


def not_modified_since(if_modified_since: str, last_modified: int) -> bool:
    """True when If-Modified-Since shows the client's copy is current (RFC 9110 §13.1.3).

    Only consulted without If-None-Match. A value that is not exactly one HTTP-date — another
    format, another zone, two dates (a repeated field, joined) — is ignored: the condition is
    false, and the full answer is sent.
    """
    since = parse_http_date(if_modified_since)
    return since is not None and last_modified <= since


# -- Accept-Encoding (RFC 9110 §12.5.3) -----------------------------------------------------


def _qvalue(params: list[str]) -> float | None:
    q = 1.0
    for param in params:
        name, _, raw = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(raw.strip())
            except ValueError:
                return None
            if not 0.0 <= q <= 1.0:
                return None
    return q


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether to send the stored gzip bytes.

    gzip (or its alias x-gzip) is acceptable when listed with q > 0, or covered by ``*`` with
    q > 0 and not listed itself; ``q=0`` means "not acceptable". It loses only to an identity
    listed with a higher q. A missing header is answered with identity: the RFC allows any
    coding then, but a client that says nothing (curl, scripts) is best served plain.
    Malformed members are ignored.
    """
    if not accept_encoding:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    identity_q: float | None = None
    for member in accept_encoding.split(","):
        coding, *params = member.split(";")
        coding = coding.strip().lower()
        q = _qvalue(params)
        if q is None or not coding:
            continue
        if coding in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            star_q = q
        elif coding == "identity":
            identity_q = q
    if gzip_q is None:
        gzip_q = star_q
    if not gzip_q:
        return False
    return identity_q is None or gzip_q >= identity_q


# -- header sets ----------------------------------------------------------------------------


def cache_control(max_age: int, s_maxage: int, swr: int, sie: int) -> str:
    return (
        f"public, max-age={max_age}, s-maxage={s_maxage}, "
        f"stale-while-revalidate={swr}, stale-if-error={sie}"
    )


def http_date(timestamp: int) -> str:
    return formatdate(timestamp, usegmt=True)


@functools.lru_cache(maxsize=1024)
def _last_modified_line(published_at: int) -> bytes:
    return b"last-modified: " + http_date(published_at).encode() + b"\r\n"


# RFC 9110 §15.4.5: a 304 carries the fields a 200 would have sent among Content-Location,
# Date, ETag, Vary, Cache-Control and Expires, and otherwise only metadata that guides cache
# updates: Age (RFC 9111 §4.3.4 freshens the stored copy with it, see edge.propagation) and the
# CORS grant a browser needs on a revalidated cross-origin response. Date comes from the server.
NOT_MODIFIED_KEEP = frozenset(
    {b"cache-control", b"content-location", b"etag", b"expires", b"vary",
     b"access-control-allow-origin"}
)
_VARY_CORS = b"vary: Accept-Encoding\r\naccess-control-allow-origin: *\r\n"
_EXPOSE_LINE = b"access-control-expose-headers: " + EXPOSE + b"\r\n"


def bundle_blocks(
    *,
    write_key: str,
    version: int,
    etag: str,
    published_at: int,
    gzip_length: int,
) -> tuple[bytes, bytes]:
    """The header lines (``header_block`` form) one bundle's 200 gzip and 304 answers do not
    share with other bundles' (``shared_blocks`` has the rest; ``identity_lines`` derives the
    200 identity's). ``Age``, the stale marker and ``Date`` are added per request.

    200: Content-Type, [Content-Encoding,] Content-Length, ETag, Last-Modified, Surrogate-Key,
    X-Settings-Version, then the shared Cache-Control, Vary, the CORS grant and exposed names.
    304: of those, only ``NOT_MODIFIED_KEEP``: ETag, then the shared Cache-Control, Vary, the
    CORS grant. Built once per bundle when the edge fills its cache, straight as bytes; the
    shared lines are held once per cache, not once per bundle (≈ 400 B a bundle).
    """
    etag_line = b"etag: " + etag.encode() + b"\r\n"
    gzip = b"".join((
        _GZIP_LINES, b"content-length: %d\r\n" % gzip_length,
        etag_line, _last_modified_line(published_at),
        b"surrogate-key: ", write_key.encode(), b"\r\n",
        VERSION_HEADER, b": %d\r\n" % version,
    ))
    return gzip, etag_line


def shared_blocks(cache_control: str) -> tuple[bytes, bytes]:
    """The header lines every bundle's 200 and 304 answers end with (``bundle_blocks``)."""
    cache_line = b"cache-control: " + cache_control.encode() + b"\r\n"
    return cache_line + _VARY_CORS + _EXPOSE_LINE, cache_line + _VARY_CORS


_IDENTITY_LINE = b"content-type: application/json\r\n"
_GZIP_LINES = _IDENTITY_LINE + b"content-encoding: gzip\r\n"


def identity_lines(gzip_lines: bytes, json_length: int) -> bytes:
    """The 200 identity's header lines from the 200 gzip's (``bundle_blocks``): the same but
    for Content-Encoding and Content-Length."""
    rest = gzip_lines[gzip_lines.index(b"\r\n", len(_GZIP_LINES)) + 2:]
    return _IDENTITY_LINE + b"content-length: %d\r\n" % json_length + rest


# The largest JSON a stored gzip stream may expand to. Bundles are a few KB (one source's
# device-mode destinations); the bound only stops a corrupt or hostile store from making the
# edge inflate without limit.
MAX_JSON = 16 * 2**20


def gunzip(data: bytes, limit: int = MAX_JSON) -> bytes:
    """The content of one gzip stream; ``ValueError`` unless it is exactly one complete
    stream of at most ``limit`` bytes."""
    inflate = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer (RFC 1952)
    try:
        out = inflate.decompress(data, limit)
    except zlib.error as exc:
        raise ValueError(f"not a gzip stream: {exc}") from exc
    if not inflate.eof:
        raise ValueError("gzip stream truncated or larger than "
                         f"{limit} bytes uncompressed")
    if inflate.unused_data:
        raise ValueError("bytes after the gzip stream")
    return out


def header_block(headers: Headers) -> bytes:
    """Header lines as they go on the wire: ``name: value\r\n`` each."""
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def header_list(block: bytes) -> Headers:
    """The inverse of ``header_block``."""
    return [(name, value) for name, _, value in
            (line.partition(b": ") for line in block.split(b"\r\n") if line)]


def not_found_headers(max_age: int) -> Headers:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(NOT_FOUND_BODY)).encode()),
        (b"cache-control", f"public, max-age={max_age}".encode()),
        (b"access-control-allow-origin", b"*"),
    ]


def unavailable_headers(retry_after: int) -> Headers:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(UNAVAILABLE_BODY)).encode()),
        (b"cache-control", b"no-store"),
        (b"retry-after", str(retry_after).encode()),
        (b"access-control-allow-origin", b"*"),
    ]


_TOKEN_LIST_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


def preflight_headers(request_headers: str | None) -> Headers:
    """CORS preflight answer (Fetch standard §3.2.3): any origin, our methods, and the
    request headers the browser asked for when they are a valid token list."""
    headers: Headers = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-methods", ALLOW),
        (b"access-control-max-age", b"86400"),
        (b"allow", ALLOW),  # (a 204 has no Content-Length: RFC 9110 §8.6)
        (b"vary", b"Access-Control-Request-Headers"),
    ]
    if request_headers and _TOKEN_LIST_RE.fullmatch(request_headers.strip()):
        headers.insert(2, (b"access-control-allow-headers", request_headers.strip().encode()))
    return headers


def method_not_allowed_headers() -> Headers:
    return [
        (b"allow", ALLOW),
        (b"content-length", b"0"),
        (b"access-control-allow-origin", b"*"),
    ]
