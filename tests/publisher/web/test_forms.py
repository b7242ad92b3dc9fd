"""Bad input through the web app's forms: the rule's message next to the field, the form
keeps what was typed, nothing is written (SQLite and Redis unchanged); and the options the
destination rules forbid are not offered."""

from __future__ import annotations

import html
import re

import pytest
from starlette.testclient import TestClient

from publisher.core.specs import InstanceSpec
from publisher.service import Service
from tests.publisher.web.conftest import csrf_of
from tests.publisher.web.test_safety import Snapshot, snapshot  # noqa: F401 (fixture)


def _field_error(page: str, field: str) -> str:
    found = re.search(rf'<p id="err-{re.escape(field)}" class="error" role="alert">(.*?)</p>',
                      page, re.S)
    assert found is not None, f"no error next to {field}:\n{page}"
    return html.unescape(found.group(1))


@pytest.fixture
def amp(service: Service) -> str:
    inst, _ = service.add_instance(service.source("acme", "site"), InstanceSpec(
        "amplitude", "DEVICE", enabled=False, settings={"apiKey": "amp-key"}))
    return inst.id


def test_empty_required_setting(writer: TestClient, amp: str, snapshot: Snapshot) -> None:  # noqa: F811
    url = f"/app/w/acme/s/site/d/{amp}"
    writer.post(url + "/settings", data={"csrf": csrf_of(writer, url), "display_name":
                                         "Amplitude", "s.apiKey": "amp-key"})
    csrf = csrf_of(writer, url)
    before = snapshot()
    # saving the enabled destination's required setting empty
    writer_resp = writer.post(url + "/enabled", data={"csrf": csrf, "enabled": "1"})
    assert writer_resp.status_code == 303
    before = snapshot()
    resp = writer.post(url + "/settings", data={"csrf": csrf, "display_name": "Amplitude",
                                                "connection_mode": "DEVICE", "s.apiKey": "",
                                                "s.groupTypeTrait": "typed-by-me"})
    assert resp.status_code == 400
    assert "required setting 'apiKey'" in _field_error(resp.text, "s.apiKey")
    assert 'value="typed-by-me"' in resp.text
    assert snapshot() == before


def test_enabling_without_the_required_setting(writer: TestClient, service: Service,
                                               snapshot: Snapshot) -> None:  # noqa: F811
    inst, _ = service.add_instance(service.source("acme", "site"), InstanceSpec(
        "amplitude", "CLOUD", enabled=False))
    url = f"/app/w/acme/s/site/d/{inst.id}"
    csrf = csrf_of(writer, url)
    before = snapshot()
    resp = writer.post(url + "/enabled", data={"csrf": csrf, "enabled": "1"})
    assert resp.status_code == 400
    assert "required setting 'apiKey'" in _field_error(resp.text, "s.apiKey")
    assert snapshot() == before


def test_wrong_type(writer: TestClient, amp: str, snapshot: Snapshot) -> None:  # noqa: F811
    url = f"/app/w/acme/s/site/d/{amp}"
    csrf = csrf_of(writer, url)
    before = snapshot()
    resp = writer.post(url + "/settings", data={
        "csrf": csrf, "display_name": "Amplitude", "s.apiKey": "amp-key",
        "s.eventUploadThreshold": "thirty", "s.mapQueryParams": "{not json"})
    assert resp.status_code == 400
    assert "not a number" in _field_error(resp.text, "s.eventUploadThreshold")
    assert "not valid JSON" in _field_error(resp.text, "s.mapQueryParams")
    assert 'value="thirty"' in resp.text and "{not json</textarea>" in resp.text
    assert snapshot() == before


def test_wrong_json_type_is_the_catalog_rule(writer: TestClient, amp: str,
                                             snapshot: Snapshot) -> None:  # noqa: F811
    url = f"/app/w/acme/s/site/d/{amp}"
    csrf = csrf_of(writer, url)
    before = snapshot()
    resp = writer.post(url + "/settings", data={
        "csrf": csrf, "display_name": "Amplitude", "s.mapQueryParams": "[1, 2]"})
    assert resp.status_code == 400
    assert "must be an object" in _field_error(resp.text, "s.mapQueryParams")
    assert snapshot() == before


