"""The edge's counters, and /metrics: the Prometheus text format (0.0.4) over every worker.

Counting: ``Metrics`` holds plain integer attributes, so the hot path pays one attribute
increment per event; no client library object and no lock is touched per request (one event
loop per worker process).

Exposition: at scrape time ``scrape`` copies those integers on the event loop into an
``EdgeCollector`` (a ``prometheus_client`` custom collector), and ``exposition`` formats it with
``prometheus_client.generate_latest`` (the app does that in a thread: one sample per held
bundle adds up). Every
value is an integer and is printed as one (``1234567``, never ``1.234567e+06`` or ``2.0``).

What a scrape covers:

* One process (``EDGE_WORKERS=1``, or the app run in-process): that process's counts, the
  gauges unlabelled.
* ``settings-cdn-edge`` with ``EDGE_WORKERS`` > 1: every worker, whichever one answers the
  scrape. The parent creates a private directory before starting uvicorn (under ``TMPDIR``;
  removed when it exits) and passes it in ``SETTINGS_CDN_EDGE_METRICS_DIR``. Each worker
  writes its numbers there every ``PUBLISH_INTERVAL`` seconds, when it answers a scrape and when
  it stops (one small file per worker, replaced atomically). A scrape reports

  - counters: the sum over every worker that has run since the edge started: the answering
    worker's live values plus each other worker's latest file, up to ``PUBLISH_INTERVAL``
    behind. A worker that died keeps its last published counts in the sum, so a worker
    replaced by uvicorn never makes a counter go backwards (counts it made after its last
    publish, at most ``PUBLISH_INTERVAL`` worth, are lost with it). Because the answering
    worker publishes what it reports before answering, a counter never decreases from one
    scrape to the next, whichever workers answer them.
  - ``edge_redis_up``, ``edge_instant_subscribed`` and ``edge_redis_replica_link_up``: one
    sample per live worker, labelled ``worker="<pid>"`` (a sum would mean nothing).
  - ``edge_cache_entries``, ``edge_cache_stale_entries``, ``edge_negative_cache_entries``: the
    sum over live workers (each worker holds its own cache).
  - ``edge_bundle_version{write_key}``: the highest version any live worker holds.

  A worker is live while its process exists and its file is at most ``LIVE_WITHIN`` seconds
  old. Running ``uvicorn --workers N edge.app:create_app`` directly (without
  ``settings-cdn-edge``) gives each worker's own numbers only.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("edge.metrics")

METRICS_DIR_ENV = "SETTINGS_CDN_EDGE_METRICS_DIR"
PUBLISH_INTERVAL = 1.0  # seconds between a worker's writes of its numbers
LIVE_WITHIN = 10.0  # a worker whose file is older than this shows no gauges
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
        # the /next-integrations/ mirror (edge/mirror.py)
        self.mirror_hits = 0
        self.mirror_fetches = 0
        self.mirror_not_found = 0
        self.mirror_upstream_errors = 0
        self.mirror_stored_bytes = 0


REQUESTS = ("edge_http_requests_total", "HTTP responses by route and status.")
# (Metrics attribute, metric name, help) of the unlabelled counters, in exposition order.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("cache_hits", "edge_cache_hits_total", "Bundles served from memory without Redis."),
    ("inline_answers", "edge_inline_answers_total",
     "Settings GET/HEAD answered by the HTTP protocol itself, without the ASGI app "
     "(EDGE_FAST_PATH)."),
    ("cache_misses", "edge_cache_misses_total", "Lookups of keys not held in memory."),
    ("cache_refreshes", "edge_cache_refreshes_total",
     "Pointer re-checks of held bundles after the refresh interval."),
    ("stale_serves", "edge_cache_stale_serves_total",
     "Bundles served stale because Redis could not be reached."),
    ("negative_hits", "edge_negative_cache_hits_total",
     "Unknown write keys answered from the negative cache."),
    ("redis_errors", "edge_redis_errors_total", "Failed Redis reads."),
    ("unavailable", "edge_unavailable_total",
     "503 answers: key never seen while Redis was unreachable."),
    ("instant_rechecks", "edge_instant_rechecks_total",
     "Held bundles a publish message sent to re-check against Redis (instant mode)."),
    # the /next-integrations/ mirror (edge/mirror.py)
    ("mirror_hits", "edge_mirror_hits_total",
     "/next-integrations/ files served from the local store."),
    ("mirror_fetches", "edge_mirror_fetches_total",
     "Upstream fetches of /next-integrations/ files the store lacked or had to refresh."),
    ("mirror_not_found", "edge_mirror_upstream_not_found_total",
     "Upstream fetches answered 404 or 410 (passed on, never stored)."),
    ("mirror_upstream_errors", "edge_mirror_upstream_errors_total",
     "Upstream fetches that failed, timed out or were refused by the checks (never stored)."),
    ("mirror_stored_bytes", "edge_mirror_stored_bytes_total",
     "Bytes of upstream files written to the local store."),
)


@dataclass(slots=True)
class Gauges:
    """A worker's current state: its held bundles, negative cache and Redis links."""

    cached: list[tuple[str, int, bool]]  # (write_key, version, stale) per held bundle
    negative_entries: int
    redis_up: bool
    subscribed: bool | None  # None: not in instant mode
    replica_link: bool | None = None  # None: the server read is a primary (or not known yet)


