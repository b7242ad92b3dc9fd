"""The propagation model: worst case from the lifetimes, budget refusal, effective policy."""

from __future__ import annotations

import pytest

from edge import propagation
from edge.settings import EdgeSettings

SLACK = propagation.CLOCK_SLACK
BASE = {"refresh_interval": 30.0, "max_age": 60, "s_maxage": 300, "stale_while_revalidate": 60,
        "negative_ttl": 5.0, "not_found_max_age": 10}


@pytest.mark.parametrize(
    ("overrides", "worst"),
    [
        pytest.param({}, 31 + 360 + 120 + SLACK, id="defaults-chain"),  # 30 s + 0.5 s grace
        pytest.param({"instant": True}, 360 + 120 + SLACK, id="instant-drops-edge-term"),
        pytest.param({"caches_honour_age": True}, 360 + SLACK, id="age-honoured-max"),
        pytest.param({"caches_honour_age": True, "refresh_interval": 500.0}, 501 + SLACK,
                     id="age-honoured-edge-dominates"),
        pytest.param({"refresh_interval": 0.5, "max_age": 0, "s_maxage": 0,
                      "stale_while_revalidate": 0, "negative_ttl": 0.0,
                      "not_found_max_age": 0}, 1 + SLACK, id="rounded-up-to-seconds"),
        pytest.param({"max_age": 0, "s_maxage": 0, "stale_while_revalidate": 0,
                      "negative_ttl": 100.0, "not_found_max_age": 50}, 200 + SLACK,
                     id="first-publish-dominates"),
        pytest.param({"stale_if_error": 10**7}, 511 + SLACK, id="stale-if-error-not-in-bound"),
    ],
)
def test_worst_case_seconds(overrides: dict[str, object], worst: int) -> None:
    """The worst case follows the documented formula for each mode."""
    settings = EdgeSettings(**{**BASE, **overrides})  # type: ignore[arg-type]

    assert propagation.worst_case_seconds(settings) == worst


def test_defaults_land_within_the_budget() -> None:
    """The default settings pass the default 30-minute budget."""
    settings = EdgeSettings()

    propagation.check_budget(settings)
    assert propagation.worst_case_seconds(settings) <= settings.propagation_budget == 1800


@pytest.mark.parametrize(
    ("overrides", "named", "not_named"),
    [
        pytest.param({"s_maxage": 3600},
                     ["EDGE_REFRESH_INTERVAL=30", "EDGE_S_MAXAGE=3600", "EDGE_MAX_AGE=60",
                      "EDGE_STALE_WHILE_REVALIDATE=60"], ["EDGE_NEGATIVE_TTL"], id="chain"),
        pytest.param({"s_maxage": 3600, "instant": True}, ["EDGE_S_MAXAGE=3600"],
                     ["EDGE_REFRESH_INTERVAL"], id="instant"),
        pytest.param({"caches_honour_age": True, "max_age": 2000},
                     ["EDGE_MAX_AGE=2000", "EDGE_STALE_WHILE_REVALIDATE=60"],
                     ["EDGE_S_MAXAGE", "EDGE_REFRESH_INTERVAL"], id="age-max-term"),
        pytest.param({"negative_ttl": 1000.0, "not_found_max_age": 500},
                     ["EDGE_NEGATIVE_TTL=1000", "EDGE_NOT_FOUND_MAX_AGE=500"],
                     ["EDGE_S_MAXAGE"], id="first-publish"),
    ],
)
def test_budget_exceeded_names_the_settings_at_fault(
    overrides: dict[str, object], named: list[str], not_named: list[str]
) -> None:
    """Above the budget, BudgetExceeded names the worst case, the budget and the settings."""
    settings = EdgeSettings(**{**BASE, **overrides})  # type: ignore[arg-type]

    with pytest.raises(propagation.BudgetExceeded) as caught:
        propagation.check_budget(settings)

    message = str(caught.value)
    assert f"is {propagation.worst_case_seconds(settings)} s" in message
    assert "EDGE_PROPAGATION_BUDGET=1800" in message
    for item in named:
        assert item in message
    for name in not_named:
        assert name not in message


def test_policy_reports_lifetimes_terms_and_formula() -> None:
    """The effective policy lists each lifetime, the terms, the worst case and the budget."""
    policy = propagation.policy(EdgeSettings(instant=True))

    assert policy["lifetimes"] == {
        "edge_refresh_interval": 30.0, "edge_recheck_grace": 0.5, "max_age": 60, "s_maxage": 300,
        "stale_while_revalidate": 60, "stale_if_error": 86400, "negative_ttl": 5.0,
        "not_found_max_age": 10,
    }
    assert policy["terms"] == {"edge": 0.0, "shared": 360, "browser": 120,
                               "edge_not_found": 0.0, "not_found": 10}
    assert policy["worst_case_seconds"] == 480 + SLACK
    assert (policy["budget_seconds"], policy["within_budget"], policy["instant"]) == (
        1800, True, True)
    assert policy["formula"] == propagation.FORMULA_CHAIN


def _last_old_serve(settings: EdgeSettings, verified: float, publish: float) -> float:
    """Latest instant any layer can still hand out the old bundle, layer by layer.

    The edge verified its old copy at ``verified`` (before ``publish``) and keeps it for the
    refresh interval and the re-check grace; a shared cache fetches it at the last moment the
    edge still serves it and keeps it for s-maxage + swr; the browser fetches from the shared
    cache at the last moment it still serves it. Caches that ignore Age count from their own fetch.
    """
    edge_until = publish if settings.instant else (verified + settings.refresh_interval
                                                   + propagation.recheck_grace(settings))
    shared_until = edge_until + settings.s_maxage + settings.stale_while_revalidate
    browser_until = shared_until + settings.max_age + settings.stale_while_revalidate
    return browser_until


@pytest.mark.parametrize("instant", [pytest.param(False, id="refresh"),
                                     pytest.param(True, id="instant")])
def test_chain_simulation_stays_within_worst_case(instant: bool) -> None:
    """Walking every layer's expiry from the worst verification instant stays within the bound."""
    settings = EdgeSettings(instant=instant)
    publish = 10_000.0

    latest = max(_last_old_serve(settings, publish - d / 10, publish) for d in range(0, 1000))

    assert latest - publish <= propagation.worst_case_seconds(settings)
    # and it is tight: only the whole-second slack separates the model from the bound
    assert latest - publish > propagation.worst_case_seconds(settings) - SLACK - 1
