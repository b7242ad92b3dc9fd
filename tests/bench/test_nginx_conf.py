"""The bench's nginx: the proxy held to the target obeys the edge; its files live in memory."""

from __future__ import annotations

import random
import re
import resource
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench import nginx as ngx
from bench import runner

EDGE_CC = "public, max-age=60, s-maxage=300, stale-while-revalidate=60, stale-if-error=86400"


def _layout(tmp_path: Path) -> ngx.NginxLayout:
    """nginx's layout in ``tmp_path`` for an edge sending ``EDGE_CC`` (ports are not bound)."""
    return ngx.NginxLayout(workdir=tmp_path, root=tmp_path / "www", static_port=1001,
                           proxy_port=1002, proxy_ttl_port=1003, edge_port=1004,
                           cache_control=EDGE_CC, not_found_cache_control="public, max-age=30",
                           version_header="x-settings-version")


def _server(conf: str, port: int) -> str:
    """The text of the ``server`` block listening on ``port``."""
    start = conf.index(f"listen 127.0.0.1:{port} ")
    end = conf.find("\n    server {", start)
    return conf[start:] if end < 0 else conf[start:end]


@pytest.mark.parametrize(("cache_control", "seconds"), [
    (EDGE_CC, 300),
    ("public, max-age=60", 60),
    ("max-age=5, s-maxage=7", 7),
    ("no-store", 0),
    ("public, xs-maxage=9", 0),
])
def test_shared_lifetime_prefers_s_maxage(cache_control: str, seconds: int) -> None:
    assert ngx.shared_lifetime(cache_control) == seconds


def test_proxy_obeys_the_edge_and_proxy_ttl_keeps_the_edge_lifetimes(tmp_path: Path) -> None:
    # Given the headers the edge sends
    layout = _layout(tmp_path)

    # When the bench writes nginx's configuration
    conf = ngx.write_config(layout).read_text()

    # Then the proxy the target is measured on takes lifetime and stale use from the edge
    # alone, as tests/e2e proves the propagation bound with: nothing overrides or widens them
    proxy = _server(conf, 1002)
    assert "proxy_cache settings;" in proxy
    for widening in ("proxy_cache_valid", "proxy_ignore_headers", "proxy_cache_use_stale"):
        assert widening not in proxy
    # And the other proxy ignores the edge's Cache-Control but keeps its lifetimes, no longer
    assert re.findall(r"proxy_\w+ [^;]*;", _server(conf, 1003)) == [
        "proxy_pass http://edge;", "proxy_http_version 1.1;",
        'proxy_set_header Connection "";', "proxy_cache settings_ttl;",
        "proxy_cache_revalidate on;", "proxy_cache_lock on;",
        "proxy_cache_background_update on;", "proxy_ignore_headers Cache-Control Expires;",
        "proxy_cache_valid 200 300s;", "proxy_cache_valid 404 30s;",
    ]
    # And each cache has its own zone and directory
    assert (tmp_path / "ngx-cache").is_dir() and (tmp_path / "ngx-cache-ttl").is_dir()
    assert conf.count("keys_zone=settings:") == conf.count("keys_zone=settings_ttl:") == 1


def test_nginx_dir_is_on_the_memory_fs_when_it_has_room(tmp_path: Path) -> None:
    # Given a file system with room (as /dev/shm is)
    # When the bench makes nginx's directory
    made = runner.bench_nginx_dir(tmp_path)
    # Then it is there, readable by nginx's unprivileged workers
    assert made.parent == tmp_path and made.is_dir()
    assert made.stat().st_mode & 0o777 == 0o755


def test_nginx_dir_falls_back_beside_the_work_dir(tmp_path: Path) -> None:
    # Given no memory file system
    missing = tmp_path / "no-shm"
    # When the bench makes nginx's directory
    made = runner.bench_nginx_dir(missing)
    try:
        # Then it is in the default temporary directory
        assert made.parent == Path(tempfile.gettempdir()) and made.is_dir()
        assert not missing.exists()
    finally:
        made.rmdir()


@pytest.mark.parametrize(("hard_limit", "nofile", "cached"), [
    (20_000, 20_000, 18_000),  # seen here: the whole limit, 2,000 kept for connections
    (1_048_576, 42_000, 40_000),  # room for every hot set: no more
    (resource.RLIM_INFINITY, 42_000, 40_000),
    (1024, 1024, 512),  # a small limit: still room for connections
])
def test_open_file_cache_stays_inside_the_descriptor_limit(
        hard_limit: int, nofile: int, cached: int) -> None:
    assert ngx.descriptor_budget(hard_limit) == (nofile, cached)


def test_nginx_builds_the_version_map_without_searching(tmp_path: Path) -> None:
    # Given the configuration for 10,000 bundles' versions (54-byte paths, random keys)
    layout = _layout(tmp_path)
    conf = ngx.write_config(layout)
    keys = random.Random(6)
    (tmp_path / "versions.map").write_text("".join(
        f"/v1/projects/{keys.getrandbits(128):032x}/settings {i};\n" for i in range(10_000)))
    # When nginx checks it
    checked = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path),
                              "-e", str(tmp_path / "nginx-t.log")],
                             capture_output=True, text=True, timeout=60)
    # Then it is valid, and nginx found a table without giving up on the bucket size (with
    # one entry a bucket it searched for 25 s first)
    assert checked.returncode == 0, checked.stderr
    assert "could not build optimal" not in checked.stderr, checked.stderr
