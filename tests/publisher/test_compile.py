"""The compiler: one source and its instances -> the settings document clients read."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

import orjson
import pytest

from publisher.core.catalog import default_catalog
from publisher.core.compile import CompileOptions, canonical_bytes, compile_bytes, compile_source
from publisher.core.model import Filter, Instance, Source, SourceType
from publisher.errors import CompileError

CATALOG = default_catalog()

# Values that must never reach a bundle: cloud-mode settings, secrets, disabled instances.
AMPLITUDE_SECRET = "amp-secret-key-XYZ"
BRAZE_SECRET = "braze-rest-api-key-XYZ"
MIXPANEL_TOKEN = "mixpanel-cloud-token-XYZ"
MIXPANEL_SECRET = "mixpanel-api-secret-XYZ"
WEBHOOK_URL_1 = "https://hooks.example.com/one-XYZ"
WEBHOOK_URL_2 = "https://hooks.example.com/two-XYZ"
WEBHOOK_SHARED_SECRET = "webhook-shared-secret-XYZ"
DISABLED_TRACKING_ID = "UA-disabled-XYZ"


def source(type_: SourceType = "web", write_key: str = "wk_web_0123456789") -> Source:
    return Source(id=1, workspace_id=1, slug=f"{type_}-app", name=f"{type_} app", type=type_,
                  write_key=write_key)


def instance(id_: str, slug: str, mode: str = "DEVICE", enabled: bool = True,
             settings: dict[str, Any] | None = None, filters: tuple[Filter, ...] = (),
             name: str | None = None) -> Instance:
    return Instance(id=id_, catalog_slug=slug, display_name=name or id_,
                    connection_mode=mode,  # type: ignore[arg-type]
                    enabled=enabled, settings=settings or {}, filters=filters)


def web_instances() -> list[Instance]:
    """Amplitude + Braze in device mode, Mixpanel and two Webhooks in cloud, GA disabled."""
    return [
        instance("amp-1", "amplitude", settings={
            "apiKey": "amp-public-key", "secretKey": AMPLITUDE_SECRET, "trackAllPages": True}),
        instance("braze-1", "braze", settings={
            "apiKey": "braze-app-id", "appGroupId": BRAZE_SECRET, "datacenter": "us"}),
        instance("mp-1", "mixpanel", "CLOUD", settings={
            "token": MIXPANEL_TOKEN, "apiKey": MIXPANEL_SECRET}),
        instance("hook-1", "webhooks", "CLOUD", name="Webhooks", settings={
            "hooks": [{"hook": WEBHOOK_URL_1}], "sharedSecret": WEBHOOK_SHARED_SECRET}),
        instance("hook-2", "webhooks", "CLOUD", name="Webhooks Two", settings={
            "hooks": [{"hook": WEBHOOK_URL_2}], "globalHook": WEBHOOK_URL_2}),
        instance("ga-1", "google-analytics", enabled=False, settings={
            "trackingId": DISABLED_TRACKING_ID}),
    ]


PLAN = {
    "track": {"__default": {"enabled": True, "integrations": {}}},
    "identify": {"__default": {"enabled": True}},
    "group": {"__default": {"enabled": True}},
}
TOP_LEVEL_REST = {
    "plan": PLAN,
    "metrics": {"sampleRate": 0},
    "middlewareSettings": {},
    "enabledMiddleware": {},
    "remotePlugins": [],
    "legacyVideoPluginsEnabled": False,
    "edgeFunction": {},
    "consentSettings": {"allCategories": [], "hasUnmappedDestinations": True},
}

AMPLITUDE_ENTRY = {
    "apiKey": "amp-public-key",
    "appendFieldsToEventProps": {},
    "batchEvents": False,
    "deviceIdFromUrlParam": False,
    "enableLocationListening": True,
    "endpoint": "",
    "eventUploadPeriodMillis": 30000,
    "eventUploadThreshold": 30,
    "forceHttps": False,
    "groupTypeTrait": "",
    "groupValueTrait": "",
    "mapQueryParams": {},
    "preferAnonymousIdForDeviceId": False,
    "saveParamsReferrerOncePerSession": True,
    "sendAlias": False,
    "sendToBatchEndpoint": False,
    "trackAllPages": True,
    "trackAllPagesV2": False,
    "trackCategorizedPages": True,
    "trackGclid": False,
    "trackNamedPages": True,
    "trackProductsOnce": False,
    "trackReferrer": True,
    "trackRevenuePerProduct": False,
    "trackSessionEvents": False,
    "trackUtmProperties": True,
    "traitsToAppend": [],
    "traitsToIncrement": [],
    "traitsToPrepend": [],
    "traitsToSetOnce": [],
    "unsetParamsReferrerOnNewSession": False,
    "useAdvertisingIdForDeviceId": False,
    "useAmplitudeReferral": False,
    "useCustomAmplitudeProperties": False,
    "useLogRevenueV2": True,
    "versionName": "",
    "versionSettings": {"version": "3.3.3", "componentTypes": ["browser"]},
    "type": "browser",
    "bundlingStatus": "bundled",
}

APPBOY_ENTRY = {
    "allowCrawlerActivity": False,
    "apiKey": "braze-app-id",
    "automatic_in_app_message_registration_enabled": True,
    "automaticallyDisplayMessages": True,
    "customEndpoint": "",
    "datacenter": "us",
    "doNotLoadFontAwesome": False,
    "enableHtmlInAppMessages": False,
    "enableLogging": False,
    "logPurchaseWhenRevenuePresent": False,
    "minimumIntervalBetweenTriggerActionsInSeconds": 30,
    "onlyTrackKnownUsersOnWeb": False,
    "openInAppMessagesInNewTab": False,
    "openNewsFeedCardsInNewTab": False,
    "restCustomEndpoint": "",
    "safariWebsitePushId": "",
    "serviceWorkerLocation": "",
    "sessionTimeoutInSeconds": 30,
    "trackAllPages": False,
    "trackNamedPages": False,
    "updateExistingOnly": False,
    "version": "",
    "versionSettings": {"version": "1.16.1", "componentTypes": ["browser"]},
    "type": "browser",
    "bundlingStatus": "bundled",
}


def test_web_source_document_is_exact() -> None:
    """A web source compiles to the exact document, device entries keyed by integrations key."""
    doc = compile_source(source(), web_instances(), CATALOG)

    assert doc == {
        "integrations": {
            "Segment.io": {
                "apiKey": "wk_web_0123456789",
                "apiHost": "api.segment.io/v1",
                "unbundledIntegrations": ["Mixpanel"],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {"Amplitude": ["amp-1"], "Appboy": ["braze-1"]},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            },
            "Amplitude": AMPLITUDE_ENTRY,
            "Appboy": APPBOY_ENTRY,
        },
        **TOP_LEVEL_REST,
    }


@pytest.mark.parametrize("value", [
    pytest.param(AMPLITUDE_SECRET, id="device-secret-amplitude-secretKey"),
    pytest.param(BRAZE_SECRET, id="device-secret-braze-appGroupId"),
    pytest.param(MIXPANEL_TOKEN, id="cloud-mixpanel-token"),
    pytest.param(MIXPANEL_SECRET, id="cloud-mixpanel-secret"),
    pytest.param(WEBHOOK_URL_1, id="cloud-webhook-1-hook"),
    pytest.param(WEBHOOK_URL_2, id="cloud-webhook-2-globalHook"),
    pytest.param(WEBHOOK_SHARED_SECRET, id="cloud-webhook-sharedSecret"),
    pytest.param(DISABLED_TRACKING_ID, id="disabled-device-instance"),
    pytest.param("secretKey", id="secret-setting-name-amplitude"),
    pytest.param("appGroupId", id="secret-setting-name-braze"),
    pytest.param("hook-1", id="cloud-instance-id"),
    pytest.param("ga-1", id="disabled-instance-id"),
])
def test_withheld_value_never_in_bytes(value: str) -> None:
    """No cloud-mode setting, secret setting or disabled instance appears anywhere in the bytes."""
    body = canonical_bytes(compile_source(source(), web_instances(), CATALOG))

    assert value.encode() not in body


def test_at_most_one_entry_per_destination() -> None:
    """Each catalog destination has at most one entry, under its integrations key only."""
    integrations = compile_source(source(), web_instances(), CATALOG)["integrations"]

    slugs = Counter(CATALOG.get(key).slug for key in integrations if key != "Segment.io")
    assert slugs == {"amplitude": 1, "braze": 1}
    assert "Braze" not in integrations
    assert "Mixpanel" not in integrations


def test_device_and_cloud_instance_of_one_destination() -> None:
    """A destination with a device and a cloud instance is bundled once and listed as unbundled."""
    instances = [
        instance("amp-dev", "amplitude", settings={"apiKey": "k"}),
        instance("amp-cloud", "amplitude", "CLOUD", settings={"apiKey": "cloud-only-key-XYZ"}),
    ]

    doc = compile_source(source(), instances, CATALOG)

    segment_io = doc["integrations"]["Segment.io"]
    assert segment_io["unbundledIntegrations"] == ["Amplitude"]
    assert segment_io["maybeBundledConfigIds"] == {"Amplitude": ["amp-dev"]}
    assert doc["integrations"]["Amplitude"]["apiKey"] == "k"
    assert b"cloud-only-key-XYZ" not in canonical_bytes(doc)


def test_server_source_has_only_segment_io() -> None:
    """A server source's document lists Segment.io alone, with no unbundled destinations."""
    instances = [i for i in web_instances() if i.connection_mode == "CLOUD"]

    doc = compile_source(source("server", "wk_server"), instances, CATALOG)

    assert doc == {
        "integrations": {"Segment.io": {
            "apiKey": "wk_server",
            "apiHost": "api.segment.io/v1",
            "unbundledIntegrations": [],
            "addBundledMetadata": True,
            "maybeBundledConfigIds": {},
        }},
        **TOP_LEVEL_REST,
    }


