"""Table tests of the pure HTTP helpers (RFC 9110 §13.1.2, §13.1.3, §12.5.3)."""

from __future__ import annotations

import gzip

import pytest

from edge import http

ETAG = '"abc123"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param('"abc123"', True, id="same-strong-tag"),
        pytest.param('W/"abc123"', True, id="weak-form-matches-weakly"),
        pytest.param('"other"', False, id="different-tag"),
        pytest.param("*", True, id="star"),
        pytest.param(" * ", True, id="star-with-spaces"),
        pytest.param('"x", "abc123"', True, id="list-second"),
        pytest.param('"abc123","x"', True, id="list-no-space"),
        pytest.param('"x", W/"abc123", "y"', True, id="list-weak-middle"),
        pytest.param('"x", "y"', False, id="list-no-match"),
        pytest.param('"a,b", "abc123"', True, id="comma-inside-quotes"),
        pytest.param('"a,abc123"', False, id="comma-inside-quotes-no-split"),
        pytest.param("abc123", False, id="unquoted-is-not-an-entity-tag"),
        pytest.param('"abc123', False, id="unterminated"),
        pytest.param("", False, id="empty"),
        pytest.param(', ,"abc123"', True, id="empty-members"),
        pytest.param('garbage, "abc123"', True, id="garbage-then-match"),
        pytest.param('w/"abc123"', False, id="lowercase-w-is-not-weak"),
        pytest.param('"ABC123"', False, id="case-sensitive"),
        pytest.param('"abc123"x', False, id="junk-after-the-tag"),
        pytest.param('W/"x"W/"abc123"', False, id="two-tags-without-a-comma"),
        pytest.param('"abc123" "x"', False, id="space-is-no-separator"),
        pytest.param('"abc 123", "abc123"', True, id="space-inside-quotes-skips-that-member"),
        pytest.param('W/ "abc123"', False, id="space-after-w"),
        pytest.param('"abc123" , "x"', True, id="spaces-around-comma"),
    ],
)
def test_if_none_match(header: str, expected: bool) -> None:
    """If-None-Match uses weak comparison over lists and ``*`` to decide on 304."""
    assert http.none_match(header, ETAG) is expected


def test_if_none_match_against_weak_etag() -> None:
    """A weak stored entity-tag still matches its strong form under weak comparison."""
    assert http.none_match('"abc123"', 'W/"abc123"') is True


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param('"a", W/"b"', ['"a"', 'W/"b"'], id="two"),
        pytest.param("*", None, id="star"),
        pytest.param('"a,b"', ['"a,b"'], id="quoted-comma"),
        pytest.param('x, "a"', ['"a"'], id="skip-garbage"),
        pytest.param('"a"x, "b"', ['"b"'], id="skip-member-with-trailing-junk"),
        pytest.param('"a"  ,,, W/"b" ', ['"a"', 'W/"b"'], id="empty-members-and-spaces"),
        pytest.param('"a\x7fb"', [], id="control-character-is-no-etagc"),
    ],
)
def test_parse_entity_tags(header: str, expected: list[str] | None) -> None:
    """Entity-tag lists are scanned, not split, so quoted commas survive."""
    assert http.parse_entity_tags(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, False, id="absent"),
        pytest.param("", False, id="empty"),
        pytest.param("gzip", True, id="gzip"),
        pytest.param("GZIP", True, id="case-insensitive"),
        pytest.param("x-gzip", True, id="x-gzip-alias"),
        pytest.param("gzip, deflate, br", True, id="browser-list"),
        pytest.param("br, deflate", False, id="no-gzip"),
        pytest.param("identity", False, id="identity-only"),
        pytest.param("gzip;q=0", False, id="q-zero"),
        pytest.param("gzip; q=0.000", False, id="q-zero-three-decimals"),
        pytest.param("gzip;q=0.001", True, id="q-tiny"),
        pytest.param("gzip;q=0.5", True, id="q-half"),
        pytest.param("gzip;q=0.5, identity", False, id="identity-preferred"),
        pytest.param("gzip;q=1, identity;q=0.5", True, id="gzip-preferred"),
        pytest.param("gzip, identity;q=0", True, id="identity-excluded"),
        pytest.param("*", True, id="star"),
        pytest.param("*;q=0", False, id="star-q-zero"),
        pytest.param("gzip;q=0, *", False, id="gzip-excluded-star-allowed"),
        pytest.param("*;q=0, gzip", True, id="star-excluded-gzip-listed"),
        pytest.param("deflate, *;q=0.1", True, id="star-low-q"),
        pytest.param("gzip;q=abc", False, id="malformed-q-ignored"),
        pytest.param("gzip;q=2", False, id="out-of-range-q-ignored"),
        pytest.param(" gzip ; q=0.8 ", True, id="whitespace"),
        pytest.param("gzip;level=1", True, id="other-params"),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    """Accept-Encoding selects gzip only when acceptable and not out-ranked by identity."""
    assert http.accepts_gzip(header) is expected


