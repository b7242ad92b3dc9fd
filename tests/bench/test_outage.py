"""The outage phase's arithmetic: windows, percentiles, the printed lines and the targets."""

from __future__ import annotations

import re

import pytest

from bench import outage, report


def _record(rows: list[tuple[float, float, int, bool]]) -> dict[str, list[object]]:
    return {"sched": [r[0] for r in rows], "latency": [r[1] for r in rows],
            "status": [r[2] for r in rows], "cold": [r[3] for r in rows],
            "late": [0.0 for _ in rows]}


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert outage.percentile(values, 99) == 99.0
    assert outage.percentile(values, 50) == 50.0
    assert outage.percentile([7.0], 99) == 7.0
    assert outage.percentile([1.0, 2.0], 99) == 2.0


def test_requests_fall_in_the_window_of_their_scheduled_instant() -> None:
    # Given requests scheduled before, during and after a freeze from 1.0 s to 3.0 s
    record = _record([
        (0.5, 0.001, 200, False),
        (0.999, 0.002, 200, False),
        (1.0, 0.250, 200, False),  # scheduled at the freeze: frozen, however late answered
        (2.9, 0.400, 503, False),
        (2.95, 0.001, 0, False),  # the connection failed
        (2.0, 0.250, 503, True),  # a key the edge did not hold
        (3.0, 0.003, 304, False),
        (3.5, 0.010, -1, False),  # no answer by the end
    ])

    # When they are summarized
    windows = outage.summarize(record, frozen_at=1.0, resumed_at=3.0)

    # Then each window counts its own, latencies in ms, bad = neither 200 nor 304
    seen = windows["seen"]
    assert (seen["before"].requests, seen["before"].bad) == (2, 0)
    assert (seen["frozen"].requests, seen["frozen"].bad) == (3, 2)
    assert seen["frozen"].p99_ms == pytest.approx(400.0)
    assert seen["frozen"].statuses == {"200": 1, "503": 1, "0": 1}
    assert (seen["recovery"].requests, seen["recovery"].bad) == (2, 1)
    assert windows["cold"]["frozen"].statuses == {"503": 1}
    assert windows["cold"]["before"].requests == 0
    assert windows["cold"]["before"].p99_ms is None


def _extra(p99: float, recovery: float, bad: int) -> dict[str, object]:
    windows = outage.summarize(_record([(0.5, 0.001, 200, False), (1.5, p99 / 1000, 200, False),
                                        (3.5, recovery / 1000, 200, False)]), 1.0, 3.0)
    return {"outage_p99_seen_ms": p99, "outage_p99_seen_recovery_ms": recovery,
            "outage_bad_seen": bad,
            "outage_windows": {k: {n: vars(w) for n, w in by.items()}
                               for k, by in windows.items()}}


def test_the_printed_lines_carry_the_two_values() -> None:
    lines = report.outage_lines(_extra(251.234, 3.5, 7))
    assert lines[0] == "outage p99 seen-keys = 251.23 ms"
    assert lines[1] == "outage bad answers seen-keys = 7"
    assert lines[2] == "outage p99 seen-keys recovery = 3.50 ms"
    assert any(re.match(r"outage seen-keys frozen: 1 requests, p50 251\.23 ms", x)
               for x in lines)
    assert "outage cold-keys frozen: no requests" in lines
    assert report.outage_lines({}) == []


@pytest.mark.parametrize(("p99", "recovery", "bad", "verdicts"), [
    (4.0, 2.0, 0, [True, True, True]),
    (251.0, 2.0, 0, [False, True, True]),
    (4.0, 30.0, 0, [True, False, True]),
    (4.0, 2.0, 1, [True, True, False]),
])
def test_the_targets_are_p99_at_most_10_ms_and_no_bad_answer(
        p99: float, recovery: float, bad: int, verdicts: list[bool]) -> None:
    results = report.Results(extra=_extra(p99, recovery, bad))
    checks = {c.name: c for c in report.checks(results)}
    got = [checks["outage p99 seen-keys (Redis frozen)"].passed,
           checks["outage p99 seen-keys, recovery after SIGCONT"].passed,
           checks["outage bad answers seen-keys"].passed]
    assert got == verdicts


def test_no_outage_phase_no_verdict() -> None:
    checks = {c.name: c for c in report.checks(report.Results())}
    assert checks["outage p99 seen-keys (Redis frozen)"].passed is None
    assert checks["outage bad answers seen-keys"].passed is None


def test_a_late_client_is_named_in_the_noise_notes() -> None:
    # Given a frozen window whose requests the client sent up to 300 ms late
    extra = _extra(800.0, 3.0, 0)
    extra["outage_windows"]["seen"]["frozen"]["late_p99_ms"] = 295.7  # type: ignore[index]
    notes = report.noise_notes(report.Results(extra=extra), throughput_scenarios=())
    # Then the notes say so, for that window only
    assert notes == ["outage seen-keys frozen: the client sent its requests up to 295.7 ms "
                     "late (p99); their latencies include that"]