@pytest.mark.parametrize("type_", [
    pytest.param("ios", id="ios"),
    pytest.param("android", id="android"),
])
def test_mobile_source_uses_its_platform(type_: SourceType) -> None:
    """A mobile source's device entries carry its platform as component type and type."""
    instances = [
        instance("amp-1", "amplitude", settings={"apiKey": "amp-public-key",
                                                 "secretKey": AMPLITUDE_SECRET}),
        instance("mp-1", "mixpanel", "CLOUD", settings={"token": MIXPANEL_TOKEN}),
        instance("hook-1", "webhooks", "CLOUD", settings={"hooks": [{"hook": WEBHOOK_URL_1}]}),
    ]

    doc = compile_source(source(type_, "wk_mobile"), instances, CATALOG)

    assert doc["integrations"]["Segment.io"] == {
        "apiKey": "wk_mobile",
        "apiHost": "api.segment.io/v1",
        "unbundledIntegrations": ["Mixpanel"],
        "addBundledMetadata": True,
        "maybeBundledConfigIds": {"Amplitude": ["amp-1"]},
    }
    assert doc["integrations"]["Amplitude"] == {
        **AMPLITUDE_ENTRY,
        "trackAllPages": False,
        "versionSettings": {"componentTypes": [type_]},
        "type": type_,
    }
    assert set(doc["integrations"]) == {"Segment.io", "Amplitude"}


