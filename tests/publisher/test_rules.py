"""Table tests for the destination rules, against the real shipped catalog."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any, cast

import pytest

from publisher.core.catalog import Catalog, default_catalog
from publisher.core.model import Instance, Source
from publisher.core.rules import RULES, RuleLimits, check_source, default_display_name
from publisher.errors import InvalidArgument, RuleViolation

_ids = itertools.count(1)


def src(type_: str = "web") -> Source:
    return Source(id=1, workspace_id=1, slug=f"my-{type_}", name=f"My {type_.title()}",
                  type=cast(Any, type_), write_key="wk")


def inst(slug: str, mode: str = "CLOUD", name: str | None = None, *,
         enabled: bool = True) -> Instance:
    n = next(_ids)
    return Instance(id=f"i{n}", catalog_slug=slug, display_name=name or f"{slug} #{n}",
                    connection_mode=cast(Any, mode), enabled=enabled)


def many(slug: str, mode: str, count: int, *, enabled: bool = True) -> list[Instance]:
    return [inst(slug, mode, enabled=enabled) for _ in range(count)]


@pytest.mark.parametrize(("source_type", "instances", "limits"), [
    pytest.param("web", [], RuleLimits(), id="empty-source"),
    pytest.param("web", [*many("amplitude", "CLOUD", 10), inst("amplitude", "DEVICE")],
                 RuleLimits(), id="web-10-cloud-and-1-device-amplitude"),
    pytest.param("web", many("webhooks", "CLOUD", 3), RuleLimits(), id="webhooks-cloud-only-x3"),
    pytest.param("web", many("amplitude", "CLOUD", 11), RuleLimits(max_cloud_instances=11),
                 id="limit-is-a-setting"),
    pytest.param("web", [inst("hotjar", "DEVICE"), inst("fullstory", "DEVICE"),
                         inst("amplitude", "DEVICE"), inst("braze", "DEVICE")],
                 RuleLimits(), id="web-one-device-instance-each"),
    pytest.param("ios", [inst("mixpanel", "DEVICE"), inst("amplitude", "CLOUD"),
                         inst("webhooks", "CLOUD")], RuleLimits(), id="ios-one-of-each"),
    pytest.param("android", [inst("braze", "DEVICE")], RuleLimits(), id="android-device"),
    pytest.param("server", [inst("amplitude", "CLOUD"), *many("webhooks", "CLOUD", 2),
                            inst("data-lakes", "CLOUD")], RuleLimits(), id="server-cloud"),
    pytest.param("project", [inst("hotjar", "DEVICE"), inst("amplitude", "CLOUD")],
                 RuleLimits(), id="project-single-instances"),
    pytest.param("web", [inst("Amplitude", "CLOUD"), inst("amplitude", "DEVICE")],
                 RuleLimits(), id="destination-by-catalog-name"),
])
def test_allowed(source_type: str, instances: list[Instance], limits: RuleLimits) -> None:
    """A set of instances that keeps every rule is accepted."""
    check_source(src(source_type), instances, default_catalog(), limits)


@pytest.mark.parametrize(("source_type", "instances", "limits", "code"), [
    pytest.param("web", [inst("amplitude", name="Amplitude"), inst("webhooks", name=" amplitude ")],
                 RuleLimits(), "duplicate_display_name", id="duplicate-name-case-and-space"),
    pytest.param("web", [inst("amplitude", name="   ")], RuleLimits(), "display_name_required",
                 id="blank-display-name"),
    pytest.param("web", [inst("amplitude", "EDGE")], RuleLimits(), "invalid_connection_mode",
                 id="unknown-mode"),
    pytest.param("web", [inst("amplitude", "device")], RuleLimits(), "invalid_connection_mode",
                 id="lowercase-mode"),
    pytest.param("server", [inst("amplitude", "DEVICE")], RuleLimits(),
                 "no_device_mode_on_server", id="server-device"),
    pytest.param("server", [inst("hotjar", "CLOUD")], RuleLimits(), "mode_not_supported",
                 id="server-cloud-unsupported"),
    pytest.param("web", [inst("hotjar", "CLOUD")], RuleLimits(), "mode_not_supported",
                 id="web-cloud-device-only-destination"),
    pytest.param("web", [inst("webhooks", "DEVICE")], RuleLimits(), "mode_not_supported",
                 id="web-device-cloud-only-destination"),
    pytest.param("ios", [inst("hotjar", "DEVICE")], RuleLimits(), "mode_not_supported",
                 id="ios-device-web-only-destination"),
    pytest.param("ios", [inst("mixpanel", "DEVICE"), inst("mixpanel", "CLOUD")], RuleLimits(),
                 "single_instance_source", id="ios-second-mixpanel"),
    pytest.param("android", many("webhooks", "CLOUD", 2), RuleLimits(),
                 "single_instance_source", id="android-second-cloud-only"),
    pytest.param("project", many("amplitude", "CLOUD", 2), RuleLimits(),
                 "single_instance_source", id="project-second-amplitude"),
    pytest.param("ios", [inst("mixpanel", "CLOUD"), inst("mixpanel", "CLOUD", enabled=False)],
                 RuleLimits(), "single_instance_source", id="disabled-instances-count"),
    pytest.param("web", many("data-lakes", "CLOUD", 2), RuleLimits(),
                 "data_lakes_single_instance", id="second-data-lakes"),
    pytest.param("web", many("hotjar", "DEVICE", 2), RuleLimits(),
                 "device_only_single_instance", id="second-hotjar"),
    pytest.param("web", many("1flow", "CLOUD", 2), RuleLimits(), "multi_instance_unsupported",
                 id="second-unsupported-class"),
    pytest.param("web", many("amplitude", "DEVICE", 2), RuleLimits(), "one_device_instance",
                 id="two-device-amplitude"),
    pytest.param("web", [inst("amplitude", "DEVICE"), inst("amplitude", "DEVICE", enabled=False)],
                 RuleLimits(), "one_device_instance", id="disabled-device-counts"),
    pytest.param("web", many("amplitude", "CLOUD", 11), RuleLimits(), "cloud_instance_limit",
                 id="eleven-cloud-amplitude"),
    pytest.param("web", [*many("webhooks", "CLOUD", 10), inst("webhooks", enabled=False)],
                 RuleLimits(), "cloud_instance_limit", id="disabled-cloud-counts"),
    pytest.param("web", many("webhooks", "CLOUD", 3), RuleLimits(max_cloud_instances=2),
                 "cloud_instance_limit", id="configured-limit"),
    pytest.param("tvos", [], RuleLimits(), "invalid_source_type", id="unknown-source-type"),
])
def test_refused(source_type: str, instances: list[Instance], limits: RuleLimits,
                 code: str) -> None:
    """A set of instances that breaks a rule is refused with that rule's code."""
    with pytest.raises(RuleViolation) as info:
        check_source(src(source_type), instances, default_catalog(), limits)

    assert info.value.code == code
    assert code in RULES


