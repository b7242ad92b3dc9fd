"""nginx as the reference and as the production front: static files and ``proxy_cache``.

One nginx process tree (one worker) with three servers. The *static* server serves every
bundle as a file — ``settings`` and its precompressed ``settings.gz`` (``gzip_static``) —
with the edge's headers: ETag (nginx's own, from the file), Last-Modified (file mtime = the
publish time), Cache-Control and the version header as the edge sends them, CORS, and
``Vary: Accept-Encoding``. That is what a user would otherwise deploy: one JSON file per write
key behind a plain web server. The *proxy* server is nginx ``proxy_cache`` in front of the
edge, as a CDN node would be, in the shape ``tests/e2e`` proves the propagation bound with: its
cache obeys the edge's ``Cache-Control`` and nothing widens it. The *proxy-ttl* server is the
same cache told to ignore the edge's ``Cache-Control`` and to keep 200s for the edge's
``s-maxage`` (404s for their ``max-age``) from its own configuration: measured beside it
because nginx re-scans a stored ``Cache-Control`` on every hit (bench/README.md, "proxy_cache
hits"). It gives up the header's stale-while-revalidate and stale-if-error, and the lifetime no
longer follows the edge's settings without a change to nginx's.
"""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.dataset import Published, settings_path

NOT_FOUND_BODY = "Cannot GET - Invalid path or write key provided."


def nginx_etag(mtime: int, size: int) -> str:
    """The ETag nginx derives from a file: ``"<mtime hex>-<size hex>"``."""
    return f'"{mtime:x}-{size:x}"'


def write_files(root: Path, bundles: Iterable[Published]) -> dict[str, str]:
    """Write ``<root>/v1/projects/<wk>/settings{,.gz}``; returns each key's nginx gzip ETag."""
    etags: dict[str, str] = {}
    for b in bundles:
        directory = root / settings_path(b.write_key).lstrip("/")
        directory.parent.mkdir(parents=True, exist_ok=True)
        plain, packed = directory, directory.with_name("settings.gz")
        plain.write_bytes(b.json)
        packed.write_bytes(b.gzip)
        for f in (plain, packed):
            os.utime(f, (b.published_at, b.published_at))
        etags[b.write_key] = nginx_etag(b.published_at, len(b.gzip))
    return etags


def write_version_map(path: Path, bundles: Iterable[Published]) -> None:
    with path.open("w") as out:
        for b in bundles:
            out.write(f"{settings_path(b.write_key)} {b.version};\n")


@dataclass(frozen=True)
class NginxLayout:
    workdir: Path
    root: Path  # static files
    static_port: int
    proxy_port: int
    proxy_ttl_port: int
    edge_port: int
    cache_control: str
    not_found_cache_control: str
    version_header: str

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"


def shared_lifetime(cache_control: str) -> int:
    """Seconds a shared cache may keep a response: ``s-maxage``, else ``max-age``, else 0."""
    for directive in ("s-maxage", "max-age"):
        found = re.search(rf"(?:^|[,\s]){directive}=(\d+)", cache_control)
        if found:
            return int(found.group(1))
    return 0


# Open files nginx keeps (open_file_cache): room for the three hot sets a proxy-hit round
# alternates between (static files, and both caches' files: 3 x 10,000 by default) without
# evicting each other, and still fewer than the cold scenario's 80,000 keys, so a cold pass
# finds none of its files open.
FILE_CACHE = 40_000
SPARE_DESCRIPTORS = 2000


def descriptor_budget(hard_limit: int | None = None) -> tuple[int, int]:
    """nginx's ``worker_rlimit_nofile`` and ``open_file_cache max``, within the hard limit.

    Every cached open file holds a descriptor, and a full table makes nginx fail requests
    with EMFILE instead of serving them: the cache leaves 2,000 descriptors for connections
    (64 clients, 64 to the edge) and logs. Below ``FILE_CACHE`` the hot sets evict each
    other between rounds; below one hot set (10,000 files), within a round too. Seen here:
    a hard limit of 20,000 (which root could not raise) and a cache of half of it, 9,000
    files: 5-7 % of nginx's hot requests, static and proxy alike, paid an open, a stat and a
    close (strace).
    """
    if hard_limit is None:
        hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = FILE_CACHE + SPARE_DESCRIPTORS
    nofile = want if hard_limit == resource.RLIM_INFINITY else min(hard_limit, want)
    if nofile < 2 * SPARE_DESCRIPTORS:  # a small limit: half of it for each
        return nofile, nofile // 2
    return nofile, nofile - SPARE_DESCRIPTORS