@pytest.mark.parametrize(
    ("header", "last_modified", "expected"),
    [
        pytest.param("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000, True, id="same-second"),
        pytest.param("Tue, 14 Nov 2023 22:13:21 GMT", 1_700_000_000, True, id="later"),
        pytest.param("Tue, 14 Nov 2023 22:13:19 GMT", 1_700_000_000, False, id="earlier"),
        pytest.param("not a date", 1_700_000_000, False, id="invalid-ignored"),
        pytest.param("", 1_700_000_000, False, id="empty-ignored"),
        pytest.param("Fri, 01 Jan 2100 00:00:00 GMT, Fri, 01 Jan 2000 00:00:00 GMT",
                     1_700_000_000, False, id="two-dates-ignored"),
        pytest.param("Fri, 01 Jan 2100 00:00:00 +0500", 1_700_000_000, False,
                     id="other-zone-ignored"),
        pytest.param("Fri, 01 Jan 2100 00:00:00", 1_700_000_000, False, id="no-zone-ignored"),
    ],
)
def test_not_modified_since(header: str, last_modified: int, expected: bool) -> None:
    """If-Modified-Since answers 304 when the bundle is not newer than the given date; a
    value that is not one HTTP-date is ignored (RFC 9110 §13.1.3)."""
    assert http.not_modified_since(header, last_modified) is expected


NOW_2026 = 1_795_000_000  # 2026-11-18


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777, id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", 784_111_777, id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", 784_111_777, id="asctime"),
        pytest.param(" Sun, 06 Nov 1994 08:49:37 GMT ", 784_111_777, id="surrounding-spaces"),
        pytest.param("Friday, 06-Nov-76 08:49:37 GMT", 3_371_878_177,
                     id="rfc850-50-years-ahead-is-the-future"),
        pytest.param("Sunday, 06-Nov-77 08:49:37 GMT", 247_654_177,
                     id="rfc850-over-50-years-ahead-is-the-past"),
        pytest.param("sun, 06 Nov 1994 08:49:37 GMT", None, id="day-name-is-case-sensitive"),
        pytest.param("Sun, 06 nov 1994 08:49:37 GMT", None, id="month-is-case-sensitive"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 gmt", None, id="gmt-is-case-sensitive"),
        pytest.param("Sun, 6 Nov 1994 08:49:37 GMT", None, id="one-digit-day"),
        pytest.param("06 Nov 1994 08:49:37 GMT", None, id="no-day-name"),
        pytest.param("Sun, 06 Nov 1994 08:49 GMT", None, id="no-seconds"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no-such-day"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", None, id="hour-24"),
        pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", None, id="year-zero"),
        pytest.param("Sun, \u0660\u0666 Nov 1994 08:49:37 GMT", None, id="non-ascii-digits"),
    ],
)
def test_parse_http_date(value: str, expected: int | None) -> None:
    """Exactly one HTTP-date in any of its three forms (RFC 9110 §5.6.7) gives its time;
    anything else gives None."""
    assert http.parse_http_date(value, now=NOW_2026) == expected


