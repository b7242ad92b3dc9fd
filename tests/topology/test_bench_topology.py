"""The bench's topology phase end to end with a few writes: bench/run --phases topology starts
its primary, replicas, Sentinels, publisher and edges, prints its three lines, checks its
target, and leaves no process of its own behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import bench.__main__
from bench.__main__ import main

pytestmark = pytest.mark.slow

LINES = {
    "p50": re.compile(r"^topology write→every-edge p50 = (\d+\.\d) ms$", re.MULTILINE),
    "p99": re.compile(r"^topology write→every-edge p99 = (\d+\.\d) ms ", re.MULTILINE),
    "failover": re.compile(r"^topology failover → first write served = (\d+\.\d\d) s ",
                           re.MULTILINE),
}


def test_the_topology_phase_prints_its_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    monkeypatch.setattr(bench.__main__, "main_log", lambda: logged.append)
    code = main(["--phases", "topology", "--sources", "10", "--total-sources", "10",
                 "--changes", "5", "--results-dir", str(tmp_path)])

    assert code == 0
    out = "\n".join(logged)
    values = {name: [float(v) for v in line.findall(out)] for name, line in LINES.items()}
    assert all(len(v) == 1 and v[0] > 0 for v in values.values()), (values, out[-3000:])
    text = next(tmp_path.glob("*.md")).read_text()
    assert "| topology write → every edge (2 replicas, 3 edges) p99 | ≤ 100 ms |" in text
    extra = json.loads(next(tmp_path.glob("*.json")).read_text())["extra"]
    assert extra["topology_writes"] == 5
    assert extra["topology_failover_bad_answers"] == 0  # no edge answered but 200
    assert round(extra["topology_failover_served_s"], 2) == values["failover"][0]
