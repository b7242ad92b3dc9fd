"""Every error status of the Config API, with the body ``{"error", "code", "reason"}``, and
the promise behind them: a refused request changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from publisher.api.app import create_app
from publisher.api.auth import create_token
from publisher.service import Service
from publisher.settings import PublisherSettings
from tests.publisher.api.conftest import SRC, WS, Api
from tests.publisher.workspaces import NOW, Clock

DEST = SRC + "/destinations/amplitude"
FILTERS = DEST + "/filters"
FILTER = {"if": "event = 'x'", "actions": [{"type": "drop_event"}], "title": "t"}
DEEP: Any = "x"  # an object nested 300 levels: past the settings' bound and orjson's (254)
for _ in range(300):
    DEEP = {"a": DEEP}
NEW_DEST = {"destination": {"slug": "mixpanel", "connection_mode": "CLOUD", "display_name": "Mix"}}

# (method, path, body) of every write endpoint; {fid} is filled in by the fixture.
WRITES = [
    pytest.param("POST", WS + "/sources", {"source": {"slug": "x", "type": "web"}},
                 id="create-source"),
    pytest.param("DELETE", SRC, None, id="delete-source"),
    pytest.param("POST", SRC + "/rollback", {"version": 1}, id="rollback"),
    pytest.param("POST", SRC + "/destinations", NEW_DEST, id="create-destination"),
    pytest.param("PATCH", DEST, {"destination": {"enabled": True},
                                 "update_mask": {"paths": ["enabled"]}},
                 id="update-destination"),
    pytest.param("DELETE", DEST, None, id="delete-destination"),
    pytest.param("POST", FILTERS, {"filter": FILTER}, id="create-filter"),
    pytest.param("PATCH", FILTERS + "/{fid}", {"filter": {"title": "u"},
                                              "update_mask": {"paths": ["title"]}},
                 id="update-filter"),
    pytest.param("DELETE", FILTERS + "/{fid}", None, id="delete-filter"),
]
READS = [
    pytest.param(WS, id="workspace"),
    pytest.param(WS + "/sources", id="sources"),
    pytest.param(SRC, id="source"),
    pytest.param(SRC + "/publish", id="publish-status"),
    pytest.param(SRC + "/versions", id="versions"),
    pytest.param(SRC + "/destinations", id="destinations"),
    pytest.param(DEST, id="destination"),
    pytest.param(FILTERS, id="filters"),
    pytest.param(FILTERS + "/{fid}", id="filter"),
]


@pytest.fixture
def fid(writer: Api, site: dict[str, Any]) -> str:
    """acme/site with an Amplitude instance carrying one filter; returns the filter id."""
    status, _ = writer.call("POST", SRC + "/destinations", {"destination": {
        "slug": "amplitude", "connection_mode": "CLOUD"}})
    assert status == 200
    status, body = writer.call("POST", FILTERS, {"filter": FILTER})
    assert status == 200
    return body["filter"]["id"]  # type: ignore[no-any-return]


def snapshot(writer: Api) -> Any:
    """Everything a write could change: sources, destinations with filters, publish status."""
    sources = writer.call("GET", WS + "/sources")[1]
    out = [sources]
    for src in sources["sources"]:
        base = "/v1beta/" + src["name"]
        out.append(writer.call("GET", base + "/publish")[1])
        dests = writer.call("GET", base + "/destinations")[1]
        out.append(dests)
        for d in dests["destinations"]:
            out.append(writer.call("GET", "/v1beta/" + d["name"] + "/filters")[1])
    return out


def assert_error(status: int, body: Any, http: int, code: int) -> None:
    assert status == http, body
    assert set(body) == {"error", "code", "reason"}
    assert body["code"] == code and body["error"]


@pytest.mark.parametrize("header", [
    pytest.param(None, id="missing"),
    pytest.param("Basic dXNlcjpwYXNz", id="wrong-scheme"),
    pytest.param("Bearer", id="empty-token"),
    pytest.param("Bearer sct_not-a-real-token", id="unknown-token"),
    pytest.param("Bearer " + "x" * 5000, id="huge-token"),
])
def test_unauthenticated(client: TestClient, header: str | None) -> None:
    """A missing, malformed or unknown token is 401/16 with a Bearer challenge."""
    headers = {"Authorization": header} if header is not None else {}

    resp = client.get(WS + "/sources", headers=headers)

    assert_error(resp.status_code, resp.json(), 401, 16)
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_read_token_refused_on_writes(reader: Api, writer: Api, fid: str, method: str,
                                      path: str, body: Any) -> None:
    """A read-scope token gets 403/7 on every write endpoint, and nothing changes."""
    before = snapshot(writer)

    status, resp = reader.call(method, path.format(fid=fid), body)

    assert_error(status, resp, 403, 7)
    assert "write scope" in resp["error"]
    assert snapshot(writer) == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_other_workspace_cannot_write(outsider: Api, writer: Api, fid: str, method: str,
                                      path: str, body: Any) -> None:
    """Another workspace's write token gets 404 on every write, exactly as for a missing
    workspace, and nothing changes."""
    before = snapshot(writer)

    status, resp = outsider.call(method, path.format(fid=fid), body)
    missing = outsider.call(method, path.format(fid=fid).replace("/acme", "/nope"), body)

    assert_error(status, resp, 404, 5)
    assert resp["error"] == missing[1]["error"].replace("nope", "acme")
    assert snapshot(writer) == before


@pytest.mark.parametrize("path", READS)
def test_other_workspace_cannot_read(outsider: Api, reader: Api, fid: str, path: str) -> None:
    """Another workspace's token gets 404 on every read of this workspace's resources."""
    assert reader.call("GET", path.format(fid=fid))[0] == 200

    status, resp = outsider.call("GET", path.format(fid=fid))

    assert_error(status, resp, 404, 5)
    assert "'acme'" in resp["error"]


@pytest.mark.parametrize("path", [
    pytest.param(WS + "/sources/nope", id="source"),
    pytest.param(SRC + "/destinations/nope", id="destination"),
    pytest.param(FILTERS + "/df_nope", id="filter"),
    pytest.param("/v1beta/catalog/destinations/no-such-thing", id="catalog"),
    pytest.param("/v1beta/nothing/here", id="no-route"),
    pytest.param(WS + "/sources/..%2f..%2fother", id="encoded-dot-dot"),
    pytest.param(WS + "/sources/%00", id="nul"),
    pytest.param(WS + "/sources/" + "a" * 3000, id="long-segment"),
])
def test_not_found(reader: Api, fid: str, path: str) -> None:
    """Unknown resources and paths are 404/5 with the JSON error body."""
    status, body = reader.call("GET", path)

    assert_error(status, body, 404, 5)


def test_unsupported_method(reader: Api) -> None:
    """A method a path does not support is 405 with code 12 (unimplemented)."""
    status, body = reader.call("PUT", WS + "/sources")

    assert_error(status, body, 405, 12)


@pytest.mark.parametrize(("path", "body", "reason"), [
    pytest.param(WS + "/sources", {"source": {"slug": "site", "type": "ios"}},
                 "already_exists", id="source-slug"),
    pytest.param(SRC + "/destinations", {"destination": {
        "slug": "mixpanel", "connection_mode": "CLOUD", "display_name": " AMPLITUDE "}},
        "duplicate_display_name", id="destination-display-name"),
    pytest.param(FILTERS, {"filter": {**FILTER, "if": "event = 'y'"}}, "duplicate_title",
                 id="filter-title"),
])
def test_duplicate_names_conflict(writer: Api, fid: str, path: str, body: Any,
                                  reason: str) -> None:
    """Creating a resource whose name is taken is 409/6, and nothing changes."""
    before = snapshot(writer)

    status, resp = writer.call("POST", path, body)

    assert_error(status, resp, 409, 6)
    assert resp["reason"] == reason
    assert snapshot(writer) == before


def test_retitling_a_filter_onto_a_taken_title_conflicts(writer: Api, fid: str) -> None:
    """A filter renamed to a sibling's title is 409/6, and nothing changes."""
    status, _ = writer.call("POST", FILTERS, {"filter": {**FILTER, "title": "u"}})
    assert status == 200
    before = snapshot(writer)

    status, resp = writer.call("PATCH", f"{FILTERS}/{fid}", {
        "filter": {"title": "u"}, "update_mask": {"paths": ["filter.title"]}})

    assert_error(status, resp, 409, 6)
    assert resp["reason"] == "duplicate_title" and "'u'" in resp["error"]
    assert snapshot(writer) == before


