"""What every phase of ``bench/run`` shares: the configuration and the set-up it runs on.

The phases (bench/scenarios.py, bench/outage.py, bench/propagation.py) take a ``Setup``;
bench/runner.py builds it and calls them in order. Keeping these two types here, below all
of them, lets the runner import the phases without the phases importing the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Proc, Processes
from bench.report import Results

RESULTS_DIR = Path(__file__).parent / "results"
PHASES = ("http", "proxy", "cold", "outage", "memory", "api", "mirror", "topology")


@dataclass(frozen=True)
class BenchConfig:
    sources: int = 10_000  # hot set served in the HTTP scenarios
    total_sources: int = 100_000  # republished, cold pool, memory test
    duration: float = 4.0  # seconds per wrk run
    rounds: int = 3
    connections: int = 64
    latency_connections: int = 8
    unknown_keys: int = 50_000
    changes: int = 200  # Config API writes per mode
    phases: tuple[str, ...] = PHASES
    republish_timeout: float = 60.0  # the target: a slower republish fails it anyway
    cold_keys: int = 80_000  # cold pool of the cold scenario (nginx gets files for these)
    warmup: float = 1.0  # seconds of unrecorded load per server before a scenario (0: none)
    poll_refresh: float = 5.0  # EDGE_REFRESH_INTERVAL of the edge in the polling-mode run
    # The outage scenario (bench/outage.py): Redis frozen for outage_frozen seconds between
    # outage_before seconds of normal service and outage_recovery seconds after it resumes.
    outage_before: float = 3.0
    outage_frozen: float = 20.0
    outage_recovery: float = 5.0
    outage_refresh: float = 5.0  # EDGE_REFRESH_INTERVAL of its edge: re-checks fall due
    outage_rate: int = 5_000  # requests/s, open loop
    outage_cold_share: float = 0.01  # of the requests, for keys the edge does not hold
    results_dir: Path = RESULTS_DIR
    command: str = ""
    log: Callable[[str], None] = field(default=print)


@dataclass
class Setup:
    cfg: BenchConfig
    work: Path
    nginx_dir: Path  # nginx's files, caches and configuration (bench_nginx_dir)
    procs: Processes
    server_core: int | None
    load_core: int | None
    redis_url: str
    redis: Proc | None = None  # the bench's own redis-server (the outage scenario freezes it)
    results: Results = field(default_factory=Results)
