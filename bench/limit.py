"""The ASGI limit: a raw ASGI callable that answers every request with one constant bundle.

It runs under the same server and flags as the edge, so ``edge / asgi-limit`` is the share of
the bare server's throughput the edge keeps. It does the least a correct answer needs: one
scan of the request headers for ``If-None-Match`` (304 on an exact match) and prepared bytes.
Headers are the edge's own (probed by the bench and written to the bundle file), so both
servers put the same bytes on the wire.

    uvicorn --factory bench.limit:create_app   (BENCH_LIMIT_BUNDLE=<bundle.json>)
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Headers a 304 keeps (RFC 9110 §15.4.5), as the edge does.
KEPT_ON_304 = frozenset({b"cache-control", b"content-location", b"date", b"etag", b"expires",
                         b"vary"})


def write_bundle_file(path: Path, *, body: bytes, headers: list[tuple[str, str]],
                      etag: str) -> None:
    """Store what the limit serves: the gzip body and the 200 headers (no length, no date)."""
    path.write_bytes(orjson.dumps({"body": body.hex(), "headers": headers, "etag": etag}))


def build(body: bytes, headers: list[tuple[str, str]], etag: str) -> ASGIApp:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
           if k.lower() not in ("content-length", "date", "server")]
    ok = {"type": "http.response.start", "status": 200,
          "headers": [*raw, (b"content-length", str(len(body)).encode())]}
    ok_body = {"type": "http.response.body", "body": body}
    not_modified = {"type": "http.response.start", "status": 304,
                    "headers": [(k, v) for k, v in raw if k in KEPT_ON_304]}
    empty = {"type": "http.response.body", "body": b""}
    tag = etag.encode("latin-1")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        for name, value in scope["headers"]:
            if name == b"if-none-match" and value == tag:
                await send(not_modified)
                await send(empty)
                return
        await send(ok)
        await send(ok_body)

    return app


def create_app() -> ASGIApp:
    """The uvicorn factory: reads the bundle file named by ``BENCH_LIMIT_BUNDLE``."""
    name = os.environ.get("BENCH_LIMIT_BUNDLE", "")
    if not name:
        raise RuntimeError("BENCH_LIMIT_BUNDLE is not set: it names the bundle file to serve")
    data = orjson.loads(Path(name).read_bytes())
    headers = [(str(k), str(v)) for k, v in data["headers"]]
    return build(bytes.fromhex(data["body"]), headers, str(data["etag"]))
