"""The edge app through TestClient against a real redis-server: headers asserted exactly."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import orjson
import pytest
import redis
from starlette.testclient import TestClient

from edge import http, keyspace
from edge.answer import scan
from edge.app import create_app
from edge.keyspace import Envelope
from edge.propagation import BudgetExceeded
from edge.settings import EdgeSettings
from tests.edge.helpers import ManualClock, document, publish
from tests.services import free_port

URL = "/v1/projects/wk1/settings"
CACHE_CONTROL = (
    "public, max-age=60, s-maxage=300, stale-while-revalidate=60, stale-if-error=86400"
)


@pytest.fixture
def bundle(redis_client: redis.Redis) -> Envelope:
    return publish(redis_client, "wk1", document("wk1", Amplitude={"apiKey": "a"}), version=7)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client(redis_url: str, clock: ManualClock) -> Iterator[TestClient]:
    with TestClient(create_app(EdgeSettings(redis_url=redis_url), clock=clock)) as c:
        yield c


def expected_200(env: Envelope, *, gzipped: bool, age: str = "0") -> list[tuple[str, str]]:
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(env.gzip if gzipped else env.json))),
        ("etag", env.etag),
        ("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("surrogate-key", "wk1"),
        ("x-settings-version", "7"),
        ("cache-control", CACHE_CONTROL),
        ("vary", "Accept-Encoding"),
        ("access-control-allow-origin", "*"),
        ("access-control-expose-headers", "ETag, Age, X-Settings-Version, X-Settings-Stale"),
        ("age", age),
    ]
    if gzipped:
        headers.insert(1, ("content-encoding", "gzip"))
    return headers


def test_get_identity(client: TestClient, bundle: Envelope) -> None:
    """A GET without gzip gets the published JSON bytes exactly (the edge reads only the gzip
    bytes from Redis and inflates them once), with every header."""
    reply = client.get(URL, headers={"accept-encoding": "identity"})

    assert reply.status_code == 200
    assert reply.headers.multi_items() == expected_200(bundle, gzipped=False)
    assert reply.content == bundle.json


def test_a_broken_gzip_stream_is_a_503_for_identity_never_a_partial_body(
    client: TestClient, bundle: Envelope, redis_client: redis.Redis
) -> None:
    """A store whose gzip bytes do not inflate cannot give an uncompressed answer: 503, no
    part of it; the same bytes still go, as they are, to clients that accept gzip."""
    broken = bundle.gzip[:-8]  # no trailer: CRC and length missing
    redis_client.hset(keyspace.version_key("wk1", 7), keyspace.F_GZIP, broken)

    plain = client.get(URL, headers={"accept-encoding": "identity"})
    with client.stream("GET", URL, headers={"accept-encoding": "gzip"}) as packed:
        raw = b"".join(packed.iter_raw())

    assert plain.status_code == 503
    assert plain.content == http.UNAVAILABLE_BODY
    assert plain.headers["cache-control"] == "no-store"
    assert packed.status_code == 200 and raw == broken


def test_get_gzip(client: TestClient, bundle: Envelope) -> None:
    """A GET accepting gzip gets the stored gzip bytes, which decompress to the stored JSON."""
    with client.stream("GET", URL, headers={"accept-encoding": "gzip, deflate, br"}) as reply:
        raw = b"".join(reply.iter_raw())

    assert reply.status_code == 200
    assert reply.headers.multi_items() == expected_200(bundle, gzipped=True)
    assert raw == bundle.gzip
    assert gzip.decompress(raw) == bundle.json
    assert orjson.loads(raw and gzip.decompress(raw))["integrations"]["Amplitude"] == {
        "apiKey": "a"}


def test_head_has_get_headers_and_no_body(client: TestClient, bundle: Envelope) -> None:
    """HEAD answers with the GET headers (same Content-Length) and an empty body."""
    reply = client.head(URL, headers={"accept-encoding": "identity"})

    assert reply.status_code == 200
    assert reply.headers.multi_items() == expected_200(bundle, gzipped=False)
    assert reply.content == b""


def test_age_counts_from_last_verification(
    client: TestClient, bundle: Envelope, clock: ManualClock
) -> None:
    """Age is the whole seconds (rounded up) since the edge last verified its copy."""
    client.get(URL)
    clock.advance(12.3)

    reply = client.get(URL)

    assert reply.headers["age"] == "13"


@pytest.mark.parametrize(
    "if_none_match",
    [
        pytest.param("{etag}", id="exact"),
        pytest.param("W/{etag}", id="weak"),
        pytest.param('"nope", {etag}', id="list"),
        pytest.param("*", id="star"),
    ],
)
def test_conditional_get_304(client: TestClient, bundle: Envelope, if_none_match: str) -> None:
    """A matching If-None-Match gets 304 with only the headers a 304 keeps."""
    reply = client.get(URL, headers={"if-none-match": if_none_match.format(etag=bundle.etag),
                                     "accept-encoding": "gzip"})

    assert reply.status_code == 304
    assert reply.headers.multi_items() == [
        ("etag", bundle.etag),
        ("cache-control", CACHE_CONTROL),
        ("vary", "Accept-Encoding"),
        ("access-control-allow-origin", "*"),
        ("age", "0"),
    ]
    assert reply.content == b""


def test_head_conditional_304(client: TestClient, bundle: Envelope) -> None:
    """HEAD with a matching If-None-Match also gets 304."""
    assert client.head(URL, headers={"if-none-match": bundle.etag}).status_code == 304


def test_non_matching_etag_gets_200(client: TestClient, bundle: Envelope) -> None:
    """A stale If-None-Match gets the full 200."""
    reply = client.get(URL, headers={"if-none-match": '"old"', "accept-encoding": "identity"})

    assert reply.status_code == 200
    assert reply.content == bundle.json


@pytest.mark.parametrize(
    ("since", "status"),
    [
        pytest.param("Tue, 14 Nov 2023 22:13:20 GMT", 304, id="same"),
        pytest.param("Tue, 14 Nov 2023 22:13:19 GMT", 200, id="older"),
    ],
)
def test_if_modified_since(client: TestClient, bundle: Envelope, since: str, status: int) -> None:
    """Without If-None-Match, If-Modified-Since against the publish time decides 304."""
    assert client.get(URL, headers={"if-modified-since": since}).status_code == status


def test_if_none_match_wins_over_if_modified_since(client: TestClient, bundle: Envelope) -> None:
    """If-Modified-Since is ignored when If-None-Match is present (RFC 9110 §13.1.3)."""
    reply = client.get(URL, headers={"if-none-match": '"old"',
                                     "if-modified-since": "Tue, 14 Nov 2030 22:13:20 GMT"})

    assert reply.status_code == 200


def test_unknown_write_key_404(client: TestClient) -> None:
    """An unknown write key gets the Segment 404 text, short-cached, readable cross-origin."""
    reply = client.get("/v1/projects/unknownkey/settings")

    assert reply.status_code == 404
    assert reply.headers.multi_items() == [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", "48"),
        ("cache-control", "public, max-age=10"),
        ("access-control-allow-origin", "*"),
        ("age", "0"),
    ]
    assert reply.text == "Cannot GET - Invalid path or write key provided."


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/projects/a%7Bb%7D/settings", id="hash-tag-braces"),
        pytest.param("/v1/projects/" + "k" * 129 + "/settings", id="too-long"),
        pytest.param("/v1/projects/a%2Fb/settings", id="encoded-slash"),
        pytest.param("/v1/projects/a/b/settings", id="extra-segment"),
        pytest.param("/v1/projects//settings", id="empty"),
    ],
)
def test_impossible_write_key_404_without_redis(path: str) -> None:
    """A write key that cannot be valid gets the 404 even with no Redis at all."""
    settings = EdgeSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as client:
        reply = client.get(path)
        assert client.get("/v1/projects/plausible/settings").status_code == 503  # Redis is gone

    assert reply.status_code == 404
    assert reply.text == http.NOT_FOUND_BODY.decode()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/", id="root"),
        pytest.param("/v1/projects/wk1/settings/", id="trailing-slash"),
        pytest.param("/v1/projects/wk1", id="no-settings"),
        pytest.param("/v2/projects/wk1/settings", id="other-version"),
    ],
)
def test_other_paths_404(client: TestClient, bundle: Envelope, path: str) -> None:
    """Any other path is 404."""
    assert client.get(path).status_code == 404


def test_cors_preflight(client: TestClient) -> None:
    """A CORS preflight gets 204 granting any origin, our methods and the asked headers, and
    no Content-Length (RFC 9110 §8.6: not in a 204)."""
    reply = client.options(URL, headers={
        "origin": "https://shop.example", "access-control-request-method": "GET",
        "access-control-request-headers": "if-none-match"})

    assert reply.status_code == 204
    assert reply.headers.multi_items() == [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, HEAD, OPTIONS"),
        ("access-control-allow-headers", "if-none-match"),
        ("access-control-max-age", "86400"),
        ("allow", "GET, HEAD, OPTIONS"),
        ("vary", "Access-Control-Request-Headers"),
    ]


def test_other_methods_405(client: TestClient) -> None:
    """Methods other than GET, HEAD and OPTIONS get 405 with Allow."""
    reply = client.post(URL, content=b"{}")

    assert reply.status_code == 405
    assert reply.headers["allow"] == "GET, HEAD, OPTIONS"


def test_healthz(client: TestClient) -> None:
    """/healthz says the process is alive."""
    reply = client.get("/healthz")

    assert (reply.status_code, reply.text) == (200, "ok")


def test_readyz_when_redis_reachable(client: TestClient, bundle: Envelope) -> None:
    """/readyz is 200 and says Redis is up and how many bundles are held."""
    client.get(URL)

    reply = client.get("/readyz")

    assert reply.status_code == 200
    body = reply.json()
    assert body["ready"] is True and body["redis"] == "up" and body["bundles"] == 1
    assert body["stale_bundles"] == 0


def test_readyz_when_redis_never_reached() -> None:
    """/readyz is 503 when Redis was never reached and no bundle is held."""
    settings = EdgeSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as client:
        reply = client.get("/readyz")

    assert reply.status_code == 503
    assert reply.json()["ready"] is False
    assert reply.json()["reason"] == "redis never reached, nothing held"


def test_metrics(client: TestClient, bundle: Envelope) -> None:
    """/metrics counts requests by status, cache hits and misses and held versions."""
    client.get(URL)
    client.get(URL)
    client.get(URL, headers={"if-none-match": bundle.etag})
    client.get("/v1/projects/zzz/settings")

    reply = client.get("/metrics")

    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = set(reply.text.splitlines())
    assert 'edge_http_requests_total{route="settings",status="200"} 2' in lines
    assert 'edge_http_requests_total{route="settings",status="304"} 1' in lines
    assert 'edge_http_requests_total{route="settings",status="404"} 1' in lines
    assert "edge_cache_hits_total 2" in lines
    assert "edge_cache_misses_total 2" in lines
    assert 'edge_bundle_version{write_key="wk1"} 7' in lines
    assert "edge_redis_up 1" in lines


def test_propagation_endpoint(client: TestClient) -> None:
    """GET /v1/propagation returns the effective policy with the worst case."""
    reply = client.get("/v1/propagation")

    assert reply.status_code == 200
    body = reply.json()
    assert body["worst_case_seconds"] == 513
    assert body["budget_seconds"] == 1800
    assert body["lifetimes"]["s_maxage"] == 300


def test_create_app_refuses_lifetimes_over_budget() -> None:
    """create_app raises when the worst case exceeds the budget."""
    with pytest.raises(BudgetExceeded, match="EDGE_S_MAXAGE=5000"):
        create_app(EdgeSettings(s_maxage=5000))


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param([(b"accept-encoding", b"gzip"), (b"if-none-match", b'"a"')],
                 (b"gzip", b'"a"', None, True), id="once-each"),
    pytest.param([(b"if-none-match", b'"a"'), (b"accept-encoding", b"br"),
                  (b"if-none-match", b'"b"'), (b"content-length", b"0"),
                  (b"if-none-match", b'"c"'), (b"accept-encoding", b"gzip")],
                 (b"br,gzip", b'"a","b","c"', None, False), id="repeats-joined-in-order"),
    pytest.param([(b"if-modified-since", b"x"), (b"if-modified-since", b"y")],
                 (None, None, b"x,y", True), id="two-dates-joined"),
    pytest.param([(b"accept-encoding", b"identity")] * 3 + [(b"expect", b"100-continue")],
                 (b"identity,identity,identity", None, None, False), id="not-plain-after-repeats"),
])
def test_scan_joins_repeated_fields(headers: list[tuple[bytes, bytes]],
                                    expected: tuple[object, ...]) -> None:
    """Repeated Accept-Encoding / If-None-Match / If-Modified-Since are joined with commas in
    their order (RFC 9110 §5.3), whichever repeats first, and a body header anywhere makes the
    request not plain."""
    assert scan(headers) == expected


def test_many_repeated_conditions_are_one_list() -> None:
    """20,000 repeated If-None-Match members all reach the joined field, in order. (Its
    speed, which this does not time: joined once, 3 ms, where joining them as they came took
    108 ms — measured by hand, commit 2ea95c4.)"""
    headers = [(b"if-none-match", b'"%d"' % n) for n in range(20_000)]

    _, if_none_match, _, plain = scan(headers)

    assert if_none_match is not None and plain
    assert if_none_match.split(b",")[12_345] == b'"12345"'
