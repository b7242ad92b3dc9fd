"""The classic snippet's script: ``GET /analytics.js/v1/{writeKey}/analytics.min.js``.

Segment's snippet inserts ``<script src="https://<cdn>/analytics.js/v1/<writeKey>/
analytics.min.js">``. The edge answers that path with analytics-next's standalone build (the
``dist/umd/standalone.js`` of the ``@segment/analytics-next`` npm package, named by
``EDGE_ANALYTICS_JS``) for every write key it holds a bundle for, and with the CDN's 404 text
for any other key. The bytes are the same for every key: the standalone build reads the write
key from the snippet (``analytics._writeKey``) or from this path, and its CDN from
``analytics._cdn`` or, for an ``https://`` script src, from the part before
``/analytics.js/v1/`` (``src/lib/parse-cdn.ts``). So moving a site to this edge is changing
the snippet's host (plus ``analytics._cdn`` for a plain-http host).

The standalone build loads its lazy chunks from ``{cdn}/analytics-next/bundles/<name>``
(webpack's public path, ``src/browser/standalone.ts``): the ``*.js`` files beside the
standalone file are served there, immutable (their names carry a content hash).

Everything is read and gzip-compressed once, when the app is built; answers are strong-ETag'd,
allow any origin, honour If-None-Match (304) and negotiate gzip. ``EDGE_ANALYTICS_JS`` unset:
both paths answer 404 with a text that says so, and the edge logs it once at start.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge import http
from edge.answer import Runtime
from edge.cache import Unavailable
from edge.settings import EdgeSettings

log = logging.getLogger("edge.snippet")

SCRIPT_PATH = "/analytics.js/v1/{write_key}/analytics.min.js"
CHUNK_PREFIX = "/analytics-next/bundles/"
PREFIXES = ("/analytics.js/", CHUNK_PREFIX)  # (the metrics' route "analytics_js")
CHUNK_IMMUTABLE = "public, max-age=31536000, immutable"
NOT_CONFIGURED_BODY = (b"analytics.js is not served by this edge: EDGE_ANALYTICS_JS "
                       b"(the standalone.js of @segment/analytics-next) is not set.")
_CHUNK_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\.js")
_JS = "text/javascript; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    """One file held in memory with its gzip form and strong ETag, both computed once."""

    identity: bytes
    gzip: bytes
    etag: str

    @classmethod
    def of(cls, data: bytes) -> Asset:
        digest = hashlib.sha256(data).hexdigest()[:32]
        return cls(identity=data, gzip=gzip.compress(data, compresslevel=9, mtime=0),
                   etag=f'"{digest}"')


@dataclass(frozen=True)
class Standalone:
    """The standalone build and its chunks, or nothing (``script is None``)."""

    script: Asset | None
    chunks: dict[str, Asset]
    max_age: int

    @classmethod
    def load(cls, settings: EdgeSettings) -> Standalone:
        """Read ``EDGE_ANALYTICS_JS`` and the chunks beside it (``OSError`` if unreadable)."""
        path = settings.analytics_js
        if not path:
            log.warning("EDGE_ANALYTICS_JS is not set: /analytics.js/v1/{writeKey}/"
                        "analytics.min.js and /analytics-next/bundles/ answer 404")
            return cls(script=None, chunks={}, max_age=settings.analytics_js_max_age)
        with open(path, "rb") as f:
            script = Asset.of(f.read())
        directory = os.path.dirname(os.path.abspath(path))
        chunks: dict[str, Asset] = {}
        for name in sorted(os.listdir(directory)):
            full = os.path.join(directory, name)
            if ".bundle." in name and _CHUNK_NAME.fullmatch(name) and os.path.isfile(full):
                with open(full, "rb") as f:
                    chunks[name] = Asset.of(f.read())
        log.info("serving %s (%d bytes, %d gzip) for every known write key, with %d chunks",
                 path, len(script.identity), len(script.gzip), len(chunks))
        return cls(script=script, chunks=chunks, max_age=settings.analytics_js_max_age)

    def routes(self) -> list[Route]:
        return [
            Route(SCRIPT_PATH, self.serve_script, methods=["GET", "HEAD", "OPTIONS"]),
            Route(CHUNK_PREFIX + "{name}", self.serve_chunk, methods=["GET", "HEAD", "OPTIONS"]),
        ]

    async def serve_script(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight(request)
        if self.script is None:
            return _not_configured()
        rt: Runtime = request.state.edge
        write_key: str = request.path_params["write_key"]
        if not http.valid_write_key(write_key):
            return _unknown_key(rt)
        try:
            entry = await rt.cache.get(write_key)
        except Unavailable:
            return Response(http.UNAVAILABLE_BODY, status_code=503, headers=_headers(
                http.unavailable_headers(rt.settings.retry_after)))
        if entry is None:
            return _unknown_key(rt)
        return _answer(request, self.script, f"public, max-age={self.max_age}")

    async def serve_chunk(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight(request)
        if self.script is None:
            return _not_configured()
        asset = self.chunks.get(request.path_params["name"])
        if asset is None:
            return _unknown_key(request.state.edge)
        return _answer(request, asset, CHUNK_IMMUTABLE)


def _headers(block: http.Headers) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in block}


def _preflight(request: Request) -> Response:
    requested = request.headers.get("access-control-request-headers")
    return Response(status_code=204, headers=_headers(http.preflight_headers(requested)))


def _unknown_key(rt: Runtime) -> Response:
    headers = _headers(http.not_found_headers(rt.settings.not_found_max_age))
    return Response(http.NOT_FOUND_BODY, status_code=404, headers=headers)


def _not_configured() -> Response:
    return Response(NOT_CONFIGURED_BODY, status_code=404, media_type="text/plain",
                    headers={"cache-control": "no-store", "access-control-allow-origin": "*"})


def _answer(request: Request, asset: Asset, cache_control: str) -> Response:
    """200 (gzip when accepted) or 304 for a matching If-None-Match; HEAD has no body."""
    headers = {
        "etag": asset.etag,
        "cache-control": cache_control,
        "vary": "Accept-Encoding",
        "access-control-allow-origin": "*",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and http.none_match(if_none_match, asset.etag):
        return Response(status_code=304, headers=headers)
    gzipped = http.accepts_gzip(request.headers.get("accept-encoding"))
    body = asset.gzip if gzipped else asset.identity
    if gzipped:
        headers["content-encoding"] = "gzip"
    headers["content-length"] = str(len(body))
    return Response(b"" if request.method == "HEAD" else body, headers=headers, media_type=_JS)
