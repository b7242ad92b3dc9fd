"""Walk the clock through a publish with every cache layer modelled, and check the bound.

The edge is the real app (``create_app`` with an injected clock, a real redis-server, the
real publisher); the shared cache (a CDN point of presence, nginx) and the browser cache are
``CacheModel``s reading the edge's real ``Cache-Control``, ``ETag`` and ``Age``. Wall time is
frozen and moved in lockstep (freezegun), so ``published_at`` is a simulation instant.

The adversary is a grid. On every tick a prober asks the edge directly (other traffic keeps
the edge's copy hot, so its last check before the publish falls one tick before it). For
every tick ``a`` around the edge's last old answer a new point of presence is filled at
``a``; a browser behind it first loads at ``a + d`` and loads again at ``a + d + e``, for
every ``d`` and ``e`` on the grid: so somewhere a layer fetches at the last instant the layer
behind it still serves the old answer, and nothing else asks in between. Every answer any
layer gives is checked against ``published_at + worst_case_seconds``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from freezegun import freeze_time
from starlette.testclient import TestClient

from edge.app import create_app
from edge.propagation import CLOCK_SLACK, recheck_grace, terms, worst_case_seconds
from edge.settings import EdgeSettings
from tests.e2e.cachemodel import Answer, CacheModel
from tests.e2e.publishing import WRITE_KEY, device, publish

pytestmark = pytest.mark.slow

STEP = 0.25
T0 = 1_800_000_000  # the publish instant: a whole second, as published_at is
PATH = f"/v1/projects/{WRITE_KEY}/settings"


def lifetimes(redis_url: str, honour_age: bool) -> EdgeSettings:
    """Short lifetimes, distinct per layer, so each layer's term shows in the result."""
    return EdgeSettings(
        redis_url=redis_url, caches_honour_age=honour_age, refresh_interval=2.0, s_maxage=3,
        max_age=2, stale_while_revalidate=1, stale_if_error=600, negative_ttl=1.0,
        not_found_max_age=2,
    )


@dataclass
class SimClock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Observations:
    """Every answer of every layer, split into the previous state and the new version."""

    old: list[Answer] = field(default_factory=list)
    new: list[Answer] = field(default_factory=list)

    def add(self, answer: Answer, new_version: int) -> None:
        assert answer.status in (200, 304, 404), answer
        (self.new if answer.version == new_version else self.old).append(answer)

    def last_old(self, prefix: str = "") -> float:
        return max((a.at for a in self.old if a.layer.startswith(prefix)), default=-1.0)


class Edge:
    """The real edge app; identical requests in one tick get the one answer (memoized)."""

    def __init__(self, client: TestClient, clock: SimClock) -> None:
        self.client = client
        self.clock = clock
        self.memo: dict[tuple[float, str | None], Answer] = {}

    def __call__(self, headers: dict[str, str]) -> Answer:
        key = (self.clock.now, headers.get("if-none-match"))
        if key not in self.memo:
            reply = self.client.get(PATH, headers=headers)
            self.memo[key] = Answer(reply.status_code, dict(reply.headers), self.clock.now, "edge")
        return self.memo[key]


@dataclass
class Scenario:
    pop: CacheModel
    browser: CacheModel


def ticks(start: float, stop: float, step: float = STEP) -> Iterator[float]:
    k = 0
    while start + k * step <= stop:
        yield start + k * step
        k += 1


