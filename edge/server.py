"""The edge's HTTP/1.1 protocol: uvicorn's httptools protocol, answering the settings route.

Under plain uvicorn every request costs a scope dict, a ``RequestResponseCycle``, an asyncio
task, two ``send`` messages whose headers uvicorn re-validates one by one, and two socket
writes. ``EdgeHttpProtocol`` answers a ``GET``/``HEAD`` of ``/v1/projects/{writeKey}/settings``
itself, with the same code as the ASGI path (``edge.answer.choose`` / ``settings_answer``) and
header lines serialized once per bundle, in one ``transport.write``:

* a bundle the edge holds and need not re-check (``BundleCache.fresh``) is answered before
  the parser callback returns: no task, no coroutine;
* anything else (a miss, a re-check due, an unknown key) awaits Redis in one task, behind a
  stand-in cycle (``_Pending``) so that uvicorn queues requests pipelined behind it.

Everything else goes to the ASGI app exactly as uvicorn would send it: other routes and
methods, query strings and %-escapes, requests with a body, ``Expect`` or ``Upgrade``, a
request pipelined behind one still in the app, a paused transport, an access log, and every
request when ``EDGE_FAST_PATH=false``. The answers keep uvicorn's connection semantics: its
``Date`` (and ``Server``) headers, ``Connection: close`` for HTTP/1.0 and ``close`` requests,
the keep-alive timeout, pipelining order, graceful shutdown, the request counter behind
``--limit-max-requests`` (``on_response_complete``). Not applied to these answers:
uvicorn's ``--limit-concurrency`` (settings-cdn-edge does not set it).

Two more of uvicorn's per-request costs are taken off every request, the app's included: the
ASGI scope is built only for requests that go to the app, and the keep-alive timer is armed
once per idle spell instead of cancelled on every read and armed again on every answer
(together ≈ 2 µs of a held bundle's ≈ 10 µs in-process; tests/edge/test_keep_alive.py).

The protocol reads the edge's ``Runtime`` from the lifespan state, so under any other app
(the bench's ASGI limit) it answers nothing itself: it is uvicorn's protocol with those two
changes. It subclasses uvicorn internals:
pyproject pins uvicorn's minor version and tests/edge/test_server.py runs it on real sockets.

    uvicorn --http edge.server:EdgeHttpProtocol ...   (settings-cdn-edge passes it)
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge import http
from edge.answer import Runtime, choose, scan, settings_answer

log = logging.getLogger("edge.server")

_PREFIX = b"/v1/projects/"
_SUFFIX = b"/settings"
_KEY_START, _KEY_END = len(_PREFIX), -len(_SUFFIX)
_CLOSE = b"connection: close\r\n"
_ERROR = (500, b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n",
          b"Internal Server Error")


class DefaultHeaders:
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


class _Event:
    def set(self) -> None:  # uvicorn's connection_lost wakes the cycle's reader: none here
        pass


class _Pending:
    """Stands in for uvicorn's ``RequestResponseCycle`` while an answer awaits Redis.

    uvicorn reads these attributes: a request pipelined behind an incomplete cycle is queued
    (and started by ``on_response_complete``), a lost connection marks it ``disconnected``,
    ``shutdown`` clears ``keep_alive``.
    """

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = _Event()


class EdgeHttpProtocol(HttpToolsProtocol):
    _answered = False  # the current request was answered (or is being answered) here
    _idle_since: float | None = None  # loop time the last answer completed; None: busy

    def on_message_begin(self) -> None:
        # uvicorn builds the request's ASGI scope here; a request answered in
        # on_headers_complete never needs one, so it is built there (_build_scope), for the
        # requests that go to the app.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _build_scope(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # the scope, exactly as uvicorn builds it
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        rt: Runtime | None = self.app_state.get("edge")
        if rt is not None and rt.settings.fast_path and self._answer(rt):
            self._answered = True
            return
        self._build_scope()
        super().on_headers_complete()

    # -- the keep-alive timer: armed once per idle spell, not once per answer ----------------
    # uvicorn cancels its timer on every read and arms a new one on every answer (a timer
    # handle each time: about a tenth of a held bundle's cost). Here a read only marks the
    # connection busy, and the one timer, when it fires, closes the connection if it has been
    # idle for the timeout since the last answer, or waits out the rest.

    def _unset_keepalive_if_required(self) -> None:  # called by uvicorn on every read
        self._idle_since = None

    def on_response_complete(self) -> None:
        # uvicorn's, but for the timer
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # start the next pipelined request
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if idle_since is None:
            return  # a request is in progress: its answer arms the timer again
        left = idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def on_body(self, body: bytes) -> None:
        if not self._answered:  # (requests with a body never are)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    def _answer(self, rt: Runtime) -> bool:
        """Answer a ``GET``/``HEAD`` of a settings path here; False: leave it to the app."""
        url = self.url
        if not (url.startswith(_PREFIX) and url.endswith(_SUFFIX)) or b"%" in url \
                or b"?" in url or b"#" in url:
            return False  # (uvicorn decodes %-escapes and splits off the query: the app does)
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
        accept_encoding, if_none_match, if_modified_since, plain = scan(self.headers)
        if not plain:
            return False
        write_key = url[_KEY_START:_KEY_END].decode("latin-1")
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        rt.metrics.inline_answers += 1
        entry = rt.cache.fresh(write_key)
        if entry is not None:  # the hot path: answered before this callback returns
            status, lines, tail, body = choose(rt, entry, accept_encoding, if_none_match,
                                               if_modified_since)
            self._write(status, lines, b"" if head else body, keep_alive, tail)
            self.on_response_complete()
            return True
        # A miss or a due re-check awaits Redis: in a task, with a stand-in cycle so that
        # uvicorn queues whatever is pipelined behind it.
        pending = self.cycle = _Pending(keep_alive)  # type: ignore[assignment]
        task = self.loop.create_task(self._answer_later(
            rt, pending, write_key, head, accept_encoding, if_none_match, if_modified_since))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        return True

    async def _answer_later(self, rt: Runtime, pending: _Pending, write_key: str, head: bool,
                            accept_encoding: bytes | None, if_none_match: bytes | None,
                            if_modified_since: bytes | None) -> None:
        try:
            status, lines, body = await settings_answer(
                rt, write_key, head, accept_encoding, if_none_match, if_modified_since)
        except Exception:  # as uvicorn does for an app: log, 500, close
            log.exception("answering %s", write_key)
            (status, lines, body), pending.keep_alive = _ERROR, False
        if pending.disconnected:
            return
        self._write(status, lines, body, pending.keep_alive)
        pending.response_complete = True
        self.on_response_complete()  # the next pipelined request, or the keep-alive timer

    def _write(self, status: int, lines: bytes, body: bytes, keep_alive: bool,
               tail: bytes = b"") -> None:
        """One write: status line, uvicorn's default headers, ours (``lines`` then ``tail``),
        the body.

        What uvicorn's ``RequestResponseCycle.send`` puts on the wire for the same answer.
        """
        self.transport.write(b"".join((
            STATUS_LINE[status], DefaultHeaders.lines(self.server_state.default_headers), lines,
            tail, b"\r\n" if keep_alive else _CLOSE + b"\r\n", body,
        )))
        if not keep_alive:
            self.transport.close()