@pytest.mark.parametrize(("second", "refused"), [
    pytest.param(instance("amp-2", "amplitude"), True, id="two-enabled-refused"),
    pytest.param(instance("amp-2", "Amplitude"), True, id="same-destination-by-name-refused"),
    pytest.param(instance("amp-2", "amplitude", enabled=False), False, id="second-disabled-ok"),
    pytest.param(instance("amp-2", "amplitude", "CLOUD"), False, id="second-cloud-ok"),
])
def test_two_enabled_device_instances(second: Instance, refused: bool) -> None:
    """Two enabled device-mode instances of one destination refuse to compile."""
    instances = [instance("amp-1", "amplitude", settings={"apiKey": "k"}), second]

    if refused:
        with pytest.raises(CompileError) as info:
            compile_source(source(), instances, CATALOG)
        assert info.value.code == "one_device_instance"
        assert "'amp-1'" in info.value.message and "'amp-2'" in info.value.message
        assert "Amplitude" in info.value.message
    else:
        doc = compile_source(source(), instances, CATALOG)
        assert doc["integrations"]["Segment.io"]["maybeBundledConfigIds"] == {
            "Amplitude": ["amp-1"]}


@pytest.mark.parametrize(("type_", "inst", "code"), [
    pytest.param("server", instance("amp-1", "amplitude"), "mode_not_supported",
                 id="device-mode-on-server"),
    pytest.param("web", instance("hook-1", "webhooks"), "mode_not_supported",
                 id="device-mode-cloud-only-destination"),
    pytest.param("ios", instance("cio-1", "customer-io"), "mode_not_supported",
                 id="device-mode-web-only-destination-on-ios"),
    pytest.param("web", instance("x-1", "no-such-destination", "CLOUD"), "unknown_destination",
                 id="unknown-catalog-destination"),
    pytest.param("web", instance("amp-1", "amplitude", "EDGE"), "invalid_connection_mode",
                 id="unknown-connection-mode"),
    pytest.param("web", Instance(id="amp-1", catalog_slug="amplitude", display_name="A",
                                 connection_mode="DEVICE", enabled=True,
                                 settings=["not", "an", "object"]),  # type: ignore[arg-type]
                 "settings_not_object", id="settings-not-an-object"),
])
def test_broken_stored_data_is_refused(type_: SourceType, inst: Instance, code: str) -> None:
    """Stored data the rules would never allow raises CompileError naming the instance."""
    with pytest.raises(CompileError) as info:
        compile_source(source(type_), [inst], CATALOG)

    assert info.value.code == code
    assert repr(inst.id) in info.value.message