@pytest.mark.parametrize(("instances", "code"), [
    pytest.param([inst("hotjar", "DEVICE", "Same"), inst("hotjar", "DEVICE", "Same")],
                 "device_only_single_instance", id="refused-connection-beats-duplicate-name"),
    pytest.param([inst("amplitude", "DEVICE"), inst("hotjar", "CLOUD"),
                  *many("amplitude", "DEVICE", 1)], "mode_not_supported",
                 id="per-instance-before-per-destination"),
    pytest.param(many("data-lakes", "CLOUD", 2), "data_lakes_single_instance",
                 id="data-lakes-beats-its-unsupported-class"),
    pytest.param([*many("amplitude", "DEVICE", 2), *many("amplitude", "CLOUD", 11)],
                 "one_device_instance", id="device-before-cloud-limit"),
])
def test_most_specific_rule_wins(instances: list[Instance], code: str) -> None:
    """When several rules are broken, the documented order decides which one is reported."""
    with pytest.raises(RuleViolation) as info:
        check_source(src("web"), instances, default_catalog())

    assert info.value.code == code


def test_project_source_beats_device_only() -> None:
    """A second device-only instance on a project source is refused for the source's sake."""
    with pytest.raises(RuleViolation) as info:
        check_source(src("project"), many("hotjar", "DEVICE", 2), default_catalog())

    assert info.value.code == "single_instance_source"