def _proxy_server(port: int, zone: str, policy: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://edge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache {zone};
            proxy_cache_revalidate on;
            proxy_cache_lock on;
            proxy_cache_background_update on;
{policy}
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}"""


def render(layout: NginxLayout, extra_headers: Mapping[str, str] | None = None) -> str:
    w = layout.workdir
    nofile, file_cache = descriptor_budget()
    adds = "\n".join(f'            add_header {k} "{v}";'
                     for k, v in (extra_headers or {}).items())
    # proxy: the edge's Cache-Control alone (no proxy_cache_use_stale: it would widen the
    # stale-while-revalidate / stale-if-error the edge names, and with them the bound).
    # proxy-ttl: nginx's own lifetimes, equal to the edge's; no stale use, so its bound is
    # s-maxage alone.
    proxies = (
        _proxy_server(layout.proxy_port, "settings",
                      "            # the lifetime and stale use: the edge's Cache-Control")
        + _proxy_server(layout.proxy_ttl_port, "settings_ttl", "\n".join((
            "            proxy_ignore_headers Cache-Control Expires;",
            f"            proxy_cache_valid 200 {shared_lifetime(layout.cache_control)}s;",
            f"            proxy_cache_valid 404 "
            f"{shared_lifetime(layout.not_found_cache_control)}s;"))))
    return f"""
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
master_process on;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 8192; use epoll; }}
http {{
    access_log off;
    server_tokens off;
    # sendfile off: for files of a few KB one read() into nginx's buffer and one writev are
    # cheaper than writev + sendfile. Measured here (hot mix, 64 connections, 3 s runs): static
    # ~210k -> ~250k requests, proxy_cache hits ~165k -> ~185k; off is nginx's own default.
    sendfile off;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    open_file_cache max={file_cache} inactive=600s;
    open_file_cache_valid 3600s;
    open_file_cache_errors on;
    types {{ }}
    default_type application/json;
    client_body_temp_path {w}/ngx-tmp/body;
    proxy_temp_path {w}/ngx-tmp/proxy;
    fastcgi_temp_path {w}/ngx-tmp/fastcgi;
    uwsgi_temp_path {w}/ngx-tmp/uwsgi;
    scgi_temp_path {w}/ngx-tmp/scgi;
    # A bucket holds up to three of the map's 64-byte entries: nginx finds a table size at
    # once. With 128 (one entry) it searched for 25 s at 10,000 keys before giving up and
    # taking the largest size allowed.
    map_hash_max_size 1048576;
    map_hash_bucket_size 256;
    map $uri $settings_version {{
        default "";
        include {w}/versions.map;
    }}
    proxy_cache_path {w}/ngx-cache levels=1:2 keys_zone=settings:64m max_size=4g
                     inactive=1h use_temp_path=off;
    proxy_cache_path {w}/ngx-cache-ttl levels=1:2 keys_zone=settings_ttl:64m max_size=4g
                     inactive=1h use_temp_path=off;
    upstream edge {{
        server 127.0.0.1:{layout.edge_port};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{layout.static_port} backlog=4096;
        root {layout.root};
        location /v1/projects/ {{
            gzip_static on;
            gzip_vary on;
            add_header Cache-Control "{layout.cache_control}";
            add_header Access-Control-Allow-Origin "*";
            add_header {layout.version_header} $settings_version;
{adds}
            error_page 404 = @unknown;
        }}
        location @unknown {{
            default_type text/plain;
            add_header Cache-Control "{layout.not_found_cache_control}" always;
            add_header Access-Control-Allow-Origin "*" always;
            return 404 "{NOT_FOUND_BODY}";
        }}
        location / {{ return 404; }}
    }}

{proxies}
}}
"""


def write_config(layout: NginxLayout, extra_headers: Mapping[str, str] | None = None) -> Path:
    for sub in ("ngx-tmp", "ngx-cache", "ngx-cache-ttl"):
        (layout.workdir / sub).mkdir(parents=True, exist_ok=True)
    layout.conf.write_text(render(layout, extra_headers))
    return layout.conf
