"""Table tests for destination filter validation and filter -> tsub routing rule mapping."""

from __future__ import annotations

from typing import Any

import pytest

from publisher.core.filters import (
    MAX_FILTERS_PER_DESTINATION,
    check_filter_count,
    routing_rules,
    to_filter,
    validate_filter,
)
from publisher.core.model import Filter
from publisher.errors import CompileError, FQLError, InvalidArgument, RuleViolation

# The Config API example filter (config-api.md §1.4), every action type once.
EXAMPLE: dict[str, Any] = {
    "name": "workspaces/w/sources/s/destinations/d/filters/df_1JjE7f3gz8OXU6lVbUGuDhHcyKl",
    "if": "type != 'track'",
    "actions": [
        {"type": "drop_event"},
        {"type": "sample_event", "percent": 0.6, "path": "userId"},
        {"type": "blacklist_fields", "fields": {"context": {"fields": ["foo"]},
                                                "properties": {"fields": ["bar"]},
                                                "traits": {"fields": ["baz"]}}},
        {"type": "whitelist_fields", "fields": {"properties": {"fields": ["bar"]}}},
    ],
    "title": "Only allow track events",
    "description": "We don't need identify and page calls",
    "enabled": True,
}


def with_(**changes: Any) -> dict[str, Any]:
    raw = {k: v for k, v in EXAMPLE.items() if k != "name"}
    for key, value in changes.items():
        key = "if" if key == "if_" else key
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def act(**action: Any) -> dict[str, Any]:
    return with_(actions=[action])


def flt(fid: str, if_: str, *actions: dict[str, Any], enabled: bool = True) -> Filter:
    return Filter(id=fid, if_=if_, actions=tuple(actions), title=fid, enabled=enabled)


def test_validate_example() -> None:
    """The Config API's example filter validates and comes back normalized."""
    result = validate_filter(EXAMPLE)

    assert result == {
        "if": "type != 'track'",
        "actions": [
            {"type": "drop_event"},
            {"type": "sample_event", "percent": 0.6, "path": "userId"},
            {"type": "blacklist_fields", "fields": {"properties": {"fields": ["bar"]},
                                                    "context": {"fields": ["foo"]},
                                                    "traits": {"fields": ["baz"]}}},
            {"type": "whitelist_fields", "fields": {"properties": {"fields": ["bar"]}}},
        ],
        "title": "Only allow track events",
        "description": "We don't need identify and page calls",
        "enabled": True,
    }


def test_validate_drops_identity() -> None:
    """The resource name and id a client echoes back are accepted and left to the caller."""
    result = validate_filter({**EXAMPLE, "id": "df_1"})

    assert "name" not in result
    assert "id" not in result


@pytest.mark.parametrize(("raw", "key", "expected"), [
    pytest.param(with_(if_="all"), "if", "all", id="if-all"),
    pytest.param(with_(if_="  all "), "if", "all", id="if-all-padded"),
    pytest.param(with_(description=...), "description", "", id="description-defaults-empty"),
    pytest.param(with_(description=None), "description", "", id="description-null"),
    pytest.param(with_(enabled=...), "enabled", True, id="enabled-defaults-true"),
    pytest.param(with_(enabled=False), "enabled", False, id="disabled"),
    pytest.param(with_(title="  Padded  "), "title", "Padded", id="title-stripped"),
    pytest.param(with_(title="t" * 64), "title", "t" * 64, id="title-64-chars"),
    pytest.param(act(type="sample_event", percent=1), "actions",
                 [{"type": "sample_event", "percent": 1.0}], id="percent-int-becomes-float"),
    pytest.param(act(type="sample_event", percent=0, path=""), "actions",
                 [{"type": "sample_event", "percent": 0.0}], id="empty-path-dropped"),
    pytest.param(act(type="blocklist_fields", fields={"traits": {"fields": ["email"]}}),
                 "actions", [{"type": "blacklist_fields",
                              "fields": {"traits": {"fields": ["email"]}}}],
                 id="blocklist-alias"),
    pytest.param(act(type="whitelist_fields", fields={"context": {"fields": ["a", "b", "a"]}}),
                 "actions", [{"type": "whitelist_fields",
                              "fields": {"context": {"fields": ["a", "b"]}}}],
                 id="duplicate-field-names-collapsed"),
])
def test_validate_normalizes(raw: dict[str, Any], key: str, expected: Any) -> None:
    """Optional fields get their defaults and values their canonical form."""
    assert validate_filter(raw)[key] == expected