def test_one_device_instance_whatever_the_class() -> None:
    """Two device-mode instances are refused even for a class that allows several instances."""
    webhooks = default_catalog().get("webhooks")
    hybrid = dataclasses.replace(webhooks, device_web=True)
    catalog = Catalog([hybrid])

    with pytest.raises(RuleViolation) as info:
        check_source(src("web"), many("webhooks", "DEVICE", 2), catalog)

    assert info.value.code == "one_device_instance"


def test_message_names_source_destination_and_rule() -> None:
    """A refusal's message names the source, the instance, the catalog destination and the rule."""
    instances = [inst("amplitude", "DEVICE", "Amp A"), inst("amplitude", "DEVICE", "Amp B")]

    with pytest.raises(RuleViolation) as info:
        check_source(src("web"), instances, default_catalog())

    message = info.value.message
    assert "'my-web'" in message and "My Web" in message
    assert "'Amp B'" in message and "Amplitude" in message
    assert "one_device_instance" in message
    assert info.value.to_dict()["reason"] == "one_device_instance"


def test_mode_not_supported_names_mode_and_source_type() -> None:
    """An unsupported mode is refused with a message naming the mode and the source type."""
    with pytest.raises(RuleViolation) as info:
        check_source(src("ios"), [inst("hotjar", "DEVICE")], default_catalog())

    assert "DEVICE" in info.value.message and "ios" in info.value.message


def test_unknown_destination() -> None:
    """An unknown catalog slug is refused as invalid input naming the slug and the source."""
    with pytest.raises(InvalidArgument) as info:
        check_source(src("web"), [inst("no-such-destination")], default_catalog())

    assert info.value.code == "unknown_destination"
    assert "no-such-destination" in info.value.message and "my-web" in info.value.message
    assert not isinstance(info.value, RuleViolation)


@pytest.mark.parametrize(("slug", "existing", "given", "expected"), [
    pytest.param("amplitude", [], None, "Amplitude", id="first-defaults-to-catalog-name"),
    pytest.param("braze", [], None, "Braze", id="catalog-name-not-integrations-key"),
    pytest.param("amplitude", [], "  Amp EU ", "Amp EU", id="given-is-stripped"),
    pytest.param("amplitude", [inst("amplitude", name="Amplitude")], "Amp 2", "Amp 2",
                 id="given-wins-for-second"),
    pytest.param("amplitude", [inst("webhooks", name="Hooks")], None, "Amplitude",
                 id="other-destination-does-not-count"),
])
def test_default_display_name(slug: str, existing: Sequence[Instance], given: str | None,
                              expected: str) -> None:
    """A given name wins; otherwise the first instance of a destination takes the catalog name."""
    dest = default_catalog().get(slug)

    assert default_display_name(dest, existing, given) == expected


@pytest.mark.parametrize(("existing", "given"), [
    pytest.param([inst("amplitude", name="Amplitude")], None, id="second-unnamed"),
    pytest.param([inst("amplitude", "CLOUD", enabled=False)], None, id="disabled-first-counts"),
    pytest.param([], "", id="empty"),
    pytest.param([], " \t", id="whitespace"),
    pytest.param([], cast(Any, 42), id="not-a-string"),
])
def test_default_display_name_required(existing: Sequence[Instance], given: str | None) -> None:
    """A later instance, or a blank or non-string name, is refused with display_name_required."""
    dest = default_catalog().get("amplitude")

    with pytest.raises(RuleViolation) as info:
        default_display_name(dest, existing, given)

    assert info.value.code == "display_name_required"
    assert "Amplitude" in info.value.message


@pytest.mark.parametrize("value", [
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(True, id="bool"),
    pytest.param("10", id="string"),
])
def test_limits_reject_bad_values(value: Any) -> None:
    """A bad cloud-instance limit fails at construction naming the setting and the value."""
    with pytest.raises(ValueError, match=r"PUBLISHER_MAX_CLOUD_INSTANCES.*"):
        RuleLimits(max_cloud_instances=value)


def test_every_rule_code_is_described() -> None:
    """Every rule code has a one-line description for the README."""
    assert all(isinstance(v, str) and v and "\n" not in v for v in RULES.values())
