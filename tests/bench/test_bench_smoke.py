"""The bench machinery end to end on a tiny data set: it works, whatever the speed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main

pytestmark = pytest.mark.slow

RATIO = re.compile(r"^ratio (\S+) (\S+)/(\S+) = \d+\.\d\d$")


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool, package in (("wrk", "wrk"), ("nginx", "nginx-light")):
        if not shutil.which(tool):
            pytest.fail(f"the bench smoke test needs {tool}: apt-get install {package}")


def test_bench_runs_every_scenario_on_a_tiny_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/run seeds, serves, loads every scenario, and writes a table with ratios and targets."""
    # Given a tiny data set and one-second runs
    argv = ["--sources", "30", "--total-sources", "90", "--duration", "1", "--rounds", "1",
            "--changes", "5", "--warmup", "0", "--poll-refresh", "0.5",
            "--outage-before", "0.5", "--outage-frozen", "1", "--outage-recovery", "0.5",
            "--outage-refresh", "0.5", "--outage-rate", "200",
            "--results-dir", str(tmp_path)]

    # When the bench runs
    code = main(argv)

    # Then it printed the ratio lines of every pair and wrote the results
    assert code == 0
    out = capsys.readouterr().out
    ratios = [line for line in out.splitlines() if line.startswith("ratio ")]
    assert all(RATIO.match(line) for line in ratios), ratios
    pairs = {tuple(RATIO.match(line).groups()) for line in ratios}  # type: ignore[union-attr]
    assert {("hot-200", "edge", "asgi-limit"), ("hot-200", "edge", "nginx"),
            ("304", "edge", "asgi-limit"), ("304", "edge", "nginx"),
            ("hot-200", "edge-asgi", "asgi-limit"), ("304", "edge-asgi", "asgi-limit"),
            ("hot-200", "edge", "protocol-limit"), ("304", "edge", "protocol-limit"),
            ("latency-8c", "edge", "nginx"), ("cold", "edge", "nginx"),
            ("unknown", "edge", "nginx"), ("proxy-hit", "nginx-proxy", "nginx"),
            ("proxy-hit", "nginx-proxy-ttl", "nginx"),
            ("cold", "edge", "edge-hot-200")} <= pairs
    written = sorted(tmp_path.glob("*.md"))
    assert len(written) == 1
    text = written[0].read_text()
    assert "| hot-200 | edge |" in text and "| 304 | edge-asgi |" in text
    assert "- machine speed: nginx static served " in text
    assert "| proxy-hit | nginx-proxy |" in text and "| proxy-hit | nginx-proxy-ttl |" in text
    assert "| republish --all (90 sources, scaled to 100k) | ≤ 60 s |" in text
    assert "| edge RSS with 90 bundles, gzip held / allowance |" in text
    assert "| edge RSS with 90 bundles, gzip + JSON held / allowance |" in text
    assert "| API write → edge, instant p99 | ≤ 50 ms |" in text
    assert "| outage p99 seen-keys (Redis frozen) | ≤ 10 ms |" in text
    assert (tmp_path / written[0].with_suffix(".json").name).exists()


def test_bench_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad option stops the bench before it starts anything, naming the option and value."""
    with pytest.raises(SystemExit) as stopped:
        main(["--phases", "http,warp"])

    assert stopped.value.code == 2
    assert "unknown phase(s) warp" in capsys.readouterr().err
