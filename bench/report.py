"""Medians, ratios, the noise check, pass/fail against the targets, and the table.

A ratio is the median over rounds of the per-round ratio: rounds are interleaved (edge,
nginx, limit, edge, ...), so each round's pair ran seconds apart and slow drift on a shared
machine cancels out of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.wrk import WrkResult

# Pairs whose ratio is printed as `ratio <scenario> <a>/<b> = <x>`.
PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "hot-200": (("edge", "nginx"), ("edge", "asgi-limit"), ("edge-asgi", "asgi-limit"),
                ("edge", "protocol-limit")),
    "304": (("edge", "nginx"), ("edge", "asgi-limit"), ("edge-asgi", "asgi-limit"),
            ("edge", "protocol-limit")),
    "latency-8c": (("edge", "nginx"), ("edge", "asgi-limit")),
    "cold": (("edge", "nginx"),),
    "unknown": (("edge", "nginx"),),
    "proxy-hit": (("nginx-proxy", "nginx"), ("nginx-proxy-ttl", "nginx")),
}


@dataclass(frozen=True)
class Run:
    scenario: str
    target: str
    round: int
    result: WrkResult


@dataclass(frozen=True)
class Check:
    name: str
    threshold: str
    value: float | None
    passed: bool | None  # None: not measured in this run
    unit: str = ""

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]
        shown = "—" if self.value is None else f"{self.value:.3g}{self.unit}"
        return f"| {self.name} | {self.threshold} | {shown} | {verdict} |"


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def of(self, scenario: str, target: str) -> list[WrkResult]:
        return [r.result for r in self.runs if r.scenario == scenario and r.target == target]

    def median_rps(self, scenario: str, target: str) -> float | None:
        values = [r.rps for r in self.of(scenario, target)]
        return statistics.median(values) if values else None

    def median_p99(self, scenario: str, target: str) -> float | None:
        values = [r.p99_ms for r in self.of(scenario, target)]
        return statistics.median(values) if values else None

    def ratio(self, scenario: str, a: str, b: str, scenario_b: str | None = None) -> float | None:
        """Median over rounds of rps(a in round i) / rps(b in round i)."""
        by_round: dict[int, dict[str, float]] = {}
        for run in self.runs:
            if run.scenario == scenario and run.target == a:
                by_round.setdefault(run.round, {})["a"] = run.result.rps
            if run.scenario == (scenario_b or scenario) and run.target == b:
                by_round.setdefault(run.round, {})["b"] = run.result.rps
        ratios = [v["a"] / v["b"] for v in by_round.values()
                  if "a" in v and "b" in v and v["b"] > 0]
        return statistics.median(ratios) if ratios else None

    def ratio_lines(self) -> list[str]:
        lines = []
        for scenario, pairs in PAIRS.items():
            for a, b in pairs:
                value = self.ratio(scenario, a, b)
                if value is not None:
                    lines.append(f"ratio {scenario} {a}/{b} = {value:.2f}")
        cold = self.ratio("cold", "edge", "edge", scenario_b="hot-200")
        if cold is not None:
            lines.append(f"ratio cold edge/edge-hot-200 = {cold:.2f}")
        return lines


OUTAGE_WINDOWS = ("before", "frozen", "recovery")
OUTAGE_CLIENT_LATE_MS = 1.0  # above it, a noise note: the open-loop client fell behind


def outage_lines(x: dict[str, Any]) -> list[str]:
    """The outage phase's lines (bench/outage.py), from ``Results.extra``; none when it did
    not run. The first two are the targets' values: p99 of the requests for keys the edge held
    that were scheduled while Redis was frozen, and their bad answers over the whole phase."""
    if "outage_p99_seen_ms" not in x:
        return []
    lines = [f"outage p99 seen-keys = {_ms(x['outage_p99_seen_ms'])} ms",
             f"outage bad answers seen-keys = {x['outage_bad_seen']}",
             f"outage p99 seen-keys recovery = {_ms(x.get('outage_p99_seen_recovery_ms'))} ms"]
    windows = x.get("outage_windows", {})
    for kind in ("seen", "cold"):
        for name in OUTAGE_WINDOWS:
            w = windows.get(kind, {}).get(name)
            if not w:
                continue
            label = f"outage {kind}-keys {name}"
            if not w["requests"]:
                lines.append(f"{label}: no requests")
                continue
            codes = ", ".join(f"{k} ×{v:,}" for k, v in sorted(w["statuses"].items()))
            lines.append(f"{label}: {w['requests']:,} requests, p50 {w['p50_ms']:.2f} ms, "
                         f"p99 {w['p99_ms']:.2f} ms, max {w['max_ms']:.2f} ms, "
                         f"bad {w['bad']:,} ({codes}); client late p99 "
                         f"{w['late_p99_ms']:.2f} ms")
    return lines


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (stdev / mean); 0 for fewer than two values."""
    if len(values) < 2 or statistics.mean(values) == 0:
        return 0.0
    return statistics.stdev(values) / statistics.mean(values)