def test_new_destination_with_two_filters_of_one_title_conflicts(writer: Api, fid: str) -> None:
    """A destination created with two filters of one title is 409/6, and nothing changes."""
    before = snapshot(writer)

    status, resp = writer.call("POST", SRC + "/destinations", {"destination": {
        **NEW_DEST["destination"], "filters": [FILTER, {**FILTER, "if": "event = 'y'"}]}})

    assert_error(status, resp, 409, 6)
    assert resp["reason"] == "duplicate_title"
    assert snapshot(writer) == before


@pytest.mark.parametrize(("method", "path", "body", "named"), [
    pytest.param("POST", FILTERS, {"filter": {**FILTER, "title": "a\u0000b"}},
                 "title must not contain control characters, got U+0000 at position 1",
                 id="nul-in-filter-title"),
    pytest.param("POST", FILTERS, {"filter": {**FILTER, "title": "two\nlines"}},
                 "title must not contain control characters, got U+000A", id="newline-in-title"),
    pytest.param("POST", FILTERS, {"filter": {**FILTER, "description": "x\u001by"}},
                 "description must not contain control characters, got U+001B",
                 id="escape-in-description"),
    pytest.param("PATCH", DEST, {
        "destination": {"display_name": "amp\u007f"}, "update_mask": {"paths": ["display_name"]}},
        "display name must not contain control characters, got U+007F", id="del-in-display-name"),
    pytest.param("POST", WS + "/sources", {"source": {"slug": "x", "type": "web",
                                                     "display_name": "x\ty"}},
                 "source display name must not contain control characters, got U+0009",
                 id="tab-in-source-name"),
])
def test_control_characters_in_names_are_refused(writer: Api, fid: str, method: str, path: str,
                                                 body: Any, named: str) -> None:
    """A name, display name or title is one line of text, a description may break lines:
    other control characters (NUL included, which JSON allows) are 400 naming the field and
    the character, and nothing changes."""
    before = snapshot(writer)

    status, resp = writer.call(method, path, body)

    assert_error(status, resp, 400, 3)
    assert resp["reason"] == "invalid_text" and named in resp["error"], resp
    assert snapshot(writer) == before


