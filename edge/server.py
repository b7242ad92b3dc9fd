"""The edge's HTTP/1.1 protocol: uvicorn's httptools protocol, with cache hits answered inline.

Under plain uvicorn every request costs a scope dict, a ``RequestResponseCycle``, an asyncio
task, two ``send`` messages whose headers uvicorn re-validates one by one, and two socket
writes. For the request this service exists for — a ``GET`` of a bundle the edge holds and
need not re-check — all of that is overhead. ``EdgeHttpProtocol`` answers such a request from
the parser callback instead: one cache lookup (``BundleCache.fresh``), the answer chosen by the
same code as the ASGI path (``edge.app.choose``), header lines serialized once per bundle, one
``transport.write``.

Everything else goes to the ASGI app exactly as uvicorn would send it: a miss or a bundle due
for its Redis check (those await Redis), other routes and methods, query strings and
%-escapes, requests with a body, ``Expect`` or ``Upgrade``, a request pipelined behind one
still in the app, a paused transport, an access log, and every request when
``EDGE_FAST_PATH=false``. The inline answer keeps uvicorn's connection semantics: its
``Date`` (and ``Server``) headers, ``Connection: close`` for HTTP/1.0 and ``close`` requests,
the keep-alive timeout, the request counter behind ``--limit-max-requests``.

The protocol reads the edge's ``Runtime`` from the lifespan state, so under any other app
(the bench's ASGI limit) it is uvicorn's protocol unchanged. It subclasses uvicorn internals:
pyproject pins uvicorn's minor version and tests/edge/test_server.py runs it on real sockets.

    uvicorn --http edge.server:EdgeHttpProtocol ...   (settings-cdn-edge passes it)
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge import http
from edge.app import Runtime, age_line, choose

_PREFIX = b"/v1/projects/"
_SUFFIX = b"/settings"
_KEY_START, _KEY_END = len(_PREFIX), -len(_SUFFIX)
# A request with any of these goes to the ASGI app: it may carry a body, wait for
# "100 Continue" or switch protocols.
_NOT_INLINE = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
_CLOSE = b"connection: close\r\n"


class _Defaults:
    """uvicorn's per-server default headers (``Date``, optional ``Server``) as wire bytes.

    uvicorn replaces the list once a second; it is serialized again only then.
    """

    source: object = None
    block = b""

    @classmethod
    def lines(cls, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not cls.source:
            cls.block = http.header_block(headers)
            cls.source = headers
        return cls.block


class EdgeHttpProtocol(HttpToolsProtocol):
    _answered = False  # the current request was answered inline

    def on_headers_complete(self) -> None:
        rt: Runtime | None = self.app_state.get("edge")
        if rt is not None and rt.settings.fast_path and self._answer_inline(rt):
            self._answered = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:  # (requests with a body never are)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    def _answer_inline(self, rt: Runtime) -> bool:
        """Answer a fresh cache hit of the settings route now; False: leave it to the app."""
        url = self.url
        if not (url.startswith(_PREFIX) and url.endswith(_SUFFIX)):
            return False
        method = self.parser.get_method()
        if method == b"GET":
            head = False
        elif method == b"HEAD":
            head = True
        else:
            return False
        cycle = self.cycle
        if ((cycle is not None and not cycle.response_complete) or self.pipeline
                or self.flow.write_paused or self.access_log):
            return False  # keep the order of pipelined answers; let uvicorn apply backpressure
        accept_encoding = if_none_match = if_modified_since = None
        for name, value in self.headers:
            if name == b"accept-encoding":
                accept_encoding = (value if accept_encoding is None
                                   else accept_encoding + b"," + value)
            elif name == b"if-none-match":
                if_none_match = value if if_none_match is None else if_none_match + b"," + value
            elif name == b"if-modified-since":
                if_modified_since = value
            elif name in _NOT_INLINE:
                return False
        # Only keys that passed the syntax check on their way into the cache can be found.
        entry = rt.cache.fresh(url[_KEY_START:_KEY_END].decode("latin-1"))
        if entry is None:
            return False
        status, lines, body = choose(rt, entry, accept_encoding, if_none_match,
                                     if_modified_since)
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        self.transport.write(b"".join((
            STATUS_LINE[status], _Defaults.lines(self.server_state.default_headers), lines,
            age_line(rt, entry), b"\r\n" if keep_alive else _CLOSE + b"\r\n",
            b"" if head else body,
        )))
        # What uvicorn does when a response completes (RequestResponseCycle.send and
        # HttpToolsProtocol.on_response_complete).
        self.server_state.total_requests += 1
        rt.metrics.inline_answers += 1
        if not keep_alive:
            self.transport.close()
        else:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)
        return True
