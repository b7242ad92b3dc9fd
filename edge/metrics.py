"""Counters the edge keeps in memory and renders in the Prometheus text format (0.0.4).

Plain integer attributes, so the hot path pays one attribute increment per event; no client
library, no locks (one event loop per worker; each worker reports its own counts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (route, status) -> count
        self.cache_hits = 0
        self.inline_answers = 0  # settings GET/HEAD answered by edge/server.py itself
        self.cache_misses = 0
        self.cache_refreshes = 0
        self.stale_serves = 0
        self.negative_hits = 0
        self.redis_errors = 0
        self.unavailable = 0
        self.instant_rechecks = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    metrics: Metrics,
    *,
    cached: Iterable[tuple[str, int, bool]],
    negative_entries: int,
    redis_up: bool,
    subscribed: bool | None,
) -> str:
    """The exposition text; ``cached`` yields ``(write_key, version, stale)`` per bundle held."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value:g}")

    family(
        "edge_http_requests_total", "counter", "HTTP responses by route and status.",
        (
            (f'{{route="{route}",status="{status}"}}', count)
            for (route, status), count in sorted(metrics.requests.items())
        ),
    )
    family("edge_cache_hits_total", "counter", "Bundles served from memory without Redis.",
           [("", metrics.cache_hits)])
    family("edge_inline_answers_total", "counter",
           "Settings GET/HEAD answered by the HTTP protocol itself, without the ASGI app "
           "(EDGE_FAST_PATH).", [("", metrics.inline_answers)])
    family("edge_cache_misses_total", "counter", "Lookups of keys not held in memory.",
           [("", metrics.cache_misses)])
    family("edge_cache_refreshes_total", "counter",
           "Pointer re-checks of held bundles after the refresh interval.",
           [("", metrics.cache_refreshes)])
    family("edge_cache_stale_serves_total", "counter",
           "Bundles served stale because Redis could not be reached.",
           [("", metrics.stale_serves)])
    family("edge_negative_cache_hits_total", "counter",
           "Unknown write keys answered from the negative cache.",
           [("", metrics.negative_hits)])
    family("edge_redis_errors_total", "counter", "Failed Redis reads.",
           [("", metrics.redis_errors)])
    family("edge_unavailable_total", "counter",
           "503 answers: key never seen while Redis was unreachable.",
           [("", metrics.unavailable)])
    family("edge_instant_rechecks_total", "counter",
           "Held bundles a publish message sent to re-check against Redis (instant mode).",
           [("", metrics.instant_rechecks)])
    rows = list(cached)
    family("edge_cache_entries", "gauge", "Bundles held in memory.", [("", len(rows))])
    family("edge_cache_stale_entries", "gauge", "Held bundles currently marked stale.",
           [("", sum(1 for _, _, stale in rows if stale))])
    family("edge_negative_cache_entries", "gauge", "Unknown write keys remembered.",
           [("", negative_entries)])
    family("edge_redis_up", "gauge", "1 when the last Redis read succeeded.",
           [("", 1 if redis_up else 0)])
    if subscribed is not None:
        family("edge_instant_subscribed", "gauge", "1 while the publish channel subscription "
               "is live.", [("", 1 if subscribed else 0)])
    family(
        "edge_bundle_version", "gauge", "Version of each held bundle (bounded by the cache size).",
        ((f'{{write_key="{_escape(wk)}"}}', version) for wk, version, _ in sorted(rows)),
    )
    return "\n".join(out) + "\n"