@pytest.mark.parametrize(("raw", "message"), [
    pytest.param(["not", "an", "object"], "filter must be an object, got array", id="not-object"),
    pytest.param(with_(colour="red"), "filter: unknown field 'colour'", id="unknown-field"),
    pytest.param(with_(name=5), "filter.name must be a string, got number", id="name-type"),
    pytest.param(with_(id=None), "filter.id must be a string, got null", id="id-type"),
    pytest.param(with_(if_=...), "filter.if is required", id="if-missing"),
    pytest.param(with_(if_=None), "filter.if is required", id="if-null"),
    pytest.param(with_(if_=["type"]), "filter.if must be a string, got array", id="if-type"),
    pytest.param(with_(actions=...), "filter.actions is required", id="actions-missing"),
    pytest.param(with_(actions=[]), "filter.actions must be a non-empty array of actions, got "
                 "an empty array", id="actions-empty"),
    pytest.param(with_(actions={"type": "drop_event"}), "filter.actions must be a non-empty "
                 "array of actions, got object", id="actions-object"),
    pytest.param(with_(actions=["drop_event"]), "filter.actions[0] must be an object, got "
                 "string", id="action-not-object"),
    pytest.param(act(percent=0.5), "filter.actions[0].type is required", id="action-no-type"),
    pytest.param(act(type="explode"), "filter.actions[0].type: unknown action 'explode'",
                 id="unknown-action"),
    pytest.param(act(type="drop_event", percent=0.5), "filter.actions[0]: unknown field "
                 "'percent'", id="drop-with-extra-key"),
    pytest.param(with_(actions=[{"type": "drop_event"}, {"type": "drop_event"}]),
                 "filter.actions[1]: duplicate action type 'drop_event'", id="duplicate-action"),
    pytest.param(act(type="sample_event"), "filter.actions[0].percent must be a number between "
                 "0.0 and 1.0, got null", id="percent-missing"),
    pytest.param(act(type="sample_event", percent="0.5"), "filter.actions[0].percent must be "
                 "a number between 0.0 and 1.0, got \"0.5\"", id="percent-string"),
    pytest.param(act(type="sample_event", percent=True), "got true", id="percent-bool"),
    pytest.param(act(type="sample_event", percent=1.5), "got 1.5", id="percent-over-1"),
    pytest.param(act(type="sample_event", percent=-0.1), "got -0.1", id="percent-negative"),
    pytest.param(act(type="sample_event", percent=float("nan")), "got nan", id="percent-nan"),
    pytest.param(act(type="sample_event", percent=0.5, path=["userId"]),
                 "filter.actions[0].path must be a string (a field path), got array",
                 id="path-type"),
    pytest.param(act(type="whitelist_fields"), "filter.actions[0].fields is required",
                 id="fields-missing"),
    pytest.param(act(type="whitelist_fields", fields={}), "filter.actions[0].fields must be a "
                 "non-empty object", id="fields-empty"),
    pytest.param(act(type="whitelist_fields", fields=["a"]), "filter.actions[0].fields must be "
                 "a non-empty object", id="fields-list"),
    pytest.param(act(type="blacklist_fields", fields={"integrations": {"fields": ["x"]}}),
                 "filter.actions[0].fields: unknown field 'integrations'", id="unknown-scope"),
    pytest.param(act(type="blacklist_fields", fields={"properties": ["x"]}),
                 'filter.actions[0].fields.properties must be an object {"fields": [...]}',
                 id="scope-not-object"),
    pytest.param(act(type="blacklist_fields", fields={"properties": {"fields": ["x"], "y": 1}}),
                 "filter.actions[0].fields.properties: unknown field 'y'", id="scope-extra-key"),
    pytest.param(act(type="blacklist_fields", fields={"properties": {"fields": []}}),
                 "filter.actions[0].fields.properties.fields must be a non-empty array",
                 id="field-list-empty"),
    pytest.param(act(type="blacklist_fields", fields={"properties": {"fields": "email"}}),
                 "filter.actions[0].fields.properties.fields must be a non-empty array",
                 id="field-list-string"),
    pytest.param(act(type="blacklist_fields", fields={"properties": {"fields": ["a", 3]}}),
                 "filter.actions[0].fields.properties.fields[1] must be a non-empty string, "
                 "got 3", id="field-name-type"),
    pytest.param(act(type="blacklist_fields", fields={"properties": {"fields": [" "]}}),
                 "fields[0] must be a non-empty string, got \" \"", id="field-name-blank"),
    pytest.param(with_(title=...), "filter.title is required", id="title-missing"),
    pytest.param(with_(title="   "), "filter.title must not be empty", id="title-blank"),
    pytest.param(with_(title=7), "filter.title must be a string, got number", id="title-type"),
    pytest.param(with_(title=None), "filter.title must be a string, got null", id="title-null"),
    pytest.param(with_(title="t" * 65), "filter.title is 65 characters; the limit is 64",
                 id="title-too-long"),
    pytest.param(with_(description=["x"]), "filter.description must be a string, got array",
                 id="description-type"),
    pytest.param(with_(enabled="yes"), "filter.enabled must be true or false, got \"yes\"",
                 id="enabled-type"),
    pytest.param(with_(enabled=1), "filter.enabled must be true or false, got 1",
                 id="enabled-int"),
])
def test_validate_errors(raw: Any, message: str) -> None:
    """Each malformed filter is refused with an InvalidArgument naming the field."""
    with pytest.raises(InvalidArgument) as caught:
        validate_filter(raw)

    assert message in caught.value.message
    assert caught.value.http_status == 400