def noise_notes(results: Results, *, throughput_scenarios: Sequence[str]) -> list[str]:
    """What made the numbers less trustworthy: wrk saturated, foreign load, round spread."""
    notes: list[str] = []
    groups = sorted({(r.scenario, r.target) for r in results.runs})
    for scenario, target in groups:
        runs = results.of(scenario, target)
        spread = cv([r.rps for r in runs])
        if spread > 0.10:
            notes.append(f"{scenario}/{target}: rounds vary by {spread:.0%} (CV) — noisy")
        for r in runs:
            if r.wrk_cpu > 0.9 and r.server_cpu < 0.9:
                notes.append(f"{scenario}/{target}: wrk used {r.wrk_cpu:.0%} of its core while "
                             f"the server used {r.server_cpu:.0%}: the load generator may be "
                             "the bottleneck")
                break
        foreign = max((r.server_core_busy - r.server_cpu for r in runs), default=0.0)
        if foreign > 0.10:
            notes.append(f"{scenario}/{target}: up to {foreign:.0%} of the server core was used "
                         "by other processes")
        if scenario in throughput_scenarios:
            idle = [r.server_cpu for r in runs if r.server_cpu < 0.8]
            if idle and not target.startswith("nginx-proxy"):
                notes.append(f"{scenario}/{target}: the server was not saturated "
                             f"(min {min(idle):.0%} of its core)")
        errors = sum(r.socket_errors for r in runs)
        if errors:
            notes.append(f"{scenario}/{target}: {errors} socket errors")
    for kind, by in results.extra.get("outage_windows", {}).items():
        for name, w in by.items():
            late = w.get("late_p99_ms")
            if late is not None and late > OUTAGE_CLIENT_LATE_MS:
                notes.append(f"outage {kind}-keys {name}: the client sent its requests up to "
                             f"{late:.1f} ms late (p99); their latencies include that")
    return notes


# The baseline machine the targets were set on: one nginx worker serving a 5 KB static file to
# 64 connections at about 88,000 requests/s. The absolute targets (p99 at 8 connections,
# republish time, API write to the edge) were set there; the ratios compare servers on whatever
# machine runs them.
BASELINE_NGINX_RPS = 88_000
SLOW_MACHINE = 0.7


def machine_speed(results: Results) -> float | None:
    """nginx static's hot-200 rate over the baseline machine's: the machine's speed for this job
    (the fourth session's two runs: 1.00 and 1.07; the fifth's: 0.45 and 0.48)."""
    rps = results.median_rps("hot-200", "nginx")
    return None if rps is None else rps / BASELINE_NGINX_RPS


def speed_line(results: Results) -> str:
    rps = results.median_rps("hot-200", "nginx")
    if rps is None:
        return "machine speed: not measured (no hot-200 nginx rounds)"
    return (f"machine speed: nginx static served {rps:,.0f} hot 200s/s, "
            f"{rps / BASELINE_NGINX_RPS:.2f} × the baseline machine's ~{BASELINE_NGINX_RPS:,}")


def speed_notes(results: Results) -> list[str]:
    """A note when the machine is too slow for the absolute targets to say much."""
    speed = machine_speed(results)
    if speed is None or speed >= SLOW_MACHINE:
        return []
    return [f"a slow machine: nginx static ran at {speed:.2f} × the baseline machine's, so the "
            "absolute targets (p99 at 8 connections, republish seconds, API write → edge) "
            "ask more of it than of the machine they were set on; ratios compare servers on "
            "this one"]


