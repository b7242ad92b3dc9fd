"""How long after a publish can some cache still serve the old bundle? (pure)

A change is visible to a user only after every cache between Redis and the page has let go of
the old bundle. Three layers hold copies, each with a lifetime named by a setting:

    edge     E = EDGE_REFRESH_INTERVAL + G      (0 in instant mode: the publish expires it)
    shared   S = EDGE_S_MAXAGE + EDGE_STALE_WHILE_REVALIDATE      (CDN, nginx)
    browser  B = EDGE_MAX_AGE  + EDGE_STALE_WHILE_REVALIDATE

G = EDGE_REDIS_TIMEOUT + EDGE_REDIS_CONNECT_TIMEOUT is the re-check grace: a held copy due for
its re-check is served while the re-check runs in the background (edge/cache.py), at most G
past the interval; a request arriving later waits for the re-check.

``stale-while-revalidate`` counts in full: a cache may answer with its stale copy up to the end
of that window (the revalidation it triggers only helps the next request, RFC 5861 §3).

**Age.** The edge sends ``Age`` = seconds since it last verified its copy against Redis
(rounded up). RFC 9111 §5.1 defines ``Age`` as the time since the response was "generated or
successfully validated at the origin server", and §4.2.3 makes a cache start its copy at
``corrected_initial_age = max(apparent_age, Age + response_delay)``. Every old copy anywhere
was last verified at some instant v before the publish, so a cache that honours ``Age`` stops
serving it by v + its lifetime, and the layers do not add up::

    worst = max(E, S, B) + CLOCK_SLACK          EDGE_CACHES_HONOUR_AGE=true

Caches that ignore an upstream ``Age`` exist (stock nginx ``proxy_cache`` counts from its own
fetch), so by default the bound assumes each layer may start counting only when the layer
behind it last served the old copy — a chain::

    worst = E + S + B + CLOCK_SLACK             EDGE_CACHES_HONOUR_AGE=false (default)

A write key published for the first time was answered 404 before; that answer is cached by the
edge (``EDGE_NEGATIVE_TTL``, 0 in instant mode) and downstream (``EDGE_NOT_FOUND_MAX_AGE``, no
stale extensions), and its term joins with the same rule; the bound is the larger of the two.

**Whole seconds.** ``published_at`` (and ``Last-Modified``) is the publish instant truncated
to its second, and shared caches such as nginx keep whole-second clocks that count their
boundary second: each can let an old copy outlive the sum above by up to one second. The bound
adds ``CLOCK_SLACK`` = 2 s for them (found by the propagation simulation and the nginx test).

**stale-if-error** is not in the bound: a cache uses it only while its origin fails (RFC 5861
§4), and during such an outage no new bundle reaches that cache anyway. When the outage ends
the bound starts again from that moment (plus ``EDGE_REDIS_RETRY_INTERVAL`` when Redis was the
failing part). Instant mode's term is 0 while its subscription is up; while it is down the
edge falls back to its refresh interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge.settings import EdgeSettings

CLOCK_SLACK = 2  # seconds: published_at truncated to its second + whole-second shared caches

FORMULA_CHAIN = (
    "worst = max(E + S + B, E404 + 2*N404) + 2 s where "
    "E = 0 if instant else EDGE_REFRESH_INTERVAL + EDGE_REDIS_TIMEOUT "
    "+ EDGE_REDIS_CONNECT_TIMEOUT, "
    "S = EDGE_S_MAXAGE + EDGE_STALE_WHILE_REVALIDATE, "
    "B = EDGE_MAX_AGE + EDGE_STALE_WHILE_REVALIDATE, "
    "E404 = 0 if instant else EDGE_NEGATIVE_TTL, N404 = EDGE_NOT_FOUND_MAX_AGE "
    "(caches may ignore Age: the layers add up)"
)
FORMULA_AGE = (
    "worst = max(E, S, B, E404, N404) + 2 s with the same terms "
    "(every cache honours Age = seconds since the edge verified its copy: RFC 9111 §4.2.3)"
)


class BudgetExceeded(ValueError):
    """The configured lifetimes allow a worst case above ``EDGE_PROPAGATION_BUDGET``."""


@dataclass(frozen=True, slots=True)
class Terms:
    edge: float
    shared: int
    browser: int
    edge_not_found: float
    not_found: int


def recheck_grace(settings: EdgeSettings) -> float:
    """How long past ``EDGE_REFRESH_INTERVAL`` a held copy is served while its background
    re-check runs: one connect and one command, the longest a re-check may take."""
    return settings.redis_timeout + settings.redis_connect_timeout


def terms(settings: EdgeSettings) -> Terms:
    swr = settings.stale_while_revalidate
    return Terms(
        edge=0.0 if settings.instant else settings.refresh_interval + recheck_grace(settings),
        shared=settings.s_maxage + swr,
        browser=settings.max_age + swr,
        edge_not_found=0.0 if settings.instant else settings.negative_ttl,
        not_found=settings.not_found_max_age,
    )


def worst_case_seconds(settings: EdgeSettings) -> int:
    """Whole seconds from a publish until no cache layer can serve the previous answer."""
    t = terms(settings)
    if settings.caches_honour_age:
        worst = max(t.edge, t.shared, t.browser, t.edge_not_found, t.not_found)
    else:
        worst = max(t.edge + t.shared + t.browser, t.edge_not_found + 2 * t.not_found)
    return math.ceil(worst) + CLOCK_SLACK


def _contributors(settings: EdgeSettings) -> list[str]:
    """The settings in the term(s) that decide the worst case, as ``VAR=value``."""
    t = terms(settings)
    values = {
        "EDGE_REFRESH_INTERVAL": f"{settings.refresh_interval:g}",
        "EDGE_S_MAXAGE": str(settings.s_maxage),
        "EDGE_MAX_AGE": str(settings.max_age),
        "EDGE_STALE_WHILE_REVALIDATE": str(settings.stale_while_revalidate),
        "EDGE_NEGATIVE_TTL": f"{settings.negative_ttl:g}",
        "EDGE_NOT_FOUND_MAX_AGE": str(settings.not_found_max_age),
    }
    edge = [] if settings.instant else ["EDGE_REFRESH_INTERVAL"]  # (the grace is small)
    edge_404 = [] if settings.instant else ["EDGE_NEGATIVE_TTL"]
    swr = ["EDGE_STALE_WHILE_REVALIDATE"]
    if settings.caches_honour_age:
        groups = [
            (t.edge, edge), (t.shared, ["EDGE_S_MAXAGE", *swr]),
            (t.browser, ["EDGE_MAX_AGE", *swr]), (t.edge_not_found, edge_404),
            (float(t.not_found), ["EDGE_NOT_FOUND_MAX_AGE"]),
        ]
    else:
        groups = [
            (t.edge + t.shared + t.browser, [*edge, "EDGE_S_MAXAGE", "EDGE_MAX_AGE", *swr]),
            (t.edge_not_found + 2 * t.not_found, [*edge_404, "EDGE_NOT_FOUND_MAX_AGE"]),
        ]
    top = max(value for value, _ in groups)
    names: list[str] = []
    for value, group in groups:
        if value == top:
            names.extend(name for name in group if name not in names)
    return [f"{name}={values[name]}" for name in names]


def check_budget(settings: EdgeSettings) -> None:
    """Raise ``BudgetExceeded`` naming the settings at fault when the worst case is too long."""
    worst = worst_case_seconds(settings)
    if worst <= settings.propagation_budget:
        return
    raise BudgetExceeded(
        f"worst-case propagation is {worst} s, above EDGE_PROPAGATION_BUDGET="
        f"{settings.propagation_budget}; lower {', '.join(_contributors(settings))} "
        f"(or raise the budget)"
    )


def policy(settings: EdgeSettings) -> dict[str, Any]:
    """The effective policy as JSON-able data (``GET /v1/propagation``)."""
    t = terms(settings)
    worst = worst_case_seconds(settings)
    return {
        "lifetimes": {
            "edge_refresh_interval": settings.refresh_interval,
            "edge_recheck_grace": recheck_grace(settings),
            "max_age": settings.max_age,
            "s_maxage": settings.s_maxage,
            "stale_while_revalidate": settings.stale_while_revalidate,
            "stale_if_error": settings.stale_if_error,
            "negative_ttl": settings.negative_ttl,
            "not_found_max_age": settings.not_found_max_age,
        },
        "terms": {
            "edge": t.edge,
            "shared": t.shared,
            "browser": t.browser,
            "edge_not_found": t.edge_not_found,
            "not_found": t.not_found,
        },
        "instant": settings.instant,
        "caches_honour_age": settings.caches_honour_age,
        "age_header": "seconds since the edge last verified its copy against Redis",
        "worst_case_seconds": worst,
        "budget_seconds": settings.propagation_budget,
        "within_budget": worst <= settings.propagation_budget,
        "formula": FORMULA_AGE if settings.caches_honour_age else FORMULA_CHAIN,
        "stale_if_error": "not in the bound: used only while an origin fails; the bound "
        "restarts when the failure ends",
    }