def simulate(redis_client: redis.Redis, settings: EdgeSettings, *, first_publish: bool,
             late_in_second: float = 0.0, step: float = STEP) -> tuple[Observations, int]:
    """Run the grid; returns every observed answer and the bound.

    The publish happens at ``T0 + late_in_second`` with ``published_at = T0``: the
    publisher records whole seconds, truncated.
    """
    bound = worst_case_seconds(settings)
    t = terms(settings)
    if not first_publish:
        publish(redis_client, [device("amplitude", "amp-old")], version=1,
                published_at=T0 - 100)
    new_version = 1 if first_publish else 2
    publish_at = T0 + late_in_second
    clock = SimClock(publish_at - 3 * settings.refresh_interval - step)
    end = T0 + bound + 2
    layers_behind = t.shared + t.browser + 2
    fill_times = list(ticks(publish_at - 1, publish_at + max(t.edge, t.edge_not_found) + 1,
                            step))
    seen = Observations()
    schedule: dict[float, list[tuple[str, Scenario]]] = {}
    app = create_app(settings, clock=clock)
    with freeze_time(dt.datetime.fromtimestamp(clock.now, dt.UTC), real_asyncio=True) as frozen, \
            TestClient(app) as client:
        edge = Edge(client, clock)
        for a in fill_times:
            for d in ticks(0, layers_behind, step):
                for e in ticks(step, t.browser + 1, step):
                    pop = CacheModel("shared", edge, clock, shared=True,
                                     honour_age=settings.caches_honour_age)
                    browser = CacheModel("browser", pop.request, clock, shared=False,
                                         honour_age=settings.caches_honour_age)
                    s = Scenario(pop, browser)
                    schedule.setdefault(a, []).append(("fill", s))
                    schedule.setdefault(a + d, []).append(("load", s))
                    schedule.setdefault(a + d + e, []).append(("load", s))
        for now in ticks(clock.now, end, step):
            clock.now = now
            frozen.move_to(dt.datetime.fromtimestamp(now, dt.UTC))
            if now == publish_at:
                published = publish(
                    redis_client, [device("amplitude", "amp-new"), device("braze", "bz-new")],
                    version=new_version, published_at=T0,
                )
                assert published.published_at == T0
            seen.add(edge({}), new_version)  # the prober
            for action, s in schedule.pop(now, []):
                seen.add(s.pop.request() if action == "fill" else s.browser.request(),
                         new_version)
    return seen, bound


@pytest.mark.parametrize(
    ("honour_age", "first_publish"),
    [
        pytest.param(False, False, id="chain-change"),
        pytest.param(False, True, id="chain-first-publish"),
        pytest.param(True, False, id="age-change"),
        pytest.param(True, True, id="age-first-publish"),
    ],
)
def test_no_layer_serves_the_old_answer_after_the_bound(
    redis_client: redis.Redis, redis_url: str, honour_age: bool, first_publish: bool
) -> None:
    """No cache layer answers with the pre-publish state after published_at + worst case."""
    settings = lifetimes(redis_url, honour_age)

    seen, bound = simulate(redis_client, settings, first_publish=first_publish)

    late = [a for a in seen.old if a.at > T0 + bound]
    assert not late, f"{len(late)} old answers after T0+{bound}s, first: {late[0]}"
    assert seen.new, "the new version was never served"


@pytest.mark.parametrize(
    "honour_age",
    [pytest.param(False, id="chain"), pytest.param(True, id="age")],
)
def test_edge_serves_the_new_bundle_within_its_refresh_interval(
    redis_client: redis.Redis, redis_url: str, honour_age: bool
) -> None:
    """The edge itself answers with the new version at the latest one refresh interval later."""
    settings = lifetimes(redis_url, honour_age)

    seen, _ = simulate(redis_client, settings, first_publish=False)

    first_new_at_edge = min(a.at for a in seen.new if a.layer == "edge")
    assert T0 < first_new_at_edge <= T0 + settings.refresh_interval
    assert seen.last_old("edge") < first_new_at_edge


@pytest.mark.parametrize(
    "honour_age",
    [pytest.param(False, id="chain"), pytest.param(True, id="age")],
)
def test_the_bound_is_nearly_reached(
    redis_client: redis.Redis, redis_url: str, honour_age: bool
) -> None:
    """Some browser still gets the old bundle just before the bound: the bound is not slack."""
    settings = lifetimes(redis_url, honour_age)

    seen, bound = simulate(redis_client, settings, first_publish=False)

    # The grid loses at most one tick to the edge's last check and one per layer's expiry;
    # a publish on a whole second does not use the bound's whole-second slack, and a Redis
    # that answers at once does not use the re-check grace (rounded up to whole seconds).
    unused = CLOCK_SLACK + math.ceil(recheck_grace(settings))
    assert T0 + bound - unused - 4 * STEP <= seen.last_old("browser") <= T0 + bound


def test_a_publish_late_in_its_second_is_still_within_the_bound(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """A publish at T0 + 0.875 s (published_at = T0) is gone everywhere by T0 + worst case."""
    settings = lifetimes(redis_url, honour_age=False)

    seen, bound = simulate(redis_client, settings, first_publish=False, late_in_second=0.875,
                           step=0.125)

    assert seen.last_old() <= T0 + bound