@dataclass(slots=True)
class Report:
    """One worker's numbers at one moment; ``gauges`` is None once the worker is gone."""

    worker: str
    requests: dict[tuple[str, int], int]
    counters: dict[str, int]
    gauges: Gauges | None = None

    @classmethod
    def of(cls, metrics: Metrics, gauges: Gauges | None, worker: str = "") -> Report:
        return cls(worker, dict(metrics.requests),
                   {attr: getattr(metrics, attr) for attr, _, _ in COUNTERS}, gauges)


class EdgeCollector(Collector):
    """The edge's metric families over ``reports`` and, with ``files``, every other worker's
    latest report (read when collected): counters summed over all of them, gauges over the
    live ones, redis_up and subscribed labelled by worker."""

    def __init__(self, reports: Sequence[Report], files: WorkerFiles | None = None) -> None:
        self.reports = reports
        self.files = files

    def collect(self) -> Iterator[Metric]:
        reports = list(self.reports)
        if self.files is not None:
            reports += self.files.others()
        requests: Counter[tuple[str, int]] = Counter()
        for report in reports:
            requests.update(report.requests)
        family = CounterMetricFamily(*REQUESTS, labels=("route", "status"))
        for (route, status), count in sorted(requests.items()):
            family.add_metric((route, str(status)), count)
        yield family
        for attr, name, help_text in COUNTERS:
            yield CounterMetricFamily(name, help_text,
                                      value=sum(r.counters.get(attr, 0) for r in reports))

        live = [(r.worker, r.gauges) for r in reports if r.gauges is not None]
        yield GaugeMetricFamily("edge_cache_entries", "Bundles held in memory.",
                                value=sum(len(g.cached) for _, g in live))
        yield GaugeMetricFamily("edge_cache_stale_entries", "Held bundles currently marked stale.",
                                value=sum(stale for _, g in live for _, _, stale in g.cached))
        yield GaugeMetricFamily("edge_negative_cache_entries", "Unknown write keys remembered.",
                                value=sum(g.negative_entries for _, g in live))
        yield self._flag("edge_redis_up", "1 when the last Redis read succeeded.",
                         [(w, g.redis_up) for w, g in live])
        subscribed = [(w, g.subscribed) for w, g in live if g.subscribed is not None]
        if subscribed:
            yield self._flag("edge_instant_subscribed",
                             "1 while the publish channel subscription is live.", subscribed)
        linked = [(w, g.replica_link) for w, g in live if g.replica_link is not None]
        if linked:
            yield self._flag("edge_redis_replica_link_up",
                             "1 while the Redis replica read is linked to its primary; 0 while "
                             "it is cut off (answers stale-marked).", linked)
        versions: dict[str, int] = {}
        for _, gauges in live:
            for write_key, version, _ in gauges.cached:
                if version > versions.get(write_key, -1):
                    versions[write_key] = version
        held = GaugeMetricFamily(
            "edge_bundle_version", "Version of each held bundle (bounded by the cache size).",
            labels=("write_key",))
        for write_key, version in sorted(versions.items()):
            held.add_metric((write_key,), version)
        yield held

    def _flag(self, name: str, help_text: str, values: Sequence[tuple[str, bool]]
              ) -> GaugeMetricFamily:
        if self.files is None:
            return GaugeMetricFamily(name, help_text, value=int(all(v for _, v in values)))
        family = GaugeMetricFamily(name, help_text, labels=("worker",))
        for worker, value in sorted(values, key=lambda wv: (len(wv[0]), wv[0])):
            family.add_metric((worker,), int(value))
        return family


def exposition(collector: Collector) -> str:
    """``generate_latest`` text with integral values printed as integers: it prints every value
    as a Go float (``2.0``, ``1.234567e+06``), and every value here is an integer."""
    lines = generate_latest(collector).decode().splitlines()
    for i, line in enumerate(lines):
        if line and line[0] != "#":
            head, _, value = line.rpartition(" ")  # the value is last; label values escape \n
            number = float(value)
            if number.is_integer():
                lines[i] = f"{head} {int(number)}"
    return "\n".join(lines) + "\n"


def scrape(metrics: Metrics, gauges: Gauges, files: WorkerFiles | None = None) -> EdgeCollector:
    """The collector of one scrape, taken on the event loop: a copy of this worker's numbers,
    which are first published to ``files`` when workers share them (so no later scrape, by any
    worker, can report less). ``exposition`` of it may run in another thread."""
    if files is None:
        return EdgeCollector([Report.of(metrics, gauges)])
    own = Report.of(metrics, gauges, files.worker)
    files.publish(own)
    return EdgeCollector([own], files)


