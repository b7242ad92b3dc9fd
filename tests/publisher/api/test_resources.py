"""Every Config API endpoint doing its job: workspaces, sources, destinations, filters, catalog,
publish status, versions and rollback."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
import redis

from edge import keyspace
from edge.http import gunzip
from publisher.service import Service
from tests.publisher.api.conftest import SRC, WS, Api


def stored_json(client: redis.Redis, key: str) -> bytes | None:
    """The JSON of a version hash in Redis: its gzip bytes inflated (Redis holds no JSON)."""
    packed = client.hget(key, keyspace.F_GZIP)
    return None if packed is None else gunzip(cast(bytes, packed))

NAME = SRC.removeprefix("/v1beta/")
AMPLITUDE = {"slug": "amplitude", "connection_mode": "DEVICE",
             "config": [{"name": "apiKey", "value": "amp-key"}]}
FILTER = {"if": "type = 'track' and event = 'Secret'", "actions": [{"type": "drop_event"}],
          "title": "No secrets", "description": "drop Secret events"}


def served(redis_client: redis.Redis, write_key: str) -> dict[str, Any]:
    """The bundle Redis serves for the write key (through the shared keyspace)."""
    raw = redis_client.get(keyspace.current_key(write_key))
    assert raw is not None
    version, _ = keyspace.decode_pointer(raw)
    doc = stored_json(redis_client, keyspace.version_key(write_key, version))
    assert doc is not None
    return orjson.loads(doc)  # type: ignore[no-any-return]


def add_amplitude(writer: Api, **extra: Any) -> dict[str, Any]:
    status, body = writer.call("POST", SRC + "/destinations",
                               {"destination": {**AMPLITUDE, **extra}})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def test_a_read_token_sees_secret_settings_masked(writer: Api, reader: Api,
                                                 site: dict[str, Any],
                                                 redis_client: redis.Redis) -> None:
    """Settings the catalog marks secret (Amplitude's secretKey) reach a read token masked,
    the last four characters of a long one kept; a write token, which may replace them, and
    the rest of the settings show their values. The bundle carries no secret either way."""
    add_amplitude(writer, config=[{"name": "apiKey", "value": "amp-key"},
                                  {"name": "secretKey", "value": "sk-live-0123456789"}])
    writer.call("POST", SRC + "/destinations", {"destination": {
        "slug": "mixpanel", "connection_mode": "CLOUD",
        "config": [{"name": "apiKey", "value": "short"}]}})

    def values(api: Api) -> dict[str, dict[str, Any]]:
        status, body = api.call("GET", SRC + "/destinations")
        assert status == 200, body
        return {d["slug"]: {c["name"].rsplit("/", 1)[1]: c["value"] for c in d["config"]}
                for d in body["destinations"]}

    seen, full = values(reader), values(writer)
    one = reader.call("GET", SRC + "/destinations/amplitude")[1]

    assert seen["amplitude"] == {"apiKey": "amp-key", "secretKey": "\u2022" * 8 + "6789"}
    assert seen["mixpanel"] == {"apiKey": "\u2022" * 8}
    assert {c["name"].rsplit("/", 1)[1]: c["value"] for c in one["config"]} \
        == seen["amplitude"]
    assert full["amplitude"]["secretKey"] == "sk-live-0123456789"
    assert full["mixpanel"]["apiKey"] == "short"
    [write_key] = site["source"]["write_keys"]
    assert b"sk-live" not in orjson.dumps(served(redis_client, write_key))


def test_workspaces_show_only_the_tokens_own(reader: Api) -> None:
    """Listing workspaces shows the token's workspace only; getting it returns its name."""
    status, body = reader.call("GET", "/v1beta/workspaces")

    assert status == 200
    assert body == {"workspaces": [{"name": "workspaces/acme", "slug": "acme",
                                    "display_name": "Acme Inc"}], "next_page_token": ""}
    assert reader.call("GET", WS) == (200, body["workspaces"][0])


def test_create_source_returns_write_key_and_first_bundle(writer: Api,
                                                          redis_client: redis.Redis) -> None:
    """Creating a source returns it with its write key and publishes its first bundle."""
    status, body = writer.call("POST", WS + "/sources", {"source": {
        "name": "workspaces/acme/sources/shop", "type": "web", "display_name": "Shop"}})

    assert status == 200, body
    src = body["source"]
    assert src["name"] == "workspaces/acme/sources/shop"
    assert src["type"] == "web" and src["display_name"] == "Shop"
    [write_key] = src["write_keys"]
    assert body["bundle"]["version"] == 1 and body["bundle"]["pending"] is False
    assert body["bundle"]["visible_everywhere_by"]
    assert served(redis_client, write_key)["integrations"]["Segment.io"]["apiKey"] == write_key


def test_list_get_delete_source(writer: Api, site: dict[str, Any],
                                redis_client: redis.Redis) -> None:
    """Sources can be listed, fetched and deleted; deleting removes the served bundle."""
    write_key = site["source"]["write_keys"][0]

    assert writer.call("GET", WS + "/sources") == (200, {"sources": [site["source"]],
                                                        "next_page_token": ""})
    assert writer.call("GET", SRC) == (200, site["source"])
    assert writer.call("DELETE", SRC) == (200, {})

    assert writer.call("GET", SRC)[0] == 404
    assert redis_client.get(keyspace.current_key(write_key)) is None


def test_destination_lifecycle(writer: Api, site: dict[str, Any],
                               redis_client: redis.Redis) -> None:
    """A destination is created disabled (a new revision, but the same bytes: no new version),
    listed, fetched, enabled by PATCH and deleted, each change of the bytes publishing."""
    write_key = site["source"]["write_keys"][0]

    created = add_amplitude(writer)
    dest = created["destination"]
    assert dest["name"] == NAME + "/destinations/amplitude"
    assert dest["enabled"] is False and dest["connection_mode"] == "DEVICE"
    assert dest["display_name"] == "Amplitude"
    assert dest["config"] == [{"name": NAME + "/destinations/amplitude/config/apiKey",
                               "display_name": "API Key", "value": "amp-key",
                               "type": "string"}]
    assert created["bundle"]["version"] == 1 and created["bundle"]["changed"] is False
    assert created["bundle"]["revision"] == 1
    assert "Amplitude" not in served(redis_client, write_key)["integrations"]

    assert writer.call("GET", SRC + "/destinations") == (
        200, {"destinations": [dest], "next_page_token": ""})
    assert writer.call("GET", SRC + "/destinations/amplitude") == (200, dest)

    status, body = writer.call("PATCH", SRC + "/destinations/amplitude", {
        "destination": {"enabled": True, "display_name": "ignored: not in the mask"},
        "update_mask": {"paths": ["destination.enabled"]}})
    assert status == 200, body
    assert body["destination"]["enabled"] is True
    assert body["destination"]["display_name"] == "Amplitude"
    assert body["bundle"]["version"] == 2 and body["bundle"]["revision"] == 2
    assert served(redis_client, write_key)["integrations"]["Amplitude"]["apiKey"] == "amp-key"

    status, body = writer.call("DELETE", SRC + "/destinations/amplitude")
    assert status == 200 and body["bundle"]["version"] == 3
    assert "Amplitude" not in served(redis_client, write_key)["integrations"]
    assert writer.call("GET", SRC + "/destinations/amplitude")[0] == 404


def test_patch_config_merges_and_removes_settings(writer: Api, site: dict[str, Any]) -> None:
    """A config update sets the named settings, removes those given as null, keeps the rest."""
    add_amplitude(writer, config=[{"name": "apiKey", "value": "k1"},
                                  {"name": "trackAllPages", "value": True}])

    status, body = writer.call("PATCH", SRC + "/destinations/amplitude", {
        "destination": {"config": [
            {"name": NAME + "/destinations/amplitude/config/apiKey", "value": "k2"},
            {"name": "trackAllPages", "value": None}]},
        "update_mask": {"paths": ["destination.config"]}})

    assert status == 200, body
    assert [(c["name"].rsplit("/", 1)[1], c["value"])
            for c in body["destination"]["config"]] == [("apiKey", "k2")]


def test_unchanged_patch_makes_no_new_version(writer: Api, site: dict[str, Any]) -> None:
    """A PATCH that changes nothing answers with the current bundle, not a new version."""
    version = add_amplitude(writer)["bundle"]["version"]

    status, body = writer.call("PATCH", SRC + "/destinations/amplitude", {
        "destination": {"enabled": False}, "update_mask": {"paths": ["enabled"]}})

    assert status == 200
    assert body["bundle"]["version"] == version and body["bundle"]["changed"] is False


def test_copy_settings_from_another_source(writer: Api, site: dict[str, Any]) -> None:
    """copy_settings_from copies another instance's settings; given config entries win."""
    add_amplitude(writer, config=[{"name": "apiKey", "value": "shared"},
                                  {"name": "trackAllPages", "value": True}])
    writer.call("POST", WS + "/sources", {"source": {"slug": "app", "type": "web"}})

    status, body = writer.call("POST", WS + "/sources/app/destinations", {"destination": {
        "slug": "amplitude", "connection_mode": "CLOUD",
        "copy_settings_from": NAME + "/destinations/amplitude",
        "config": [{"name": "trackAllPages", "value": False}]}})

    assert status == 200, body
    assert {c["name"].rsplit("/", 1)[1]: c["value"] for c in body["destination"]["config"]} \
        == {"apiKey": "shared", "trackAllPages": False}


def test_copy_settings_from_other_destination_type_is_refused(writer: Api,
                                                               site: dict[str, Any]) -> None:
    """Settings are only copied between instances of the same catalog destination."""
    add_amplitude(writer)

    status, body = writer.call("POST", SRC + "/destinations", {"destination": {
        "slug": "mixpanel", "connection_mode": "CLOUD",
        "copy_settings_from": NAME + "/destinations/amplitude"}})

    assert status == 400
    assert body["reason"] == "copy_settings_mismatch" and "amplitude" in body["error"]


def test_filter_lifecycle(writer: Api, site: dict[str, Any], redis_client: redis.Redis) -> None:
    """A filter on an enabled device-mode destination is created, listed, fetched, updated and
    deleted, and the bundle's routing rules follow each step."""
    write_key = site["source"]["write_keys"][0]
    add_amplitude(writer, enabled=True)
    base = SRC + "/destinations/amplitude/filters"

    status, body = writer.call("POST", base, {"filter": FILTER})
    assert status == 200, body
    flt = body["filter"]
    assert "/v1beta/" + flt["name"] == f"{base}/{flt['id']}" and flt["id"].startswith("df_")
    assert flt["enabled"] is True and flt["if"] == FILTER["if"]
    rules = served(redis_client, write_key)["middlewareSettings"]["routingRules"]
    assert [r["matchers"][0]["config"]["expr"] for r in rules] == [FILTER["if"]]
    assert rules[0]["destinationName"] == "Amplitude"

    assert writer.call("GET", base) == (200, {"filters": [flt], "next_page_token": ""})
    assert writer.call("GET", f"{base}/{flt['id']}") == (200, flt)

    status, body = writer.call("PATCH", f"{base}/{flt['id']}", {
        "filter": {"if": "event = 'Other'", "title": "not in the mask"},
        "update_mask": {"paths": ["filter.if"]}})
    assert status == 200, body
    assert body["filter"]["if"] == "event = 'Other'" and body["filter"]["title"] == "No secrets"
    rules = served(redis_client, write_key)["middlewareSettings"]["routingRules"]
    assert rules[0]["matchers"][0]["config"]["expr"] == "event = 'Other'"

    status, body = writer.call("DELETE", f"{base}/{flt['id']}")
    assert status == 200
    assert served(redis_client, write_key)["middlewareSettings"] == {}
    assert writer.call("GET", f"{base}/{flt['id']}")[0] == 404


def test_disabled_filter_has_no_routing_rule(writer: Api, site: dict[str, Any],
                                             redis_client: redis.Redis) -> None:
    """A filter created disabled is stored but not compiled into the bundle."""
    write_key = site["source"]["write_keys"][0]
    add_amplitude(writer, enabled=True)

    status, body = writer.call("POST", SRC + "/destinations/amplitude/filters",
                               {"filter": {**FILTER, "enabled": False}})

    assert status == 200 and body["filter"]["enabled"] is False
    assert served(redis_client, write_key)["middlewareSettings"] == {}


def test_catalog_search_and_get(reader: Api) -> None:
    """The catalog lists destinations matching a search and returns one by slug."""
    status, body = reader.call("GET", "/v1beta/catalog/destinations?search=amplit")

    assert status == 200
    assert "amplitude" in [d["slug"] for d in body["destinations"]]
    assert all("amplit" in d["display_name"].casefold() or "amplit" in d["slug"]
               or any("amplit" in n.casefold() for n in d["previous_names"])
               for d in body["destinations"])
    status, one = reader.call("GET", "/v1beta/catalog/destinations/amplitude")
    assert status == 200
    assert one["name"] == "catalog/destinations/amplitude"
    assert one["integrations_key"] == "Amplitude"


def test_catalog_pagination_walks_every_entry(reader: Api, service: Service) -> None:
    """page_size/page_token walk the whole catalog, each entry once, ending with an empty token."""
    seen: list[str] = []
    token = ""
    while True:
        query = f"?page_size=200&page_token={token}" if token else "?page_size=200"
        status, body = reader.call("GET", "/v1beta/catalog/destinations" + query)
        assert status == 200
        assert len(body["destinations"]) <= 200
        seen += [d["slug"] for d in body["destinations"]]
        token = body["next_page_token"]
        if not token:
            break

    assert sorted(seen) == sorted(d.slug for d in service.catalog)


def test_publish_status_versions_and_rollback(writer: Api, site: dict[str, Any],
                                              redis_client: redis.Redis) -> None:
    """Publish status reports the current version; rollback serves a kept version's bytes
    again as a new version."""
    write_key = site["source"]["write_keys"][0]
    add_amplitude(writer, enabled=True)

    status, body = writer.call("GET", SRC + "/publish")
    assert status == 200
    assert body["version"] == 2 and body["versions"] == [1, 2]
    assert body["etag"].startswith('"') and body["pending"] is False
    assert body["published_at"] and body["visible_everywhere_by"]

    status, body = writer.call("GET", SRC + "/versions")
    assert status == 200
    assert body["current_version"] == 2
    assert [(v["version"], v["current"]) for v in body["versions"]] == [(1, False), (2, True)]

    first_etag = writer.call("GET", SRC + "/versions")[1]["versions"][0]["etag"]
    status, body = writer.call("POST", SRC + "/rollback", {"version": 1})
    assert status == 200, body
    assert body["bundle"]["version"] == 3  # version 1's bytes, as a new version
    assert body["bundle"]["etag"] == first_etag
    assert "Amplitude" not in served(redis_client, write_key)["integrations"]
    assert writer.call("GET", SRC + "/publish")[1]["version"] == 3


@pytest.mark.parametrize(("version", "status"), [
    pytest.param(9, 404, id="not-kept"),
    pytest.param(0, 400, id="zero"),
    pytest.param("1", 400, id="string"),
])
def test_rollback_refuses_unknown_versions(writer: Api, site: dict[str, Any], version: Any,
                                           status: int) -> None:
    """Rolling back to a version that is not kept, or is not a version number, is refused."""
    code, body = writer.call("POST", SRC + "/rollback", {"version": version})

    assert code == status
    assert "version" in body["error"]
