"""The web app's server-side render time: the catalog search and a source page with 50
destination instances (target: p99 < 50 ms each).

Each page is requested through the publisher's own ASGI app in-process (Starlette's
TestClient: routing, session check, the store queries, the template), so the time is the
server's work without a network or a browser. The source has 50 enabled cloud-mode instances of
50 catalog destinations, each with its required settings, and one published version per
instance added (the history and diff select lists are full). With a Redis URL the publish
status reads Redis as in ``serve``; without one it is left out.

    python -m bench.webapp [--redis-url URL] [--requests N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.context import Setup

TARGET_P99_MS = 50.0
INSTANCES = 50
SEARCHES = ("amp", "a", "analytics", "webhooks", "zzz-none")


def _world(db: str, redis_url: str | None) -> tuple[Any, str]:
    from publisher.api.auth import create_token
    from publisher.core.catalog import default_catalog
    from publisher.core.specs import InstanceSpec
    from publisher.publish import RedisPublisher
    from publisher.service import Service
    from publisher.store import Store

    client = redis.Redis.from_url(redis_url) if redis_url else None
    svc = Service(Store.open(db), default_catalog(),
                  RedisPublisher(client) if client else None, propagation_seconds=1800)
    svc.create_workspace("bench", "Bench Inc")
    source, _ = svc.create_source("bench", "site", "web", "Bench website")
    made = 0
    for dest in svc.catalog:
        if made == INSTANCES:
            break
        required = [s for s in dest.settings.values() if s.required]
        if not dest.supports("web", "CLOUD") or any(s.type != "string" for s in required):
            continue
        settings = {s.name: f"bench-{s.name}" for s in required}
        svc.add_instance(source, InstanceSpec(dest.slug, "CLOUD", enabled=True,
                                              settings=settings))
        made += 1
    return svc, create_token(svc, "bench", "write", "bench")


def _times(client: Any, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, (url, resp.status_code)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[max(0, int(len(ms) * 0.99) - 1)],
            "max_ms": ms[-1], "requests": len(ms)}


def render_times(redis_url: str | None = None, requests: int = 300) -> dict[str, Any]:
    """p50/p99 of each page's render, measured after a warm-up."""
    from starlette.testclient import TestClient

    from publisher.api.app import create_app
    from publisher.settings import PublisherSettings

    with tempfile.TemporaryDirectory(prefix="sc-bench-web-") as tmp:
        db = str(Path(tmp) / "web.db")
        svc, token = _world(db, redis_url)
        settings = PublisherSettings(db_path=db, rate_limit=1_000_000, retry_interval=0)
        try:
            with TestClient(create_app(settings, service=svc)) as client:
                page = client.get("/app/login")
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert csrf is not None
                client.post("/app/login", data={"csrf": csrf.group(1), "token": token})
                source_url = "/app/w/bench/s/site"
                assert client.get(source_url).text.count('class="card" href="/app/w/bench/s/'
                                                         'site/d/') == INSTANCES
                _times(client, source_url, 20)
                search: list[float] = []
                for q in SEARCHES:
                    _times(client, f"/app/w/bench/catalog?q={q}", 5)
                    search += _times(client, f"/app/w/bench/catalog?q={q}",
                                     max(1, requests // len(SEARCHES)))
                out = {"catalog_search": _summary(search),
                       "source_page_50_instances": _summary(_times(client, source_url,
                                                                   requests)),
                       "target_p99_ms": TARGET_P99_MS, "redis": bool(redis_url)}
        finally:
            svc.store.close()
    return out


def measure(s: Setup) -> None:
    """bench/run's hook: the render times into the results (``extra["webapp"]``)."""
    result = render_times(s.redis_url)
    s.results.extra["webapp"] = result
    for name in ("catalog_search", "source_page_50_instances"):
        r = result[name]
        s.cfg.log(f"webapp: {name}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
                  f"(target p99 < {TARGET_P99_MS:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.webapp", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--redis-url", help="Redis the publish status reads (default: none)")
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args(argv)
    result = render_times(args.redis_url, args.requests)
    for name in ("catalog_search", "source_page_50_instances"):
        r = result[name]
        verdict = "ok" if r["p99_ms"] < TARGET_P99_MS else "OVER TARGET"
        print(f"{name}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max "
              f"{r['max_ms']:.2f} ms over {r['requests']} requests ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