def test_disabled_broken_instance_is_ignored() -> None:
    """A disabled instance is not looked up, so an unknown destination there does not block."""
    doc = compile_source(source(), [instance("x-1", "no-such-destination", enabled=False)],
                         CATALOG)

    assert list(doc["integrations"]) == ["Segment.io"]


def test_unknown_source_type_is_refused() -> None:
    """A source of an unknown type raises CompileError naming the type."""
    with pytest.raises(CompileError, match="'desktop'") as info:
        compile_source(source("desktop"), [], CATALOG)  # type: ignore[arg-type]

    assert info.value.code == "invalid_source_type"


def test_disabled_filters_add_no_routing_rules() -> None:
    """Disabled filters of a device-mode instance add no routing rules."""
    off = Filter(id="f-1", if_='event = "x"', actions=(), title="off", enabled=False)
    instances = [instance("amp-1", "amplitude", settings={"apiKey": "k"}, filters=(off,)),
                 instance("mp-1", "mixpanel", "CLOUD", settings={"token": "t"})]

    doc = compile_source(source(), instances, CATALOG)

    assert doc["middlewareSettings"] == {}


def test_enabled_device_filters_become_routing_rules() -> None:
    """Enabled filters of device-mode instances become rules named by the integrations key."""
    drop = Filter(id="f-1", if_='event = "Secret Event"', actions=({"type": "drop_event"},),
                  title="drop secret event")
    instances = [instance("braze-1", "braze", settings={"apiKey": "k", "datacenter": "us"},
                          filters=(drop,)),
                 instance("mp-1", "mixpanel", "CLOUD", settings={"token": "t"},
                          filters=(drop,))]

    doc = compile_source(source(), instances, CATALOG)

    rules = doc["middlewareSettings"]["routingRules"]
    assert [(r["destinationName"], r["transformers"]) for r in rules] == [
        ("Appboy", [[{"type": "drop"}]])]
    assert rules[0]["matchers"][0]["config"] == {"expr": 'event = "Secret Event"'}


def _filtered_web_instances() -> list[Instance]:
    drop = Filter(id="f-1", if_='event = "Secret Event"', actions=({"type": "drop_event"},),
                  title="drop secret event")
    return [replace(i, filters=(drop,)) if i.id == "braze-1" else i for i in web_instances()]