def test_validate_bad_fql_names_position() -> None:
    """A filter whose 'if' does not parse is refused with the FQL position."""
    with pytest.raises(FQLError) as caught:
        validate_filter(with_(if_="event = 'abc"))

    assert caught.value.message == ("filter.if is not valid FQL: unterminated string "
                                    "(at position 8)")
    assert caught.value.position == 8
    assert caught.value.code == "fql_syntax"


@pytest.mark.parametrize(("expr", "device_mode", "error"), [
    pytest.param("uppercase(event) = 'X'", False, None, id="cloud-allows-uppercase"),
    pytest.param("uppercase(event) = 'X' and number(a) > 1", True,
                 "filter.if uses number(), uppercase(), which device-mode filters cannot "
                 "evaluate in the browser", id="device-refuses-uppercase"),
    pytest.param("contains(lowercase(event), 'x') and length(a) > typeof(b)", True, None,
                 id="device-allows-tsub-functions"),
    pytest.param("all", True, None, id="device-allows-all"),
])
def test_validate_device_mode(expr: str, device_mode: bool, error: str | None) -> None:
    """Device-mode validation refuses FQL functions that tsub cannot evaluate."""
    raw = with_(if_=expr)
    if error is None:
        assert validate_filter(raw, device_mode=device_mode)["if"] == expr
        return
    with pytest.raises(InvalidArgument) as caught:
        validate_filter(raw, device_mode=device_mode)
    assert error in caught.value.message
    assert caught.value.code == "fql_unsupported_in_device_mode"


def test_to_filter() -> None:
    """A validated filter converts to the model object."""
    result = to_filter("df_1", validate_filter(EXAMPLE))

    assert result == Filter(id="df_1", if_="type != 'track'",
                            actions=tuple(validate_filter(EXAMPLE)["actions"]),
                            title="Only allow track events",
                            description="We don't need identify and page calls", enabled=True)


@pytest.mark.parametrize(("count", "ok"), [
    pytest.param(MAX_FILTERS_PER_DESTINATION, True, id="ten"),
    pytest.param(MAX_FILTERS_PER_DESTINATION + 1, False, id="eleven"),
])
def test_check_filter_count(count: int, ok: bool) -> None:
    """A destination may have at most ten filters."""
    if ok:
        check_filter_count(count)
        return
    with pytest.raises(RuleViolation, match="at most 10 filters; this change would make 11"):
        check_filter_count(count)


RULE = {"scope": "destinations", "target_type": "workspace::project::destination::config",
        "destinationName": "Google Analytics"}
DROP = {"type": "drop_event"}