def test_a_description_may_break_lines(writer: Api, fid: str) -> None:
    """Tabs and line breaks in a filter description are kept."""
    status, resp = writer.call("POST", FILTERS, {"filter": {
        **FILTER, "title": "multi", "description": "first\r\n\tsecond"}})

    assert status == 200, resp
    assert resp["filter"]["description"] == "first\r\n\tsecond"


@pytest.mark.parametrize("raw", [
    pytest.param(b'{"filter": {"title": "a", "title": "b"}, "update_mask": {"paths": '
                 b'["filter.title"]}}', id="in-the-resource"),
    pytest.param(b'{"filter": {"title": "a"}, "update_mask": {"paths": ["filter.title"]}, '
                 b'"update_mask": {"paths": []}}', id="at-the-top"),
])
def test_a_key_named_twice_is_refused(writer: Api, fid: str, raw: bytes) -> None:
    """A body whose object names one key twice is 400 duplicate_key naming it, not the last
    value taken silently, and nothing changes."""
    before = snapshot(writer)

    status, resp = writer.call("PATCH", f"{FILTERS}/{fid}", content=raw,
                               headers={"Content-Type": "application/json"})

    assert_error(status, resp, 400, 3)
    assert resp["reason"] == "duplicate_key" and "twice in one object" in resp["error"]
    assert snapshot(writer) == before


@pytest.mark.parametrize("page_size", ["²", "５", "0", "-1", "1.5", "x", "1001"])
def test_bad_page_size(reader: Api, page_size: str) -> None:
    """A page_size that is not an ASCII whole number from 1 to the maximum is 400 naming it
    (never a 500, never read as another number)."""
    status, resp = reader.call("GET", "/v1beta/catalog/destinations?"
                               + urlencode({"page_size": page_size}))

    assert_error(status, resp, 400, 3)
    assert "page_size must be a whole number" in resp["error"]


