"""``settings-cdn-edge assets sync``: the published bundles' scripts, fetched into the store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from edge import keyspace
from edge.cli import main
from edge.mirror_sync import integration_path, script_paths
from edge.settings import OPTIONS
from publisher.core.bundle import make_bundle
from publisher.publish import RedisPublisher
from tests.edge.helpers import document, publish
from tests.edge.upstream import Upstream as FakeUpstream
from tests.edge.upstream import script
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def browser(version: str | None = None, **extra: Any) -> dict[str, Any]:
    version_settings: dict[str, Any] = {"componentTypes": ["browser"]}
    if version is not None:
        version_settings["version"] = version
    return {"type": "browser", "bundlingStatus": "bundled", "versionSettings": version_settings,
            **extra}


WEB = document(
    "webKey",
    **{
        "Amplitude": browser("8.1.0"),
        "Google Analytics": browser("2.0.0", versionSettings={
            "version": "2.0.0", "override": "2.18.1", "componentTypes": ["browser"]}),
        "Customer.io": browser("3.1.0"),
        "Hotjar": browser(),  # no version: the client asks for latest
        "Mixpanel": browser("2.1.0", bundlingStatus="unbundled"),
        "Braze": {"type": "ios", "versionSettings": {"componentTypes": ["ios"]}},
    },
)
EXPECTED = {
    "integrations/amplitude/8.1.0/amplitude.dynamic.js.gz",
    "integrations/google-analytics/2.18.1/google-analytics.dynamic.js.gz",
    "integrations/customerio/3.1.0/customerio.dynamic.js.gz",
    "integrations/hotjar/latest/hotjar.dynamic.js.gz",
}
OTHER = document("otherKey", Amplitude=browser("8.1.0"), Intercom=browser("1.4.0"))
INTERCOM = "integrations/intercom/1.4.0/intercom.dynamic.js.gz"


def test_script_paths_follow_the_client_contract() -> None:
    """One script per classic browser destination: override over version over latest, the
    loader's path rule; unbundled, mobile and Segment.io entries name none."""
    assert set(script_paths(WEB)) == EXPECTED
    assert integration_path("Google Analytics 4 Web") == "google-analytics-4-web"
    assert integration_path("Customer.io") == "customerio"
    assert list(script_paths({"integrations": "nope"})) == []


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    for path in EXPECTED | {INTERCOM}:
        server.files[path] = script(path.split("/")[1])
    yield server
    server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path,
        upstream: FakeUpstream) -> dict[str, str]:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    values = {"REDIS_URL": redis_url, "EDGE_ASSETS_DIR": str(tmp_path / "store"),
              "EDGE_ASSETS_UPSTREAM": upstream.url}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def stored(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists(
    ) else set()


def test_sync_fetches_every_named_script_once(
        env: dict[str, str], redis_client: redis.Redis, upstream: FakeUpstream,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every script the published bundles name is stored; a second run downloads nothing."""
    publish(redis_client, "webKey", WEB)
    publish(redis_client, "otherKey", OTHER, version=3)
    store = Path(env["EDGE_ASSETS_DIR"])

    first = main(["assets", "sync"])
    first_out = capsys.readouterr().out
    fetched = upstream.total
    second = main(["assets", "sync"])
    second_out = capsys.readouterr().out

    assert first == 0 and second == 0
    assert stored(store) == EXPECTED | {INTERCOM}
    assert fetched == 5
    assert upstream.total == 5  # the second run asked the upstream nothing
    assert "5 already stored, 0 fetched" in second_out
    assert f"fetched {INTERCOM}" in first_out


def test_sync_reads_the_scripts_from_the_published_gzip_bytes(
        env: dict[str, str], redis_client: redis.Redis, upstream: FakeUpstream,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The publisher's version hash holds no JSON: sync inflates the gzip bytes, finds the
    scripts they name, and reports (exit 1) a version whose gzip bytes are not a gzip stream."""
    raw = orjson.dumps(WEB, option=orjson.OPT_SORT_KEYS)
    RedisPublisher(redis_client).write("webKey", make_bundle(raw, version=1, revision=1,
                                                             published_at=1_700_000_000))
    assert not redis_client.hexists(keyspace.version_key("webKey", 1), "json")
    publish(redis_client, "otherKey", OTHER, version=3)
    redis_client.hset(keyspace.version_key("otherKey", 3), "gzip", b"not gzip")

    status = main(["assets", "sync"])

    out = capsys.readouterr().out
    assert status == 1
    assert "otherKey: version 3: not a gzip stream" in out
    assert stored(Path(env["EDGE_ASSETS_DIR"])) == EXPECTED


def test_sync_fails_when_a_script_is_missing_upstream(
        env: dict[str, str], redis_client: redis.Redis, upstream: FakeUpstream,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A script the upstream does not have is reported and the exit status is 1; the others
    are stored all the same."""
    del upstream.files[INTERCOM]
    publish(redis_client, "otherKey", OTHER)

    status = main(["assets", "sync"])

    out = capsys.readouterr().out
    assert status == 1
    assert f"missing upstream: {INTERCOM}" in out
    assert stored(Path(env["EDGE_ASSETS_DIR"])) == {
        "integrations/amplitude/8.1.0/amplitude.dynamic.js.gz"}


def test_sync_fails_on_a_refused_answer(
        env: dict[str, str], redis_client: redis.Redis, upstream: FakeUpstream,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated upstream answer is reported, not stored, and the exit status is 1."""
    upstream.modes[INTERCOM] = "truncate"
    publish(redis_client, "otherKey", OTHER)

    assert main(["assets", "sync"]) == 1
    assert f"failed: {INTERCOM}: upstream closed after 10 bytes" in capsys.readouterr().out
    assert INTERCOM not in stored(Path(env["EDGE_ASSETS_DIR"]))


def test_sync_without_upstream_or_redis(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No upstream: exit 2 saying so; Redis unreachable: exit 1 saying so."""
    monkeypatch.setenv("EDGE_ASSETS_UPSTREAM", "")
    assert main(["assets", "sync"]) == 2
    assert "EDGE_ASSETS_UPSTREAM is empty" in capsys.readouterr().err

    monkeypatch.setenv("EDGE_ASSETS_UPSTREAM", "http://127.0.0.1:9")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["assets", "sync"]) == 1
    assert "cannot read the bundles from Redis" in capsys.readouterr().err
    assert main(["assets", "nope"]) == 2


def test_settings_cdn_edge_assets_sync_command(
        env: dict[str, str], redis_client: redis.Redis, upstream: FakeUpstream) -> None:
    """The real command (``python -m edge assets sync``) stores the scripts and exits 0."""
    publish(redis_client, "otherKey", OTHER)

    proc = subprocess.run([sys.executable, "-m", "edge", "assets", "sync"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=60)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stored(Path(env["EDGE_ASSETS_DIR"])) == {
        INTERCOM, "integrations/amplitude/8.1.0/amplitude.dynamic.js.gz"}