@pytest.mark.parametrize(("filters", "rules"), [
    pytest.param([], [], id="no-filters"),
    pytest.param([flt("a", "event = 'Test'", DROP, enabled=False)], [], id="disabled-skipped"),
    pytest.param([flt("a", 'event = "Test"', DROP)], [{
        **RULE,
        "matchers": [{"type": "fql", "ir": '["=","event",{"value":"Test"}]',
                      "config": {"expr": 'event = "Test"'}}],
        "transformers": [[{"type": "drop"}]],
    }], id="drop"),
    pytest.param([flt("a", "all", {"type": "blacklist_fields",
                                   "fields": {"properties": {"fields": ["url"]}}})], [{
        **RULE,
        "matchers": [{"type": "all", "ir": ""}],
        "transformers": [[{"type": "drop_properties",
                           "config": {"drop": {"properties": ["url"]}}}]],
    }], id="all-drop-properties"),
    pytest.param([flt("a", "all", {"type": "sample_event", "percent": 0.25})], [{
        **RULE,
        "matchers": [{"type": "all", "ir": ""}],
        "transformers": [[{"type": "sample_event",
                           "config": {"sample": {"percent": 0.25, "path": ""}}}]],
    }], id="random-sample"),
    pytest.param([flt("a", "type = 'track'", *EXAMPLE["actions"][::-1])], [{
        **RULE,
        "matchers": [{"type": "fql", "ir": '["=","type",{"value":"track"}]',
                      "config": {"expr": "type = 'track'"}}],
        "transformers": [[
            {"type": "sample_event", "config": {"sample": {"percent": 0.6, "path": "userId"}}},
            {"type": "drop"},
            {"type": "drop_properties", "config": {"drop": {"properties": ["bar"],
                                                            "context": ["foo"],
                                                            "traits": ["baz"]}}},
            {"type": "allow_properties", "config": {"allow": {"properties": ["bar"]}}},
        ]],
    }], id="actions-in-segment-order"),
    pytest.param([flt("a", "event = 'A'", DROP), flt("b", "x", DROP, enabled=False),
                  flt("c", "event = 'C' and type = 'track'", DROP)], [{
        **RULE,
        "matchers": [{"type": "fql", "ir": '["=","event",{"value":"A"}]',
                      "config": {"expr": "event = 'A'"}}],
        "transformers": [[{"type": "drop"}]],
    }, {
        **RULE,
        "matchers": [{"type": "fql",
                      "ir": '["and",["=","event",{"value":"C"}],["=","type",{"value":"track"}]]',
                      "config": {"expr": "event = 'C' and type = 'track'"}}],
        "transformers": [[{"type": "drop"}]],
    }], id="one-rule-per-enabled-filter-in-order"),
])
def test_routing_rules(filters: list[Filter], rules: list[dict[str, Any]]) -> None:
    """Enabled filters become tsub rules in the shape analytics-next reads."""
    assert routing_rules("Google Analytics", filters) == rules


def test_routing_rules_deterministic() -> None:
    """The same filters always give equal rules, independent of action order."""
    forward = flt("a", "type = 'track'", *EXAMPLE["actions"])
    backward = flt("a", "type = 'track'", *EXAMPLE["actions"][::-1])

    assert routing_rules("GA", [forward]) == routing_rules("GA", [backward])


@pytest.mark.parametrize(("destination", "filters", "message"), [
    pytest.param("GA", [flt("df_9", "event = ", DROP)], "stored filter 'df_9' of 'GA' is "
                 "invalid: expected a value", id="stored-bad-fql"),
    pytest.param("GA", [flt("df_9", "all", {"type": "explode"})], "stored filter 'df_9' of "
                 "'GA' is invalid: filter 'df_9' actions[0].type: unknown action 'explode'",
                 id="stored-bad-action"),
    pytest.param("", [flt("df_9", "all", DROP)], "need the destination's integrations key",
                 id="no-destination-name"),
])
def test_routing_rules_refuse_broken_data(destination: str, filters: list[Filter],
                                          message: str) -> None:
    """Stored filters that break the invariants raise CompileError instead of publishing."""
    with pytest.raises(CompileError) as caught:
        routing_rules(destination, filters)

    assert message in caught.value.message
