"""bench/scale end to end on a tiny data set: every step runs and its numbers hang together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.scale import main

pytestmark = pytest.mark.slow


def test_scale_run_measures_every_step_on_a_tiny_data_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not shutil.which("redis-benchmark"):
        pytest.fail("the scale test needs redis-benchmark: apt-get install redis-tools")
    # Given 60 sources, 4 kept versions, short redis-benchmark runs
    argv = ["--sources", "60", "--keep-versions", "4", "--version-sample", "60",
            "--benchmark-requests", "500", "--results-dir", str(tmp_path)]

    # When the scale run runs
    assert main(argv) == 0

    # Then both republish runs published every source, and Redis served them all
    written = sorted(tmp_path.glob("scale-*.json"))
    assert len(written) == 1
    x = json.loads(written[0].read_text())["results"]
    assert x["first_sources"] == x["rebuild_sources"] == x["redis_sources"] == 60
    assert x["rebuild_redis_sources"] == 60
    assert x["serve_recovery_loaded"] is True and x["serve_recovery_sources"] == 60
    # a version costs Redis its gzip bytes and their metadata, not the JSON, and the history
    # stops at the kept count
    assert x["bundle_gzip_mean"] < x["versions_bytes_per_added_version"] \
        < x["bundle_json_mean"] + x["bundle_gzip_mean"]
    assert x["redis_bytes_per_source_one_version"] > x["memory_usage_version_hash_mean"]
    assert x["versions_history_lengths"] == [4]
    # (a fixed allocator step of some 25 KB is a large share of a version at 60 sources)
    assert abs(x["versions_bytes_after_one_more"]) < 0.5 * x["versions_bytes_per_added_version"]
    # every edge call was measured, with Redis's share of its core beside it
    for call in ("evalsha16", "mget16", "get"):
        assert x[f"bench_{call}_calls_per_s"] > 0
        assert 0 < x[f"bench_{call}_redis_cpu"] <= 1.5
    assert "republish --all: 60 of 60 sources" in capsys.readouterr().out
    assert (tmp_path / written[0].with_suffix(".md").name).exists()
