"""The outage phase end to end on a tiny data set: Redis frozen and resumed, lines printed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main

pytestmark = pytest.mark.slow

P99 = re.compile(r"^\s*outage p99 seen-keys = (\d+\.\d\d) ms$", re.MULTILINE)
BAD = re.compile(r"^\s*outage bad answers seen-keys = (\d+)$", re.MULTILINE)


def test_the_outage_phase_prints_its_p99_and_bad_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/run --phases outage freezes its own Redis under load and prints both values."""
    if not shutil.which("wrk"):
        pytest.fail("the bench smoke test needs wrk: apt-get install wrk")
    # Given a tiny data set, a 1.5 s freeze and a refresh interval that falls due within it
    argv = ["--phases", "outage", "--sources", "30", "--total-sources", "90",
            "--outage-before", "0.5", "--outage-frozen", "1.5", "--outage-recovery", "0.5",
            "--outage-refresh", "0.5", "--outage-rate", "300", "--outage-cold-share", "0.1",
            "--results-dir", str(tmp_path)]

    # When the bench runs that phase alone
    code = main(argv)

    # Then it printed both lines, parseable, with the results (the run's log may go to the
    # terminal itself)
    assert code == 0
    out = capsys.readouterr().out
    p99 = {float(v) for v in P99.findall(out)}
    bad = {int(v) for v in BAD.findall(out)}
    assert len(p99) == 1 and len(bad) == 1, out[-3000:]
    assert p99.pop() > 0
    text = next(tmp_path.glob("*.md")).read_text()
    assert "| outage p99 seen-keys (Redis frozen) | ≤ 10 ms |" in text
    assert "| outage bad answers seen-keys | 0 |" in text
    # and the frozen window held requests for keys the edge held: the freeze was measured
    raw = json.loads(next(tmp_path.glob("*.json")).read_text())
    windows = raw["extra"]["outage_windows"]
    assert windows["seen"]["frozen"]["requests"] > 0
    assert windows["seen"]["before"]["requests"] > 0
    assert windows["seen"]["recovery"]["requests"] > 0
    assert 1.4 < raw["extra"]["outage_frozen_seconds"] < 2.5
