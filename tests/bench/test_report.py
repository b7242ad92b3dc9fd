"""The bench report's account of the machine: how fast it is against the issue's baseline."""

from __future__ import annotations

import pytest

from bench import report
from bench.wrk import WrkResult


def _results(nginx_rps: list[float]) -> report.Results:
    results = report.Results()
    for rnd, rps in enumerate(nginx_rps):
        result = WrkResult(requests=int(rps * 4), seconds=4.0, bytes=0, status_errors=0,
                           socket_errors=0, p50_ms=1.0, p90_ms=1.0, p99_ms=2.0, max_ms=3.0,
                           wrk_cpu=0.8, server_cpu=0.98, server_core_busy=0.98,
                           load_core_busy=0.8)
        results.runs.append(report.Run("hot-200", "nginx", rnd, result))
    return results


def test_a_machine_as_fast_as_the_baseline_gets_no_note() -> None:
    # Given nginx static at the baseline speed (the fourth session's machine)
    results = _results([88_213, 94_890, 94_308])
    # Then the speed line says so and no note is added
    assert report.machine_speed(results) == pytest.approx(94_308 / 88_000)
    assert report.speed_line(results) == (
        "machine speed: nginx static served 94,308 hot 200s/s, 1.07 × the baseline "
        "machine's ~88,000")
    assert report.speed_notes(results) == []


def test_a_slow_machine_is_named_in_the_notes() -> None:
    # Given nginx static at a third of the baseline (the fifth session's machine)
    results = _results([30_725, 37_949, 31_547])
    # Then the notes say the absolute targets ask more of it
    notes = report.speed_notes(results)
    assert len(notes) == 1
    assert notes[0].startswith("a slow machine: nginx static ran at 0.36 × the baseline machine's")
    assert "absolute targets" in notes[0]


def test_no_nginx_rounds_no_speed() -> None:
    results = report.Results()
    assert report.machine_speed(results) is None
    assert report.speed_line(results) == (
        "machine speed: not measured (no hot-200 nginx rounds)")
    assert report.speed_notes(results) == []