def test_duplicate_name(writer: TestClient, service: Service, amp: str,
                        snapshot: Snapshot) -> None:  # noqa: F811
    url = "/app/w/acme/s/site/add/amplitude"
    csrf = csrf_of(writer, url)
    before = snapshot()
    resp = writer.post(url, data={"csrf": csrf, "display_name": "AMPLITUDE",
                                  "connection_mode": "CLOUD"})
    assert resp.status_code == 409
    assert "already used" in _field_error(resp.text, "display_name")
    assert 'value="AMPLITUDE"' in resp.text
    resp = writer.post(url, data={"csrf": csrf, "display_name": "",
                                  "connection_mode": "CLOUD"})
    assert resp.status_code == 400
    assert "display name is required" in _field_error(resp.text, "display_name")
    assert snapshot() == before


def test_forbidden_second_instance(writer: TestClient, service: Service,
                                   snapshot: Snapshot) -> None:  # noqa: F811
    """An iOS source connects one instance of a destination: the option is not offered, and
    a request that tries anyway gets the rule's message."""
    service.add_instance(service.source("acme", "app"), InstanceSpec("amplitude", "CLOUD"))
    page = writer.get("/app/w/acme/catalog/amplitude/configure").text
    assert 'value="app"' not in page and 'value="site"' in page
    assert "single_instance_source" in page
    add = writer.get("/app/w/acme/s/app/add/amplitude").text
    assert "Configure</button>" not in add and "cannot be added" in add
    search = writer.get("/app/w/acme/s/app/add?q=amplitude").text
    assert 'href="/app/w/acme/s/app/add/amplitude"' not in search
    csrf = csrf_of(writer, "/app/w/acme")
    before = snapshot()
    for url, data in [("/app/w/acme/catalog/amplitude/configure", {"source": "app"}),
                      ("/app/w/acme/s/app/add/amplitude", {})]:
        resp = writer.post(url, data={"csrf": csrf, "display_name": "Second",
                                      "connection_mode": "CLOUD", **data})
        assert resp.status_code == 400, resp.text
        assert "single_instance_source" in resp.text
    assert snapshot() == before


def test_server_source_offers_no_device_mode(writer: TestClient, service: Service,
                                             snapshot: Snapshot) -> None:  # noqa: F811
    page = writer.get("/app/w/acme/s/backend/add/amplitude").text
    assert 'value="CLOUD"' in page and 'value="DEVICE"' not in page
    csrf = csrf_of(writer, "/app/w/acme")
    before = snapshot()
    resp = writer.post("/app/w/acme/s/backend/add/amplitude",
                       data={"csrf": csrf, "connection_mode": "DEVICE"})
    assert resp.status_code == 400
    assert "no_device_mode_on_server" in _field_error(resp.text, "connection_mode")
    assert snapshot() == before


def test_fql_error_names_the_position(writer: TestClient, amp: str,
                                      snapshot: Snapshot) -> None:  # noqa: F811
    url = f"/app/w/acme/s/site/d/{amp}/filters/new"
    csrf = csrf_of(writer, url)
    before = snapshot()
    resp = writer.post(url, data={"csrf": csrf, "title": "Mine", "if": "event = = 'x'",
                                  "action": "drop_event", "enabled": "1"})
    assert resp.status_code == 400
    assert "at position" in _field_error(resp.text, "if")
    assert "event = = &#39;x&#39;</textarea>" in resp.text and 'value="Mine"' in resp.text
    assert snapshot() == before


def test_copy_settings_from_another_instance(writer: TestClient, service: Service,
                                             amp: str) -> None:
    url = "/app/w/acme/s/site/add/amplitude"
    page = writer.get(url).text
    assert "Copy Settings From Other Destination" in page and f'value="site/{amp}"' in page
    resp = writer.post(url, data={"csrf": csrf_of(writer, url), "display_name": "Amp EU",
                                  "connection_mode": "CLOUD", "copy_from": f"site/{amp}"})
    assert resp.status_code == 303, resp.text
    made = service.instance(service.source("acme", "site"), "amp-eu")
    assert made.settings == {"apiKey": "amp-key"} and made.display_name == "Amp EU"
