"""A Redis restarted without its data, under the real publisher and edge: no live key is ever
answered 404 (a CDN would cache it), and the edge serves the republished bundles once the
publisher has loaded Redis again (``sc:loaded``).

Real processes on loopback: a private redis-server (no persistence), ``settings-cdn-publisher
serve`` with the example workspace applied, ``python -m edge``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from edge import keyspace
from tests.e2e.servers import Process, fetch
from tests.services import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "examples" / "workspace.json"

pytestmark = pytest.mark.slow
# settings-cdn-publisher, as this checkout's code (the console script may be another's)
PUBLISHER = [sys.executable, "-c", "import sys; from publisher.cli import main; sys.exit(main())"]


def publisher_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*PUBLISHER, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_live_keys_are_never_404_across_an_empty_redis_restart(tmp_path: Path) -> None:
    with RedisServer() as server:
        env = {**os.environ, "REDIS_URL": server.url, "PUBLISHER_DB": str(tmp_path / "p.db"),
               "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(free_port()),
               # the publisher notices the restart within 3 s; the edge re-checks every 0.2 s,
               # so it sees the empty Redis before the publisher has refilled it
               "PUBLISHER_RETRY_INTERVAL": "3", "PYTHONPATH": str(ROOT)}
        publisher_cli(env, "apply", str(WORKSPACE))
        slug = json.loads(WORKSPACE.read_text())["workspace"]["slug"]
        keys = [row["write_key"] for row in json.loads(publisher_cli(env, "sources", slug))]
        publisher = Process("publisher", [*PUBLISHER, "serve"], env=env,
                            cwd=ROOT, log_dir=tmp_path)
        edge_port = free_port()
        edge = Process("edge", [sys.executable, "-m", "edge"], cwd=ROOT, log_dir=tmp_path, env={
            **env, "EDGE_HOST": "127.0.0.1", "EDGE_PORT": str(edge_port),
            "EDGE_REFRESH_INTERVAL": "0.2", "EDGE_REDIS_RETRY_INTERVAL": "0.1"})
        publisher.start(int(env["PUBLISHER_PORT"]))
        edge.start(edge_port)
        client = redis.Redis.from_url(server.url)
        try:
            deadline = time.monotonic() + 10
            while client.get(keyspace.LOADED_KEY) is None:  # serve's check at start
                assert time.monotonic() < deadline, "the publisher never marked Redis loaded"
                time.sleep(0.05)
            urls = [f"http://127.0.0.1:{edge_port}/v1/projects/{wk}/settings" for wk in keys]
            first = {url: fetch(url) for url in urls}
            assert {reply.status for reply in first.values()} == {200}

            server.stop()
            server.start()  # empty: nothing on disk
            statuses: Counter[int] = Counter()
            stale = 0
            deadline = time.monotonic() + 15
            restored = False
            while time.monotonic() < deadline and not restored:
                replies = [fetch(url) for url in urls]
                statuses.update(reply.status for reply in replies)
                stale += sum(1 for reply in replies if "x-settings-stale" in reply.headers)
                restored = (client.get(keyspace.LOADED_KEY) is not None and all(
                    reply.status == 200 and "x-settings-stale" not in reply.headers
                    for reply in replies))
                time.sleep(0.02)
        finally:
            client.close()
            edge.stop()
            publisher.stop()

    assert restored, (statuses, publisher.log(), edge.log())
    assert set(statuses) == {200}, statuses  # not one 404 (nor 503) for a live key
    assert stale > 0  # the edge did see the empty Redis, and served its copies meanwhile
    assert "Traceback" not in edge.log()
