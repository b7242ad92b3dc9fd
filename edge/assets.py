"""Static CDN paths analytics-next fetches from the same base as the settings.

``{cdn}/next-integrations/...`` serves files from ``EDGE_ASSETS_DIR`` the way Segment's
bucket does (client-contract §3.3): ``.gz`` files carry ``Content-Encoding: gzip`` and the
content type of what they compress (JavaScript for ``*.js.gz``) so a ``<script>`` runs them;
versioned paths are immutable, ``latest`` paths short-lived; every answer allows any origin.

Paths are joined defensively: any empty, ``.``, ``..`` or hidden segment, a backslash or NUL
is refused before touching the file system, and the resolved real path (symlinks followed)
must stay inside the directory. Servers decode ``%2e%2e`` to ``..`` before we see it, so
encoded traversal is refused by the same rule.
"""

from __future__ import annotations

import mimetypes
import os

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from edge import http

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
    if any("latest" in segment for segment in path.split("/")):
        return f"public, max-age={latest_max_age}"
    return IMMUTABLE


def not_found() -> Response:
    return PlainTextResponse(
        http.NOT_FOUND_BODY.decode(), status_code=404,
        headers={"access-control-allow-origin": "*", "cache-control": "public, max-age=60"},
    )


async def serve(request: Request, root: str, latest_max_age: int) -> Response:
    if request.method == "OPTIONS":
        requested = request.headers.get("access-control-request-headers")
        preflight = http.preflight_headers(requested)
        return Response(status_code=204, headers={k.decode(): v.decode() for k, v in preflight})
    path = request.path_params["path"]
    full = resolve(root, path)
    if full is None:
        return not_found()
    content_type, gzipped = media_type(full)
    headers = {
        "cache-control": cache_control(path, latest_max_age),
        "access-control-allow-origin": "*",
    }
    if gzipped:
        headers["content-encoding"] = "gzip"
    response = FileResponse(
        full, headers=headers, media_type=content_type, stat_result=os.stat(full)
    )
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and http.none_match(if_none_match, response.headers["etag"]):
        kept = {k: v for k, v in response.headers.items() if k.encode() in http.NOT_MODIFIED_KEEP}
        return Response(status_code=304, headers=kept)
    return response
