"""Static CDN paths analytics-next fetches from the same base as the settings.

``{cdn}/next-integrations/...`` serves files from the store ``EDGE_ASSETS_DIR`` the way
Segment's bucket does (client-contract §3.3): ``.gz`` files carry ``Content-Encoding: gzip``
and the content type of what they compress (JavaScript for ``*.js.gz``) so a ``<script>``
runs them; versioned paths are immutable, ``latest`` paths short-lived; every answer allows
any origin. A file the store lacks is fetched from ``EDGE_ASSETS_UPSTREAM`` by the mirror
(edge/mirror.py) and stored first.

Paths are joined defensively: any empty, ``.``, ``..`` or hidden segment, a backslash or NUL
is refused before touching the file system, and the resolved real path (symlinks followed)
must stay inside the directory. Servers decode ``%2e%2e`` to ``..`` before we see it, so
encoded traversal is refused by the same rule. The mirror fetches only ``mirrorable`` paths.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import time
from collections import OrderedDict
from email.utils import formatdate
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from edge import http

if TYPE_CHECKING:
    from edge.mirror import Mirror

IMMUTABLE = "public, max-age=31536000, immutable"
PREFIX = "/next-integrations/"

_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".css": "text/css",
}


def safe_relative(path: str) -> str | None:
    """``path`` when every segment is a plain name, else ``None``."""
    segments = path.split("/")
    for segment in segments:
        if not segment or segment.startswith(".") or "\\" in segment or "\x00" in segment:
            return None
    return "/".join(segments)


# A path the mirror may fetch: plain segments of URL-safe characters (Segment's integration
# paths, versions, webpack chunk names, base64 of obfuscated names), none hidden, none too long
# for a file name.
_MIRRORABLE_SEGMENT = re.compile(r"[A-Za-z0-9_~@+=,-][A-Za-z0-9._~@+=,-]{0,254}")
MAX_MIRRORED_PATH = 1024


def mirrorable(path: str) -> bool:
    """Whether the mirror may fetch ``path`` (relative to ``/next-integrations/``)."""
    return len(path) <= MAX_MIRRORED_PATH and all(
        _MIRRORABLE_SEGMENT.fullmatch(segment) for segment in path.split("/"))


def resolve(root: str, path: str) -> str | None:
    """The regular file ``path`` names inside ``root``, or ``None`` (never outside it)."""
    relative = safe_relative(path)
    if relative is None or not root:
        return None
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([full, base]) != base or not os.path.isfile(full):
        return None
    return full


def media_type(path: str) -> tuple[str, bool]:
    """Content type of what the file holds, and whether it is gzip-encoded."""
    gzipped = path.endswith(".gz")
    inner = path[:-3] if gzipped else path
    _, ext = os.path.splitext(inner)
    guessed = _TYPES.get(ext) or mimetypes.guess_type(inner)[0] or "application/octet-stream"
    return guessed, gzipped


def cache_control(path: str, latest_max_age: int) -> str:
    """Immutable unless the path is a moving alias (a ``latest`` segment or file name)."""
    if is_latest(path):
        return f"public, max-age={latest_max_age}"
    return IMMUTABLE


def not_found(max_age: int = 60) -> Response:
    return PlainTextResponse(
        http.NOT_FOUND_BODY.decode(), status_code=404,
        headers={"access-control-allow-origin": "*", "cache-control": f"public, max-age={max_age}"},
    )


def upstream_failed(status: int, retry_after: int) -> Response:
    """The mirror's 502 (upstream error) or 504 (upstream timeout): never cached."""
    text = "Upstream timed out" if status == 504 else "Upstream error"
    return PlainTextResponse(
        text, status_code=status,
        headers={"access-control-allow-origin": "*", "cache-control": "no-store",
                 "retry-after": str(retry_after)},
    )


def is_latest(path: str) -> bool:
    return any("latest" in segment for segment in path.split("/"))


def _headers(path: str, latest_max_age: int) -> tuple[str, dict[str, str]]:
    content_type, gzipped = media_type(path)
    headers = {
        "cache-control": cache_control(path, latest_max_age),
        "access-control-allow-origin": "*",
    }
    if gzipped:
        headers["content-encoding"] = "gzip"
    return content_type, headers


