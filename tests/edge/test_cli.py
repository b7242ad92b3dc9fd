"""settings-cdn-edge: --help lists every setting, bad settings exit 2, and it really serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from edge.cli import main
from edge.settings import OPTIONS, settings_table
from tests.edge.helpers import publish
from tests.services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs read os.environ: start each test from the defaults."""
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the usage and the settings table with every variable and default."""
    assert main(["--help"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("usage: settings-cdn-edge")
    assert settings_table() in out
    for option in OPTIONS:
        assert f"`{option.env}`" in out


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"EDGE_PORT": "http"}, "EDGE_PORT='http' is invalid", id="bad-value"),
        pytest.param({"EDGE_S_MAXAGE": "4000"},
                     "above EDGE_PROPAGATION_BUDGET=1800; lower EDGE_REFRESH_INTERVAL=30, "
                     "EDGE_S_MAXAGE=4000", id="over-budget"),
        pytest.param({"EDGE_REFRESH_INTERVAL": "inf"},
                     "EDGE_REFRESH_INTERVAL=inf is invalid: must be a number <= 2147483647",
                     id="infinite-lifetime"),
    ],
)
def test_bad_settings_exit_2(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad value or an over-budget worst case exits 2 with a message naming the settings."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main([]) == 2
    assert message in capsys.readouterr().err


def test_unknown_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown argument exits 2 and points at --help."""
    assert main(["--bogus"]) == 2
    assert "unknown argument '--bogus'" in capsys.readouterr().err


def test_check_prints_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """--check validates and prints the effective propagation policy."""
    assert main(["--check"]) == 0
    assert '"worst_case_seconds": 513' in capsys.readouterr().out


@pytest.fixture
def running_edge(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """``python -m edge`` (uvicorn, uvloop, httptools) on a free loopback port."""
    port = free_port()
    (tmp_path / "a.js").write_bytes(b"1;")
    env = {**os.environ, "REDIS_URL": redis_url, "EDGE_PORT": str(port),
           "EDGE_HOST": "127.0.0.1", "EDGE_ASSETS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT),
           "EDGE_ASSETS_UPSTREAM": ""}
    with open(tmp_path / "edge.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port)
            yield f"127.0.0.1:{port}"
        finally:
            stop_process(proc)


def test_python_m_edge_serves(running_edge: str, redis_client: redis.Redis) -> None:
    """The real server answers a bundle with Date and no Server header, and 404s traversal."""
    env = publish(redis_client, "wk1")

    reply = httpx.get(f"http://{running_edge}/v1/projects/wk1/settings",
                      headers={"accept-encoding": "identity"})
    host, port = running_edge.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /next-integrations/../../etc/passwd HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk

    assert reply.status_code == 200
    assert reply.content == env.json
    assert "date" in reply.headers and "server" not in reply.headers
    assert raw.split(b"\r\n", 1)[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request")
    assert b"root:" not in raw


def test_bad_settings_exit_2_as_a_program() -> None:
    """`python -m edge` with a bad value exits 2 before binding anything."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "EDGE_REFRESH_INTERVAL": "soon", "PYTHONPATH": str(ROOT)},
        check=False,
    )

    assert proc.returncode == 2
    assert "EDGE_REFRESH_INTERVAL='soon' is invalid: expected a number of seconds" in proc.stderr
