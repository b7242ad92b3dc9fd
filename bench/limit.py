"""The limits: one constant bundle answered with the least a correct answer needs.

* ``create_app`` — the **ASGI limit**: a raw ASGI callable under the same server and flags as
  the edge, so ``edge-asgi / asgi-limit`` is the share of the bare ASGI server the edge's app
  keeps.
* ``ConstantProtocol`` — the **protocol limit**: uvicorn's httptools protocol answering every
  request from the parser callback, as ``edge.server.EdgeHttpProtocol`` answers a held bundle,
  so ``edge / protocol-limit`` is what the edge's own work per request costs on that path.

Both do one scan of the request headers for ``If-None-Match`` (304 on an exact match) and send
prepared bytes. Headers are the edge's own (probed by the bench and written to the bundle
file), so every server puts the same bytes on the wire.

    BENCH_LIMIT_BUNDLE=<bundle.json> uvicorn --factory bench.limit:create_app [flags]
    ... --http bench.limit:ConstantProtocol      (the protocol limit; the app is not called)
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge import http
from edge.server import DefaultHeaders

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]



def write_bundle_file(path: Path, *, body: bytes, headers: list[tuple[str, str]],
                      etag: str) -> None:
    """Store what the limit serves: the gzip body and the 200 headers (no length, no date)."""
    path.write_bytes(orjson.dumps({"body": body.hex(), "headers": headers, "etag": etag}))


def _answer_headers(body: bytes, headers: list[tuple[str, str]]
                    ) -> tuple[http.Headers, http.Headers]:
    """The 200 headers (the edge's, with this body's length) and the 304's subset of them."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
           if k.lower() not in ("content-length", "date", "server")]
    return ([*raw, (b"content-length", str(len(body)).encode())],
            [(k, v) for k, v in raw if k in http.NOT_MODIFIED_KEEP])


def build(body: bytes, headers: list[tuple[str, str]], etag: str) -> ASGIApp:
    ok_headers, not_modified_headers = _answer_headers(body, headers)
    ok = {"type": "http.response.start", "status": 200, "headers": ok_headers}
    ok_body = {"type": "http.response.body", "body": body}
    not_modified = {"type": "http.response.start", "status": 304,
                    "headers": not_modified_headers}
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


def _bundle_file() -> tuple[bytes, list[tuple[str, str]], str]:
    name = os.environ.get("BENCH_LIMIT_BUNDLE", "")
    if not name:
        raise RuntimeError("BENCH_LIMIT_BUNDLE is not set: it names the bundle file to serve")
    data = orjson.loads(Path(name).read_bytes())
    headers = [(str(k), str(v)) for k, v in data["headers"]]
    return bytes.fromhex(data["body"]), headers, str(data["etag"])


def create_app() -> ASGIApp:
    """The uvicorn factory: reads the bundle file named by ``BENCH_LIMIT_BUNDLE``."""
    return build(*_bundle_file())


class ConstantProtocol(HttpToolsProtocol):
    """Every request answered from the parser callback: 200 with the bundle, or 304.

    The same connection handling as ``EdgeHttpProtocol``'s inline answer (uvicorn's default
    headers, ``Connection: close`` rules, ``on_response_complete``), none of the edge's work.
    """

    _answers: tuple[bytes, bytes, bytes] | None = None  # 200 lines + body, 304 lines, ETag
    _answered = False

    @classmethod
    def _load(cls) -> tuple[bytes, bytes, bytes]:
        if cls._answers is None:
            body, headers, etag = _bundle_file()
            ok, not_modified = _answer_headers(body, headers)
            cls._answers = (http.header_block(ok) + b"\r\n" + body,
                            http.header_block(not_modified) + b"\r\n", etag.encode("latin-1"))
        return cls._answers

    def on_headers_complete(self) -> None:
        ok, not_modified, tag = self._load()
        answer = ok
        for name, value in self.headers:
            if name == b"if-none-match" and value == tag:
                answer = not_modified
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        status = STATUS_LINE[200 if answer is ok else 304]
        close = b"" if keep_alive else b"connection: close\r\n"
        self.transport.write(b"".join((
            status, DefaultHeaders.lines(self.server_state.default_headers), close, answer)))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
        self._answered = True

    def on_body(self, body: bytes) -> None:
        pass  # answered already; a body is read and dropped

    def on_message_complete(self) -> None:
        self._answered = False