def test_rename_onto_a_taken_display_name_conflicts(writer: Api, fid: str) -> None:
    """Renaming an instance to another instance's display name is 409/6."""
    writer.call("POST", SRC + "/destinations", NEW_DEST)

    status, resp = writer.call("PATCH", SRC + "/destinations/mix", {
        "destination": {"display_name": "amplitude"}, "update_mask": {"paths": ["display_name"]}})

    assert_error(status, resp, 409, 6)


def test_body_over_the_limit(writer: Api, client: TestClient, fid: str,
                             settings: PublisherSettings) -> None:
    """A body over PUBLISHER_MAX_BODY_BYTES is 413, whether declared, lied about or chunked."""
    big = b'{"filter": {"title": "' + b"x" * settings.max_body_bytes + b'"}}'
    auth = {"Authorization": f"Bearer {writer.token}", "Content-Type": "application/json"}
    before = snapshot(writer)

    def chunks() -> Iterator[bytes]:
        for n in range(0, len(big), 4096):
            yield big[n:n + 4096]

    declared = client.post(FILTERS, content=big, headers=auth)
    lying = client.post(FILTERS, content=big, headers={**auth, "Content-Length": "10"})
    chunked = client.post(FILTERS, content=chunks(), headers=auth)

    for resp in (declared, lying, chunked):
        assert_error(resp.status_code, resp.json(), 413, 3)
        assert "PUBLISHER_MAX_BODY_BYTES" in resp.json()["error"]
    assert snapshot(writer) == before


@pytest.mark.parametrize(("path", "body", "names"), [
    pytest.param(WS + "/sources", {"source": {"slug": "x", "type": "web", "colour": 1}},
                 "source.colour", id="unknown-source-field"),
    pytest.param(WS + "/sources", {"source": {"slug": "x", "type": 7}}, "source.type",
                 id="wrong-type"),
    pytest.param(WS + "/sources", {"src": {}}, "src", id="unknown-top-field"),
    pytest.param(WS + "/sources", {"source": {"slug": "Bad Slug", "type": "web"}}, "slug",
                 id="bad-slug"),
    pytest.param(SRC + "/destinations", {"destination": {"slug": "amplitude"}},
                 "destination.connection_mode", id="missing-mode"),
    pytest.param(SRC + "/destinations", {"destination": {
        "slug": "amplitude", "connection_mode": "CLOUD", "display_name": "B",
        "config": [{"name": "apiKey", "value": 5}]}}, "apiKey", id="wrong-setting-type"),
    pytest.param(SRC + "/destinations", {"destination": {
        "slug": "amplitude", "connection_mode": "CLOUD", "display_name": "B",
        "config": [{"name": "nope", "value": "x"}]}}, "nope", id="unknown-setting"),
    pytest.param(SRC + "/destinations", {"destination": {
        "slug": "amplitude", "connection_mode": "CLOUD", "display_name": "B", "enabled": True}},
        "apiKey", id="missing-required-setting-when-enabled"),
    pytest.param(SRC + "/destinations", {"destination": {
        "slug": "no-such-destination", "connection_mode": "CLOUD"}}, "no-such-destination",
        id="unknown-catalog-destination"),
    pytest.param(FILTERS, {"filter": {**FILTER, "if": "event = = 'x'"}}, "position",
                 id="fql-syntax-position"),
    pytest.param(FILTERS, {"filter": {**FILTER, "actions": [{"type": "explode"}]}}, "explode",
                 id="unknown-action"),
    pytest.param(FILTERS, {"filter": {**FILTER, "extra": 1}}, "extra",
                 id="unknown-filter-field"),
    pytest.param(SRC + "/rollback", {"version": True}, "version", id="boolean-version"),
    pytest.param(SRC + "/rollback", {"version": 1e30}, "version must be a whole number, got "
                 "number 1e+30", id="huge-version-names-the-number"),
    pytest.param(SRC + "/destinations", {"destination": {
        "slug": "amplitude", "connection_mode": "CLOUD", "display_name": "B",
        "config": [{"name": "mapQueryParams", "value": DEEP}]}},
        "setting 'mapQueryParams' of Amplitude (destination 'B') nests arrays and objects more "
        "than 32 levels deep", id="deeply-nested-setting"),
    pytest.param(FILTERS, {"filter": {**FILTER, "if": "a = " + "9" * 5000}}, "out of range",
                 id="fql-number-past-int-limit"),
    pytest.param(FILTERS, {"filter": {**FILTER, "if": "a = 1" + "0" * 400 + ".5"}},
                 "out of range", id="fql-number-past-float-range"),
    pytest.param(FILTERS, {"filter": {**FILTER, "title": 3}},
                 "filter.title must be a string, got number", id="filter-title-type"),
])
def test_invalid_argument_names_the_field(writer: Api, fid: str, path: str, body: Any,
                                          names: str) -> None:
    """Wrong types, unknown fields and bad values are 400/3 naming the field, changing nothing."""
    before = snapshot(writer)

    status, resp = writer.call("POST", path, body)

    assert_error(status, resp, 400, 3)
    assert names in resp["error"]
    assert snapshot(writer) == before