class FileMemory:
    """Stored files a worker keeps in memory, up to ``max_bytes`` in all (least recently
    served dropped first), each at most ``max_file`` bytes. An entry is served only while the
    file's mtime and size are those it was read with (one ``stat`` per request), so a file
    replaced in the store (a refreshed ``latest``) is read again."""

    def __init__(self, max_bytes: int = 64 << 20, max_file: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self.max_file = max_file
        self.size = 0
        self._held: OrderedDict[str, tuple[int, int, bytes]] = OrderedDict()

    def get(self, full: str, stat: os.stat_result) -> bytes | None:
        held = self._held.get(full)
        if held is not None and held[0] == stat.st_mtime_ns and held[1] == stat.st_size:
            self._held.move_to_end(full)
            return held[2]
        if stat.st_size > self.max_file:
            return None
        try:
            with open(full, "rb") as src:
                body = src.read(self.max_file + 1)
        except OSError:
            return None
        if len(body) != stat.st_size:
            return None  # replaced meanwhile: the next request reads the new one
        if held is not None:
            self.size -= held[1]
        self._held[full] = (stat.st_mtime_ns, stat.st_size, body)
        self.size += stat.st_size
        while self.size > self.max_bytes:
            _, (_, size, _) = self._held.popitem(last=False)
            self.size -= size
        return body


def _stat_headers(stat: os.stat_result) -> dict[str, str]:
    """``Last-Modified`` and ``ETag`` as Starlette's FileResponse derives them."""
    base = f"{stat.st_mtime}-{stat.st_size}"
    return {"last-modified": formatdate(stat.st_mtime, usegmt=True),
            "etag": f'"{hashlib.md5(base.encode(), usedforsecurity=False).hexdigest()}"'}


def _file(request: Request, full: str, path: str, latest_max_age: int,
          stat: os.stat_result, memory: FileMemory | None = None) -> Response:
    content_type, headers = _headers(path, latest_max_age)
    body = memory.get(full, stat) if memory is not None else None
    if body is not None:
        headers.update(_stat_headers(stat))
        response: Response = Response(body, headers=headers, media_type=content_type)
    else:
        response = FileResponse(full, headers=headers, media_type=content_type,
                                stat_result=stat)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and http.none_match(if_none_match, response.headers["etag"]):
        kept = {k: v for k, v in response.headers.items() if k.encode() in http.NOT_MODIFIED_KEEP}
        return Response(status_code=304, headers=kept)
    return response


async def serve(request: Request, root: str, latest_max_age: int,
                mirror: Mirror | None = None) -> Response:
    """A file of the store; with ``mirror``, one the store lacks is fetched upstream first."""
    if request.method == "OPTIONS":
        requested = request.headers.get("access-control-request-headers")
        preflight = http.preflight_headers(requested)
        return Response(status_code=204, headers={k.decode(): v.decode() for k, v in preflight})
    path = request.path_params["path"]
    full = resolve(root, path)
    if full is not None:
        stat = os.stat(full)
        if (mirror is not None and mirror.upstream is not None and is_latest(path)
                and time.time() - stat.st_mtime > latest_max_age
                and mirror.remembered(path) is None and mirrorable(path)):
            mirror.start(path)  # replaced in the background; this request is not held
        if mirror is not None:
            mirror.metrics.mirror_hits += 1
            return _file(request, full, path, latest_max_age, stat, mirror.memory)
        return _file(request, full, path, latest_max_age, stat)
    if mirror is None or mirror.upstream is None or not mirrorable(path):
        return not_found()
    outcome = await mirror.obtain(path)
    if outcome.kind == "stored":
        return _file(request, outcome.path, path, latest_max_age, os.stat(outcome.path))
    if outcome.kind == "unstored":
        content_type, headers = _headers(path, latest_max_age)
        return Response(outcome.body, headers=headers, media_type=content_type)
    if outcome.kind == "not_found":
        return not_found(int(mirror.negative_ttl))
    return upstream_failed(outcome.status, int(mirror.retry_after))