@pytest.mark.parametrize(("type_", "instances"), [
    pytest.param("web", _filtered_web_instances(), id="web-with-filter"),
    pytest.param("ios", [instance("amp-1", "amplitude", settings={"apiKey": "k"}),
                         instance("mp-1", "mixpanel", "CLOUD", settings={"token": "t"})],
                 id="ios"),
    pytest.param("server", [instance("mp-1", "mixpanel", "CLOUD", settings={"token": "t"})],
                 id="server"),
])
def test_compile_bytes_are_the_canonical_document(type_: SourceType,
                                                  instances: list[Instance]) -> None:
    """compile_bytes, which serialises once, gives exactly canonical_bytes(compile_source())."""
    body = compile_bytes(source(type_), instances, CATALOG)

    assert body == canonical_bytes(compile_source(source(type_), instances, CATALOG))
    assert body == compile_bytes(source(type_), instances, CATALOG)  # nothing was mutated


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for v in value.values():
            found += _walk(v)
    elif isinstance(value, list):
        for v in value:
            found += _walk(v)
    return found


@pytest.mark.parametrize(("type_", "instances"), [
    pytest.param("web", web_instances(), id="web-full"),
    pytest.param("web", [], id="web-empty"),
    pytest.param("project", [], id="project-empty"),
    pytest.param("ios", [], id="ios-empty"),
    pytest.param("android", [], id="android-empty"),
    pytest.param("server", [], id="server-empty"),
])
def test_no_null_anywhere(type_: SourceType, instances: list[Instance]) -> None:
    """Every top-level key is present as an object, array or boolean and no value is null."""
    doc = compile_source(source(type_), instances, CATALOG)

    assert {k: type(v) for k, v in doc.items()} == {
        "integrations": dict, "plan": dict, "metrics": dict, "middlewareSettings": dict,
        "enabledMiddleware": dict, "remotePlugins": list, "legacyVideoPluginsEnabled": bool,
        "edgeFunction": dict, "consentSettings": dict,
    }
    assert None not in _walk(doc)


def _assert_sorted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys)
    return dict(pairs)


def test_canonical_bytes_are_stable_and_sorted() -> None:
    """The same configuration in any order gives identical bytes, keys sorted at every level."""
    instances = web_instances()

    first = canonical_bytes(compile_source(source(), instances, CATALOG))
    second = canonical_bytes(compile_source(source(), instances[::-1], CATALOG))

    assert first == second
    assert json.loads(first, object_pairs_hook=_assert_sorted) == orjson.loads(first)
    assert b'": ' not in first and b'", "' not in first  # compact separators


def test_document_shares_no_mutable_values() -> None:
    """Changing a compiled document changes neither the instance's settings nor catalog defaults."""
    amp = instance("amp-1", "amplitude", settings={"apiKey": "k", "traitsToAppend": ["a"]})
    doc = compile_source(source(), [amp], CATALOG)

    doc["integrations"]["Amplitude"]["traitsToAppend"].append("b")
    doc["integrations"]["Amplitude"]["mapQueryParams"]["x"] = "y"

    assert amp.settings["traitsToAppend"] == ["a"]
    assert CATALOG.get("amplitude").settings["mapQueryParams"].default == {}


@pytest.mark.parametrize(("options", "expected_host", "expected_rate"), [
    pytest.param(CompileOptions(), "api.segment.io/v1", 0, id="defaults"),
    pytest.param(CompileOptions(api_host="events.example.com/v1", metrics_sample_rate=0.25),
                 "events.example.com/v1", 0.25, id="custom"),
])
def test_options_reach_the_document(options: CompileOptions, expected_host: str,
                                    expected_rate: float) -> None:
    """apiHost and metrics.sampleRate come from the compile options."""
    doc = compile_source(source(), [], CATALOG, options)

    assert doc["integrations"]["Segment.io"]["apiHost"] == expected_host
    assert doc["metrics"] == {"sampleRate": expected_rate}


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"api_host": ""}, "api_host", id="empty-host"),
    pytest.param({"api_host": "api example.com"}, "api_host", id="host-with-space"),
    pytest.param({"metrics_sample_rate": 1.5}, "metrics_sample_rate", id="rate-above-one"),
    pytest.param({"metrics_sample_rate": -0.1}, "metrics_sample_rate", id="rate-negative"),
    pytest.param({"metrics_sample_rate": float("nan")}, "metrics_sample_rate", id="rate-nan"),
    pytest.param({"metrics_sample_rate": True}, "metrics_sample_rate", id="rate-boolean"),
])
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """An invalid compile option fails at construction with a message naming it."""
    with pytest.raises(ValueError, match=message):
        CompileOptions(**kwargs)