@pytest.mark.parametrize(("body", "names"), [
    pytest.param({"destination": {"enabled": True}}, "update_mask", id="no-mask"),
    pytest.param({"destination": {}, "update_mask": {"paths": ["destination.slug"]}},
                 "destination.slug", id="immutable-path"),
    pytest.param({"destination": {"enabled": "yes"}, "update_mask": {"paths": ["enabled"]}},
                 "destination.enabled", id="wrong-type"),
    pytest.param({"destination": {"enabled": True}, "update_mask": {"paths": "enabled"}},
                 "update_mask.paths", id="paths-not-array"),
    pytest.param({"destination": {"config": [{"name": "mapQueryParams", "value": DEEP}]},
                  "update_mask": {"paths": ["destination.config"]}},
                 "nests arrays and objects more than 32 levels deep", id="deeply-nested-setting"),
])
def test_bad_update_mask(writer: Api, fid: str, body: Any, names: str) -> None:
    """A PATCH without a usable update_mask, or with a wrongly typed field, is 400 and changes
    nothing."""
    before = snapshot(writer)

    status, resp = writer.call("PATCH", DEST, body)

    assert_error(status, resp, 400, 3)
    assert names in resp["error"]
    assert snapshot(writer) == before


@pytest.mark.parametrize(("body", "names"), [
    pytest.param({"filter": {"title": "new", "enabled": "yes"},
                  "update_mask": {"paths": ["filter.title"]}},
                 "filter.enabled must be true or false, got string", id="enabled-outside-mask"),
    pytest.param({"filter": {"title": "new", "actions": {"type": "drop_event"}},
                  "update_mask": {"paths": ["title"]}},
                 "filter.actions must be an array, got object", id="actions-outside-mask"),
    pytest.param({"filter": {"if": 3}, "update_mask": {"paths": ["filter.if"]}},
                 "filter.if must be a string, got number", id="if-in-mask"),
])
def test_patch_filter_type_checks_every_field(writer: Api, fid: str, body: Any,
                                              names: str) -> None:
    """PATCH filter type-checks the fields outside update_mask too (as PATCH destination
    does): a wrongly typed field is a 400 naming it, and nothing changes. Before, a field
    outside the mask was accepted whatever its type."""
    before = snapshot(writer)

    status, resp = writer.call("PATCH", f"{FILTERS}/{fid}", body)

    assert_error(status, resp, 400, 3)
    assert names in resp["error"]
    assert snapshot(writer) == before


def test_eleventh_filter_is_refused(writer: Api, fid: str) -> None:
    """A destination holds at most 10 filters; the 11th is 400 and changes nothing."""
    for n in range(9):
        status, _ = writer.call("POST", FILTERS, {"filter": {**FILTER, "title": f"f{n}"}})
        assert status == 200
    before = snapshot(writer)

    status, resp = writer.call("POST", FILTERS, {"filter": {**FILTER, "title": "f10"}})

    assert_error(status, resp, 400, 3)
    assert resp["reason"] == "too_many_filters"
    assert snapshot(writer) == before


