"""Real programs the propagation proofs start: the edge, nginx in front of it, a page server.

Every program binds 127.0.0.1 on a free port, writes its logs into a temp directory, and
is stopped by the PID this module started — never by name. Every wait is bounded. A
missing program fails with the command that installs it, never a skip.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.services import free_port, stop_process, wait_for_port

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent.parent
NODE_MODULES = E2E_DIR / "node_modules"
ANALYTICS_UMD = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
PAGE_DIR = E2E_DIR / "page"
DRIVER = E2E_DIR / "driver.mjs"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")


def require_program(path: str, install_hint: str) -> str:
    """The program's path, or a failure naming the package that provides it."""
    found = path if os.access(path, os.X_OK) else shutil.which(path)
    if not found:
        raise RuntimeError(f"{path} not found: {install_hint}")
    return found


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def fetch(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> Reply:
    """One GET on a fresh connection, with exactly the request headers given."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


class Process:
    """One child process with its output in a log file; ``stop`` ends exactly that PID."""

    def __init__(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self, port: int, timeout: float = 15.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode} before listening on "
                        f"port {port}:\n{self.log()}"
                    )
                try:
                    wait_for_port(port, timeout=0.2)
                    return
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{self.name} does not listen on port {port} after {timeout}s:\n"
                            f"{self.log()}"
                        ) from None
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, sig, timeout)
        self.proc = None

    def log(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return "(no log)"


class Edge:
    """The real edge (``python -m edge``) configured through EDGE_* variables only."""

    def __init__(self, redis_url: str, assets_dir: Path, env: Mapping[str, str],
                 log_dir: Path) -> None:
        self.port = free_port()
        full_env = {
            **os.environ,
            "EDGE_HOST": "127.0.0.1",
            "EDGE_PORT": str(self.port),
            "REDIS_URL": redis_url,
            "EDGE_ASSETS_DIR": str(assets_dir),
            "EDGE_ASSETS_UPSTREAM": "",  # never the public CDN from a test
            **env,
        }
        self.process = Process("edge", [sys.executable, "-m", "edge"], env=full_env,
                               cwd=ROOT, log_dir=log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start(self.port)

    def stop(self) -> None:
        self.process.stop()


def nginx_conf(directory: Path, port: int, upstream: str) -> str:
    """An nginx.conf whose cache obeys the origin's Cache-Control and nothing else.

    nginx 1.22 takes the lifetime from ``s-maxage`` (over ``max-age``) and honours the
    ``stale-while-revalidate`` / ``stale-if-error`` extensions for the seconds they name
    (since 1.11.10) as long as ``proxy_cache_use_stale`` does not widen them — so it is
    left at its default (off) and no ``proxy_cache_valid`` overrides the origin. It ignores
    the origin's ``Age`` (it counts its lifetime from its own fetch), so it is a strict test
    of the bound. ``proxy_cache_background_update`` lets stale-while-revalidate serve the
    stale copy while one subrequest refreshes it; ``proxy_cache_revalidate`` refreshes an
    expired entry with a conditional request (the edge answers 304).
    """
    user = ""
    if os.geteuid() == 0:
        # Workers of a root master switch to `nobody`, who cannot enter our 0700 temp dir.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};"
    d = directory
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format cache '$time_iso8601 $status "$request" cache=$upstream_cache_status '
                     'upstream=$upstream_status inm="$http_if_none_match"';
    access_log {d}/access.log cache;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=settings:1m max_size=16m inactive=10m
                     use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 5s;
            proxy_cache settings;
            proxy_cache_revalidate on;
            proxy_cache_background_update on;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 2s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


class Nginx:
    """Debian's nginx on a free loopback port, caching in front of ``upstream``."""

    def __init__(self, upstream: str, log_dir: Path) -> None:
        binary = require_program(
            NGINX, "install Debian's nginx: apt-get install nginx-light (or set NGINX_BIN)"
        )
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sc-nginx-", dir=log_dir))
        conf = self.dir / "nginx.conf"
        conf.write_text(nginx_conf(self.dir, self.port, upstream))
        self.process = Process(
            "nginx",
            [binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf)],
            log_dir=self.dir,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start(self.port)

    def stop(self) -> None:
        # SIGQUIT: graceful shutdown of master and workers (nginx's documented signal).
        self.process.stop(signal.SIGQUIT)

    def access_log_has(self, text: str, timeout: float = 2.0) -> bool:
        """Whether ``text`` shows up in the access log (written after the response: wait)."""
        deadline = time.monotonic() + timeout
        path = self.dir / "access.log"
        while True:
            if path.exists() and text in path.read_text(errors="replace"):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def logs(self) -> str:
        parts = []
        for name in ("error.log", "access.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        # The page and the library must not be cached: only the settings path is under test.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class PageServer:
    """A tiny static server for the test page and analytics-next's UMD build.

    ``/`` is ``page/``; ``/analytics-next/bundles/`` is node_modules' ``dist/umd``, where
    the library looks for its lazy chunks (``<cdn>/analytics-next/bundles/``) when the
    page sets ``window.analytics._cdn`` to this server before loading it.
    """

    def __init__(self, page_dir: Path = PAGE_DIR) -> None:
        root = Path(tempfile.mkdtemp(prefix="sc-page-"))
        shutil.copytree(page_dir, root, dirs_exist_ok=True)
        (root / "analytics-next").mkdir()
        (root / "analytics-next" / "bundles").symlink_to(ANALYTICS_UMD)
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
