"""Each destination rule (publisher.rules.RULES), broken through the Config API, is refused
with its code and changes nothing: the same bundle version, revision and destinations."""

from __future__ import annotations

from typing import Any

import pytest

from publisher.core.rules import RULES
from tests.publisher.api.conftest import WS, Api


def dest(slug: str, mode: str = "CLOUD", name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"slug": slug, "connection_mode": mode}
    if name is not None:
        body["display_name"] = name
    return {"destination": body}


# (rule code, source type, destinations created first, the create that breaks the rule, status)
CASES = [
    pytest.param("display_name_required", "web", [dest("amplitude")], dest("amplitude"), 400,
                 id="display_name_required"),
    pytest.param("duplicate_display_name", "web", [dest("amplitude")],
                 dest("mixpanel", name="amplitude"), 409, id="duplicate_display_name"),
    pytest.param("invalid_connection_mode", "web", [], dest("amplitude", "EDGE"), 400,
                 id="invalid_connection_mode"),
    pytest.param("no_device_mode_on_server", "server", [], dest("amplitude", "DEVICE"), 400,
                 id="no_device_mode_on_server"),
    pytest.param("mode_not_supported", "web", [], dest("activecampaign", "DEVICE"), 400,
                 id="mode_not_supported"),
    pytest.param("single_instance_source", "ios", [dest("amplitude")],
                 dest("amplitude", name="Amplitude 2"), 400, id="single_instance_source"),
    pytest.param("data_lakes_single_instance", "web", [dest("data-lakes")],
                 dest("data-lakes", name="Lake 2"), 400, id="data_lakes_single_instance"),
    pytest.param("device_only_single_instance", "web", [dest("hotjar", "DEVICE")],
                 dest("hotjar", "DEVICE", name="Hotjar 2"), 400,
                 id="device_only_single_instance"),
    pytest.param("multi_instance_unsupported", "web", [dest("1flow")],
                 dest("1flow", name="1Flow 2"), 400, id="multi_instance_unsupported"),
    pytest.param("one_device_instance", "web", [dest("amplitude", "DEVICE")],
                 dest("amplitude", "DEVICE", name="Amplitude 2"), 400,
                 id="one_device_instance"),
    pytest.param("cloud_instance_limit", "web",  # the fixture's limit is 3
                 [dest("amplitude"), dest("amplitude", name="A2"), dest("amplitude", name="A3")],
                 dest("amplitude", name="A4"), 400, id="cloud_instance_limit"),
]


def state(api: Api, base: str) -> Any:
    return api.call("GET", base + "/publish")[1], api.call("GET", base + "/destinations")[1]


def test_every_rule_has_an_api_case() -> None:
    """The table below covers every rule code (invalid_source_type has its own test)."""
    covered = {c.values[0] for c in CASES} | {"invalid_source_type"}

    assert covered == set(RULES)


@pytest.mark.parametrize(("code", "source_type", "setup", "breaking", "status"), CASES)
def test_rule_violation_is_refused(writer: Api, code: str, source_type: str,
                                   setup: list[dict[str, Any]], breaking: dict[str, Any],
                                   status: int) -> None:
    """A create that would break the rule is refused with the rule's code, changing nothing."""
    base = WS + "/sources/src"
    assert writer.call("POST", WS + "/sources", {"source": {"slug": "src",
                                                            "type": source_type}})[0] == 200
    for body in setup:
        got = writer.call("POST", base + "/destinations", body)
        assert got[0] == 200, got
    before = state(writer, base)

    http, resp = writer.call("POST", base + "/destinations", breaking)

    assert http == status, resp
    assert resp["code"] == (6 if status == 409 else 3)
    assert resp["reason"] == code
    assert code in resp["error"]
    assert state(writer, base) == before


def test_rule_violation_by_patch_is_refused(writer: Api) -> None:
    """Switching a second instance to device mode breaks one_device_instance and is refused."""
    base = WS + "/sources/src"
    writer.call("POST", WS + "/sources", {"source": {"slug": "src", "type": "web"}})
    writer.call("POST", base + "/destinations", dest("amplitude", "DEVICE"))
    writer.call("POST", base + "/destinations", dest("amplitude", name="Cloudy"))
    before = state(writer, base)

    http, resp = writer.call("PATCH", base + "/destinations/cloudy", {
        "destination": {"connection_mode": "DEVICE"},
        "update_mask": {"paths": ["destination.connection_mode"]}})

    assert http == 400 and resp["reason"] == "one_device_instance"
    assert state(writer, base) == before


def test_invalid_source_type_is_refused(writer: Api) -> None:
    """A source of an unknown type is refused with invalid_source_type and not created."""
    http, resp = writer.call("POST", WS + "/sources", {"source": {"slug": "tv",
                                                                  "type": "television"}})

    assert http == 400 and resp["code"] == 3
    assert resp["reason"] == "invalid_source_type" and "television" in resp["error"]
    assert writer.call("GET", WS + "/sources")[1]["sources"] == []