HOSTILE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"[]", id="array"),
    pytest.param(b"null", id="null"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"12", id="number"),
    pytest.param(b'{"filter": null, "destination": null, "source": null, "version": null}',
                 id="nulls"),
    pytest.param(b'{"version": 123456789012345678901234567890}', id="huge-int"),
    pytest.param(b'{"version": 18446744073709551615}', id="u64-int"),
    pytest.param(b'{"version": 1e999}', id="infinite-float"),
    pytest.param(b'{"destination": {"slug": "amplitude", "connection_mode": "CLOUD", '
                 b'"display_name": "Z", "config": [{"name": "apiKey", '
                 b'"value": 18446744073709551615}]}}', id="huge-setting-value"),
    pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
    pytest.param(b'{"a":' * 500 + b"1" + b"}" * 500, id="deep-objects"),
    pytest.param(b'{"filter": "\xff\xfe"}', id="non-utf8"),
    pytest.param(b'{"filter": {"if": "\\ud800", "actions": [], "title": "t"}}',
                 id="lone-surrogate"),
    pytest.param(b'{"destination": {"slug": "amplitude", "connection_mode": "CLOUD", '
                 b'"copy_settings_from": "workspaces/acme/sources/../../x/destinations/a"}}',
                 id="dot-dot-name"),
    pytest.param(b'{"destination": {"slug": "amplitude", "connection_mode": "CLOUD", '
                 b'"name": "workspaces/acme/sources/site/destinations/..%2f"}}',
                 id="encoded-dot-dot-name"),
    pytest.param(b'{"source": {"slug": "x", "type": "web", "name": "/etc/passwd"}}',
                 id="path-name"),
    pytest.param(b'{"filter": {"if": "' + b"(" * 3000 + b'", "actions": [], "title": "t"}}',
                 id="deep-fql"),
    pytest.param(b'{"update_mask": {"paths": [null, 1, {}]}, "destination": []}',
                 id="mask-garbage"),
]


@pytest.mark.parametrize("raw", HOSTILE)
@pytest.mark.parametrize(("method", "path"), [
    pytest.param("POST", WS + "/sources", id="sources"),
    pytest.param("POST", SRC + "/rollback", id="rollback"),
    pytest.param("POST", SRC + "/destinations", id="destinations"),
    pytest.param("PATCH", DEST, id="destination"),
    pytest.param("POST", FILTERS, id="filters"),
    pytest.param("PATCH", FILTERS + "/{fid}", id="filter"),
])
def test_hostile_bodies_are_4xx(writer: Api, client: TestClient, fid: str, method: str,
                                path: str, raw: bytes) -> None:
    """Hostile bodies get a 4xx naming the problem — never a 500 — and change nothing."""
    before = snapshot(writer)

    resp = client.request(method, path.format(fid=fid), content=raw,
                          headers={"Authorization": f"Bearer {writer.token}",
                                   "Content-Type": "application/json"})

    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["error"]
    assert snapshot(writer) == before


def test_rate_limit_per_token(settings: PublisherSettings, service: Service) -> None:
    """A token over PUBLISHER_RATE_LIMIT requests per minute gets 429/8 with Retry-After;
    other tokens are unaffected, and the allowance comes back as time passes."""
    clock = Clock(NOW)
    app = create_app(PublisherSettings(**{**_fields(settings), "rate_limit": 3}),
                     service=service, clock=clock)
    busy, calm = (create_token(service, "acme", "read", n) for n in ("busy", "calm"))
    with TestClient(app) as client:
        busy_api, calm_api = Api(client, busy), Api(client, calm)
        assert [busy_api.call("GET", WS)[0] for _ in range(3)] == [200, 200, 200]

        status, body = busy_api.call("GET", WS)
        assert_error(status, body, 429, 8)
        assert client.get(WS, headers={"Authorization": f"Bearer {busy}"}).headers[
            "retry-after"] == "20"
        assert calm_api.call("GET", WS)[0] == 200

        clock.now += 20
        assert busy_api.call("GET", WS)[0] == 200
        assert busy_api.call("GET", WS)[0] == 429


def _fields(settings: PublisherSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__slots__}