def table(results: Results) -> str:
    head = ("| scenario | server | median req/s | rounds (req/s) | CV | p50 ms | p99 ms "
            "| B/resp | non-2xx/3xx | server CPU | wrk CPU |")
    lines = [head, "|" + "---|" * 11]
    order = {"edge": 0, "edge-asgi": 1, "nginx": 2, "asgi-limit": 3, "protocol-limit": 4,
             "nginx-proxy": 5, "nginx-proxy-ttl": 6}
    seen: list[tuple[str, str]] = []
    for run in results.runs:
        key = (run.scenario, run.target)
        if key not in seen:
            seen.append(key)
    scen_order = list(dict.fromkeys(s for s, _ in seen))
    seen.sort(key=lambda k: (scen_order.index(k[0]), order.get(k[1], 9)))
    for scenario, target in seen:
        runs = results.of(scenario, target)
        rps = [r.rps for r in runs]
        lines.append(
            f"| {scenario} | {target} | {statistics.median(rps):,.0f} | "
            f"{' / '.join(f'{v:,.0f}' for v in rps)} | {cv(rps):.1%} | "
            f"{statistics.median(r.p50_ms for r in runs):.2f} | "
            f"{statistics.median(r.p99_ms for r in runs):.2f} | "
            f"{statistics.median(r.bytes_per_request for r in runs):,.0f} | "
            f"{sum(r.status_errors for r in runs) / max(1, sum(r.requests for r in runs)):.0%} | "
            f"{statistics.median(r.server_cpu for r in runs):.0%} | "
            f"{statistics.median(r.wrk_cpu for r in runs):.0%} |")
    return "\n".join(lines)


def _at_least(name: str, value: float | None, threshold: float, text: str) -> Check:
    return Check(name, text, value, None if value is None else value >= threshold)


def _at_most(name: str, value: float | None, threshold: float, text: str,
             unit: str = "") -> Check:
    return Check(name, text, value, None if value is None else value <= threshold, unit)


def checks(results: Results) -> list[Check]:
    """The targets (bench/README.md), each PASS / FAIL / n/a (not measured in this run)."""
    r, x = results, results.extra
    out = [
        _at_least("hot-200 edge/asgi-limit", r.ratio("hot-200", "edge", "asgi-limit"), 0.85,
                  "≥ 0.85"),
        _at_least("304 edge/asgi-limit", r.ratio("304", "edge", "asgi-limit"), 0.85, "≥ 0.85"),
        _at_least("hot-200 edge/nginx", r.ratio("hot-200", "edge", "nginx"), 0.35,
                  "≥ 0.35 (stretch 0.5)"),
        _at_least("304 edge/nginx", r.ratio("304", "edge", "nginx"), 0.35,
                  "≥ 0.35 (stretch 0.5)"),
        _at_least("proxy-hit nginx-proxy/nginx", r.ratio("proxy-hit", "nginx-proxy", "nginx"),
                  0.8, "≥ 0.8"),
        _at_most("latency-8c edge p99", r.median_p99("latency-8c", "edge"), 2.0, "≤ 2 ms",
                 " ms"),
        _at_least("cold edge / hot-200 edge", r.ratio("cold", "edge", "edge", "hot-200"), 0.3,
                  "≥ 0.3"),
    ]
    n = x.get("republish_sources")
    seconds = x.get("republish_seconds")
    if n and seconds:
        projected = seconds * 100_000 / n
        name = "republish --all, 100k sources" if n >= 100_000 else (
            f"republish --all ({n:,} sources, scaled to 100k)")
        out.append(_at_most(name, projected, 60.0, "≤ 60 s", " s"))
    else:
        out.append(Check("republish --all, 100k sources", "≤ 60 s", None, None))
    out.append(_at_most("outage p99 seen-keys (Redis frozen)", x.get("outage_p99_seen_ms"),
                        10.0, "≤ 10 ms", " ms"))
    out.append(_at_most("outage p99 seen-keys, recovery after SIGCONT",
                        x.get("outage_p99_seen_recovery_ms"), 10.0, "≤ 10 ms", " ms"))
    out.append(_at_most("outage bad answers seen-keys", x.get("outage_bad_seen"), 0, "0"))
    out.append(_at_most("API write → edge, instant p99", x.get("instant_p99_ms"), 50.0,
                        "≤ 50 ms", " ms"))
    out.append(_at_most("topology write → every edge (2 replicas, 3 edges) p99",
                        x.get("topology_p99_ms"), 100.0, "≤ 100 ms", " ms"))
    for rss_key, held_key, what in (("rss_bytes", "held_bytes", "gzip held"),
                                    ("rss_identity_bytes", "held_identity_bytes",
                                     "gzip + JSON held")):
        rss, held = x.get(rss_key), x.get(held_key)
        name = f"edge RSS with {x.get('rss_bundles', 100_000):,} bundles, {what} / allowance"
        if rss and held:
            allowed = 1.5 * held + 100 * 2**20
            out.append(Check(name, "≤ 1.0 (1.5 × bytes held + 100 MB)", rss / allowed,
                             rss <= allowed))
        else:
            out.append(Check(name, "≤ 1.5 × bytes held + 100 MB", None, None))
    return out


def checks_table(items: Sequence[Check]) -> str:
    return "\n".join(["| target | threshold | measured | result |", "|---|---|---|---|",
                      *(c.line() for c in items)])