def render(metrics: Metrics, gauges: Gauges, files: WorkerFiles | None = None) -> str:
    """The /metrics text, in the calling thread."""
    return exposition(scrape(metrics, gauges, files))


# -- the worker directory ---------------------------------------------------------------------

COUNTS = ".counts.json"
STATE = ".state.json"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: str, data: Mapping[str, Any]) -> None:
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp"
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(data))
    os.replace(tmp, path)


def _read(path: str) -> Any:
    with open(path, "rb") as src:
        return orjson.loads(src.read())


@dataclass(eq=False)
class WorkerFiles:
    """This worker's files in the directory every worker of one edge shares.

    ``<pid>-<start ns>.counts.json`` holds the counters (kept after the worker exits, so the
    sum never drops them); ``<...>.state.json`` the gauges and the time written (removed when
    the worker stops). The start time keeps a reused pid from taking over a dead worker's file.
    """

    directory: str
    pid: int = field(default_factory=os.getpid)
    started_ns: int = field(default_factory=time.time_ns)
    failing: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerFiles | None:
        directory = (os.environ if environ is None else environ).get(METRICS_DIR_ENV, "")
        return cls(directory) if directory else None

    @property
    def worker(self) -> str:
        return str(self.pid)

    @property
    def stem(self) -> str:
        return f"{self.directory}/{self.pid}-{self.started_ns}"

    def publish(self, report: Report) -> None:
        """Write ``report`` (counters first, then state); a failure is logged, not raised."""
        try:
            _write(self.stem + COUNTS, {
                "worker": report.worker,
                "requests": [[route, status, n] for (route, status), n in report.requests.items()],
                "counters": report.counters,
            })
            if report.gauges is not None:
                g = report.gauges
                _write(self.stem + STATE, {
                    "pid": self.pid, "at": time.time(), "cached": g.cached,
                    "negative_entries": g.negative_entries, "redis_up": g.redis_up,
                    "subscribed": g.subscribed, "replica_link": g.replica_link,
                })
        except OSError as exc:
            if not self.failing:
                log.warning("cannot publish this worker's metrics to %s: %s", self.directory, exc)
            self.failing = True
        else:
            self.failing = False

    def retire(self, metrics: Metrics) -> None:
        """At exit: the final counters stay for the sum, the gauges go."""
        self.publish(Report.of(metrics, None, self.worker))
        try:
            os.unlink(self.stem + STATE)
        except OSError:
            pass

    def others(self) -> list[Report]:
        """Every other worker's latest report, live or gone (then without gauges)."""
        reports = []
        own = os.path.basename(self.stem) + COUNTS
        try:
            names = [e.name for e in os.scandir(self.directory)]
        except OSError:
            return []
        now = time.time()
        for name in names:
            if name == own or name[0] == "." or not name.endswith(COUNTS):
                continue
            stem = f"{self.directory}/{name[:-len(COUNTS)]}"
            try:
                counts = _read(stem + COUNTS)
            except (OSError, ValueError):
                continue  # removed by the parent at exit
            report = Report(
                str(counts["worker"]),
                {(route, int(status)): int(n) for route, status, n in counts["requests"]},
                {str(k): int(v) for k, v in counts["counters"].items()},
            )
            report.gauges = self._live_gauges(stem + STATE, now)
            reports.append(report)
        return reports

    @staticmethod
    def _live_gauges(path: str, now: float) -> Gauges | None:
        try:
            state = _read(path)
        except (OSError, ValueError):
            return None
        if not _pid_exists(int(state["pid"])):
            try:
                os.unlink(path)  # the worker died without retiring
            except OSError:
                pass
            return None
        if now - float(state["at"]) > LIVE_WITHIN:
            return None
        return Gauges(
            cached=[(str(wk), int(v), bool(s)) for wk, v, s in state["cached"]],
            negative_entries=int(state["negative_entries"]),
            redis_up=bool(state["redis_up"]),
            subscribed=None if state["subscribed"] is None else bool(state["subscribed"]),
            replica_link=None if state.get("replica_link") is None
            else bool(state["replica_link"]),
        )

    async def run(self, take: Callable[[], Report], interval: float = PUBLISH_INTERVAL) -> None:
        """Publish ``take()`` every ``interval`` seconds until cancelled."""
        while True:
            self.publish(take())
            await asyncio.sleep(interval)


def share_between_workers(workers: int) -> str | None:
    """In the parent, before uvicorn starts ``workers`` processes: with more than one, create
    the directory they publish to, name it in the environment they inherit and remove it when
    this process exits. Returns the directory (None for one worker: nothing to share)."""
    if workers <= 1:
        os.environ.pop(METRICS_DIR_ENV, None)
        return None
    directory = tempfile.mkdtemp(prefix="settings-cdn-edge-metrics-")
    os.environ[METRICS_DIR_ENV] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory

