"""Several workers' /metrics: each worker's file in the shared directory, summed at scrape time."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import (
    LIVE_WITHIN,
    METRICS_DIR_ENV,
    Gauges,
    Metrics,
    Report,
    WorkerFiles,
    render,
    share_between_workers,
)


def _gauges(*held: tuple[str, int], redis_up: bool = True) -> Gauges:
    return Gauges([(wk, v, False) for wk, v in held], negative_entries=1, redis_up=redis_up,
                  subscribed=None)


def _values(text: str) -> dict[str, float]:
    return {
        s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text) for s in f.samples
    }


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_scrape_sums_every_workers_counters_and_labels_the_live_ones(tmp_path: Path) -> None:
    """Counters add up over every worker, a dead one included; per-worker gauges come only from
    live workers, labelled by pid; entries add up and a bundle's version is the highest held."""
    own, live, dead = (WorkerFiles(str(tmp_path), pid=pid, started_ns=n) for pid, n in
                       ((os.getpid(), 1), (os.getppid(), 2), (_dead_pid(), 3)))
    for files, hits, held in ((live, 20, [("wk1", 8), ("wk2", 3)]), (dead, 300, [("wk1", 9)])):
        other = Metrics()
        other.cache_hits = hits
        other.requests["settings", 200] = hits
        files.publish(Report.of(other, _gauges(*held, redis_up=False), files.worker))
    metrics = Metrics()
    metrics.cache_hits = 1
    metrics.requests["settings", 200] = 1
    metrics.requests["settings", 404] = 5

    values = _values(render(metrics, _gauges(("wk1", 7)), own))

    assert values["edge_cache_hits_total"] == 321
    assert values["edge_http_requests_total|route=settings|status=200"] == 321
    assert values["edge_http_requests_total|route=settings|status=404"] == 5
    assert {k: v for k, v in values.items() if k.startswith("edge_redis_up")} == {
        f"edge_redis_up|worker={os.getpid()}": 1, f"edge_redis_up|worker={os.getppid()}": 0,
    }  # the dead worker shows none
    assert values["edge_cache_entries"] == 3  # own 1 + live 2, not the dead worker's
    assert values["edge_negative_cache_entries"] == 2
    assert values["edge_bundle_version|write_key=wk1"] == 8  # the highest a live worker holds
    assert values["edge_bundle_version|write_key=wk2"] == 3
    assert not (tmp_path / f"{dead.pid}-3.state.json").exists()  # tidied: the worker is gone
    assert (tmp_path / f"{dead.pid}-3.counts.json").exists()  # kept: its counts stay summed


def test_a_worker_that_stopped_publishing_shows_no_gauges(tmp_path: Path) -> None:
    """A worker's gauges older than LIVE_WITHIN are left out (its counters still count)."""
    own, quiet = (WorkerFiles(str(tmp_path), pid=os.getpid(), started_ns=n) for n in (1, 2))
    other = Metrics()
    other.cache_hits = 4
    quiet.publish(Report.of(other, _gauges(("wk9", 1)), "quiet"))
    state_path = tmp_path / f"{os.getpid()}-2.state.json"
    state = orjson.loads(state_path.read_bytes())
    state["at"] -= LIVE_WITHIN + 1
    state_path.write_bytes(orjson.dumps(state))

    values = _values(render(Metrics(), _gauges(), own))

    assert values["edge_cache_hits_total"] == 4
    assert "edge_redis_up|worker=quiet" not in values
    assert "edge_bundle_version|write_key=wk9" not in values


def test_counters_never_decrease_whichever_worker_answers(tmp_path: Path) -> None:
    """What a worker reported in a scrape is on disk before it answers: a later scrape
    answered by another worker reports at least as much, and a retired worker's counts stay."""
    a, b = (WorkerFiles(str(tmp_path), pid=pid, started_ns=1) for pid in (os.getpid(),
                                                                           os.getppid()))
    metrics_a, metrics_b = Metrics(), Metrics()
    metrics_a.cache_hits, metrics_b.cache_hits = 10, 1
    b.publish(Report.of(metrics_b, _gauges(), b.worker))  # b's periodic publish
    seen = [_values(render(metrics_a, _gauges(), a))["edge_cache_hits_total"]]
    metrics_a.cache_hits = 15  # counted by a after its last publish
    seen.append(_values(render(metrics_b, _gauges(), b))["edge_cache_hits_total"])
    a.retire(metrics_a)  # a stops: its final counts stay, its gauges go
    seen.append(_values(render(metrics_b, _gauges(), b))["edge_cache_hits_total"])

    assert seen == [11, 11, 16]
    assert not (tmp_path / f"{os.getpid()}-1.state.json").exists()


def test_one_worker_shares_nothing_several_share_a_private_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """The parent names a fresh private directory for several workers, none for one."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(METRICS_DIR_ENV, "/left/over")
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    assert share_between_workers(1) is None
    assert METRICS_DIR_ENV not in os.environ
    directory = share_between_workers(2)
    assert directory is not None and Path(directory).parent == tmp_path
    assert os.environ[METRICS_DIR_ENV] == directory
    assert oct(os.stat(directory).st_mode & 0o777) == "0o700"