@pytest.mark.parametrize(
    ("write_key", "expected"),
    [
        pytest.param("9zqMXTmnz3BcTnMyOqMb2XFz4ZPbOjKJ", True, id="segment-style"),
        pytest.param("wk_test-1", True, id="underscore-dash"),
        pytest.param("a" * 128, True, id="max-length"),
        pytest.param("a" * 129, False, id="too-long"),
        pytest.param("", False, id="empty"),
        pytest.param("a/b", False, id="slash"),
        pytest.param("{wk}", False, id="redis-hash-tag"),
        pytest.param("..", False, id="dots"),
        pytest.param("wk key", False, id="space"),
        pytest.param("wké", False, id="non-ascii"),
    ],
)
def test_valid_write_key(write_key: str, expected: bool) -> None:
    """Only URL-safe tokens of 1–128 characters can be write keys."""
    assert http.valid_write_key(write_key) is expected


def test_bundle_blocks_and_not_modified() -> None:
    """The 200s differ only in coding and length (the identity's derived from the gzip's);
    a 304 keeps only ETag, Cache-Control, Vary and the CORS grant of the 200's headers. The
    lines every bundle shares are held once (shared_blocks)."""
    gzipped, not_modified = http.bundle_blocks(
        write_key="wk", version=3, etag=ETAG, published_at=1_700_000_000, gzip_length=10)
    shared_200, shared_304 = http.shared_blocks("public, max-age=1")
    identity = http.identity_lines(gzipped, 25)
    common = [
        (b"etag", b'"abc123"'),
        (b"last-modified", b"Tue, 14 Nov 2023 22:13:20 GMT"),
        (b"surrogate-key", b"wk"),
        (b"x-settings-version", b"3"),
        (b"cache-control", b"public, max-age=1"),
        (b"vary", b"Accept-Encoding"),
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", http.EXPOSE),
    ]

    assert http.header_list(gzipped + shared_200) == [
        (b"content-type", b"application/json"),
        (b"content-encoding", b"gzip"),
        (b"content-length", b"10"),
        *common,
    ]
    assert http.header_list(identity + shared_200) == [
        (b"content-type", b"application/json"), (b"content-length", b"25"), *common]
    assert http.header_list(not_modified + shared_304) == [
        (name, value) for name, value in http.header_list(identity + shared_200)
        if name in http.NOT_MODIFIED_KEEP
    ]
    assert http.header_block(http.header_list(gzipped)) == gzipped


def test_gunzip_takes_one_whole_stream_within_the_limit() -> None:
    """The identity body comes from the stored gzip bytes: anything but one complete gzip
    stream of at most ``limit`` bytes is refused, never served in part."""
    body = b'{"integrations":{}}' * 10
    packed = gzip.compress(body, mtime=0)

    assert http.gunzip(packed) == body
    assert http.gunzip(packed, limit=len(body)) == body
    for bad in (b"", body, packed[:-4], packed + b"x", packed + packed):
        with pytest.raises(ValueError):
            http.gunzip(bad)
    with pytest.raises(ValueError, match="larger than"):
        http.gunzip(packed, limit=len(body) - 1)


@pytest.mark.parametrize(
    ("requested", "echoed"),
    [
        pytest.param(None, None, id="none-requested"),
        pytest.param("content-type, x-foo", b"content-type, x-foo", id="token-list"),
        pytest.param("bad header\r\n", None, id="not-a-token-list"),
    ],
)
def test_preflight_headers(requested: str | None, echoed: bytes | None) -> None:
    """A preflight grants any origin and our methods, echoing only well-formed header lists."""
    headers = dict(http.preflight_headers(requested))

    assert headers[b"access-control-allow-origin"] == b"*"
    assert headers[b"access-control-allow-methods"] == b"GET, HEAD, OPTIONS"
    assert headers.get(b"access-control-allow-headers") == echoed


def test_cache_control_names_every_lifetime() -> None:
    """The 200's Cache-Control carries the four lifetimes in a fixed order."""
    assert http.cache_control(60, 300, 30, 86400) == (
        "public, max-age=60, s-maxage=300, stale-while-revalidate=30, stale-if-error=86400"
    )
