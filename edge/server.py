"""The edge's HTTP/1.1 protocol: uvicorn's httptools protocol, answering the settings route.

Under plain uvicorn every request costs a scope dict, a ``RequestResponseCycle``, an asyncio
task, two ``send`` messages whose headers uvicorn re-validates one by one, and two socket
writes. ``EdgeHttpProtocol`` answers a ``GET``/``HEAD`` of ``/v1/projects/{writeKey}/settings``
itself, with the same code as the ASGI path (``edge.answer.choose`` / ``settings_answer``) and
header lines serialized once per bundle, in one ``transport.write``:

* a bundle the edge holds (``BundleCache.fresh``: fresh, due for a re-check that then runs in
  the background, or stale while Redis fails) is answered before the parser callback
  returns: no task, no coroutine;
* anything else (a miss, a copy past its re-check grace, an unknown key) awaits Redis in one
  task, behind a stand-in cycle (``_Pending``) so that uvicorn queues requests pipelined
  behind it.

Everything else goes to the ASGI app exactly as uvicorn would send it: other routes and
methods, query strings and %-escapes, requests with a body, ``Expect`` or ``Upgrade``, a
request pipelined behind one still in the app, a paused transport, an access log, and every
request when ``EDGE_FAST_PATH=false``. The answers keep uvicorn's connection semantics: its
``Date`` (and ``Server``) headers, ``Connection: close`` for HTTP/1.0 and ``close`` requests,
pipelining order, graceful shutdown, the request counter behind ``--limit-max-requests``
(``on_response_complete``); tests/edge/test_protocol_stock.py checks that stock uvicorn puts
the same bytes on the wire.

What a connection may cost is bounded for every request, inline or ASGI (edge/settings.py):

* ``EDGE_MAX_HEADER_LINE``: a longer request line gets 414, a longer header line 431;
  ``EDGE_MAX_HEADER_SIZE``: a longer head gets 431; the connection is then closed. The head
  is measured while it arrives, so a client cannot make the parser hold more than about one
  read (≤ 256 KiB) beyond the limit.
* ``EDGE_HEADER_TIMEOUT``: a head that has not fully arrived in time gets 408, and the
  connection is closed (a new connection that sent nothing is closed without an answer).
* ``EDGE_MAX_CONNECTIONS``: a connection accepted above it is closed at once. (uvicorn's
  ``--limit-concurrency`` is not used: it answers 503 only to requests that go to the app,
  never to those answered here, and counts request tasks as well as connections.)
* ``EDGE_KEEP_ALIVE_TIMEOUT`` (uvicorn's ``timeout_keep_alive``): closes a connection idle that
  long after its last answer; one with a request in progress (answer pending, awaiting Redis,
  in the app, pipelined and queued, or an answer not yet written) is never idle.

Two more of uvicorn's per-request costs are taken off every request, the app's included: the
ASGI scope is built only for requests that go to the app, and the keep-alive and header
timers are armed once per idle spell or per slow head, never per request (a timer handle per
request would be a sizeable share of a held bundle's cost; tests/edge/test_keep_alive.py).

The protocol reads the edge's ``Runtime`` from the lifespan state, so under any other app
(the bench's ASGI limit) it answers nothing itself and applies the default limits. Every
uvicorn internal it relies on is listed and explained in edge/uvicorn_compat.py.

    uvicorn --http edge.server:EdgeHttpProtocol ...   (settings-cdn-edge passes it)
"""

from __future__ import annotations

import asyncio
import logging

import httptools

from edge import http
from edge.answer import Runtime, choose, scan, settings_answer
from edge.settings import EdgeSettings
from edge.uvicorn_compat import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("edge.server")

_PREFIX = b"/v1/projects/"
_SUFFIX = b"/settings"
_KEY_START, _KEY_END = len(_PREFIX), -len(_SUFFIX)
_CLOSE = b"connection: close\r\n"
_ERROR = (500, b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n",
          b"Internal Server Error")
_DEFAULTS = EdgeSettings()  # the limits under an app that is not the edge's

# A refused connection (414, 431, 408) is not closed at once: closing a socket with request
# bytes still unread makes the kernel send a reset, which can destroy the answer before the
# client reads it. The edge shuts its side down after the answer and reads and drops what
# still comes, until the client closes or this many seconds pass (nginx's lingering close).
LINGER = 2.0

# _head: where the parser is relative to a request head.
_NO_HEAD = -2  # between requests, or reading a body
_NEW_HEAD = -1  # inside a head that began in the current read
# (>= 0: inside a head that began in an earlier read: the bytes of it received before)
_SEEN_BUSY = -1.0  # _idle_since: the keep-alive timer last found an answer not yet written
_REQUEST_LINE = len("GET  HTTP/1.1\r\n")  # a request line's bytes besides its target


class Refusal(Exception):
    """A request the edge refuses before it is answered: ``status`` and a text naming why."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text


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

    uvicorn reads these attributes (edge/uvicorn_compat.py ``CYCLE``): a request pipelined
    behind an incomplete cycle is queued (and started by ``on_response_complete``), a lost
    connection marks it ``disconnected``, ``shutdown`` clears ``keep_alive``.
    """

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = _Event()


_last_warning: dict[str, float] = {}


def _warn(kind: str, now: float, message: str, *args: object) -> None:
    """Log a warning of this kind at most once every 10 s (a flood must not flood the log)."""
    if now - _last_warning.get(kind, -1e9) >= 10.0:
        _last_warning[kind] = now
        log.warning(message, *args)


class EdgeHttpProtocol(HttpToolsProtocol):
    _answered = False  # the current request was answered (or is being answered) here
    # Loop time the last answer completed (the connection is idle since); None while a
    # request is in progress: from its first byte (on_message_begin) to its answer.
    _idle_since: float | None = None
    _head = _NO_HEAD
    _check_head = False  # this read is longer than a header line may be: measure the head
    # Loop time the connection began waiting for the current head; None: not waiting.
    _head_since: float | None = None
    _header_timer: asyncio.TimerHandle | None = None
    _refusal: Refusal | None = None  # to answer once the answers before it are written
    _discard = False  # refused: read and drop whatever still comes
    _limits: EdgeSettings = _DEFAULTS
    # A read longer than this has its heads measured: a header line's limit, or -1 (every
    # read) while a head is awaited (_head_since).
    _check_above = _DEFAULTS.max_header_line

    # -- connections: the cap, the first request's header timer -------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        rt: Runtime | None = self.app_state.get("edge")
        limits = self._limits = rt.settings if rt is not None else _DEFAULTS
        if len(self.connections) > limits.max_connections:
            _warn("connections", self.loop.time(), "EDGE_MAX_CONNECTIONS=%d reached: "
                  "closing new connections", limits.max_connections)
            self._discard = True
            self.transport.close()
            return
        self._waiting_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    # -- reading: uvicorn's data_received, with the head measured as it arrives -------------

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return
        self._check_head = len(data) > self._check_above
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, Refusal):
                self._refuse(exc.__context__)
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:  # as uvicorn
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head != _NO_HEAD:
            self._head_continues(data)

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."  # uvicorn's words and answer
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _head_continues(self, data: bytes) -> None:
        """The read ended inside a request head: measure it, start its header timer."""
        if self._head == _NEW_HEAD:
            # It began in this read, after its last blank line (a head holds none): the end
            # of the head before it, or, after a request body, possibly a point in that body
            # (an over-estimate by at most the body's bytes in this read).
            end_crlf, end_lf = data.rfind(b"\n\r\n"), data.rfind(b"\n\n")
            start = max(end_crlf + 3 if end_crlf >= 0 else 0, end_lf + 2 if end_lf >= 0 else 0)
            size = len(data) - start
            if self._head_since is None:
                self._waiting_for_head()
        else:
            size = self._head + len(data)
        self._head = size
        limits = self._limits
        if len(self.url) + _REQUEST_LINE > limits.max_header_line:
            self._refuse(self._too_long_line())
        elif size > limits.max_header_size:
            self._refuse(self._too_large_head())

    def _too_long_line(self) -> Refusal:
        return Refusal(414, f"URI Too Long: the request line is longer than "
                            f"{self._limits.max_header_line} bytes (EDGE_MAX_HEADER_LINE)")

    def _too_large_head(self) -> Refusal:
        return Refusal(431, f"Request Header Fields Too Large: the request head is longer "
                            f"than {self._limits.max_header_size} bytes (EDGE_MAX_HEADER_SIZE)")

    def _head_arrived(self) -> None:
        """A head is complete: raise a ``Refusal`` when it exceeds a limit; it is no longer
        awaited."""
        limits = self._limits
        line_limit = limits.max_header_line
        size = len(self.url) + _REQUEST_LINE
        if size > line_limit:
            raise self._too_long_line()
        for name, value in self.headers:
            line = len(name) + len(value) + 4  # "name: value\r\n"
            if line > line_limit:
                raise Refusal(431, f"Request Header Fields Too Large: a header line is longer "
                                   f"than {line_limit} bytes (EDGE_MAX_HEADER_LINE)")
            size += line
        if size > limits.max_header_size:
            raise self._too_large_head()
        self._head_since = None
        self._check_above = line_limit

    # -- the header timer: armed when a head is awaited, not once per request -----------

    def _waiting_for_head(self) -> None:
        self._head_since = self.loop.time()
        self._check_above = -1
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._limits.header_timeout,
                                                      self._header_due)

    def _header_due(self) -> None:
        self._header_timer = None
        since = self._head_since
        if since is None or self._discard or self.transport.is_closing():
            return
        timeout = self._limits.header_timeout
        now = self.loop.time()
        if self._responding() or self.flow.read_paused:
            # The head waits behind the edge's own answers, not on the client: count afresh.
            self._head_since = now
            self._header_timer = self.loop.call_later(timeout, self._header_due)
            return
        left = since + timeout - now
        if left > 0:
            self._header_timer = self.loop.call_later(left, self._header_due)
        elif self._head != _NO_HEAD:
            self._refuse(Refusal(408, f"Request Timeout: the request head did not arrive "
                                      f"within {timeout:g} s (EDGE_HEADER_TIMEOUT)"))
        else:  # a new connection that never sent a byte
            self.transport.close()

    # -- refusals: answer, then a lingering close -----------------------------------------

    def _responding(self) -> bool:
        cycle = self.cycle
        return (cycle is not None and not cycle.response_complete) or bool(self.pipeline)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` after the answers still owed, then close the connection."""
        self._discard = True
        _warn(str(refusal.status), self.loop.time(), "refused a request: %s", refusal.text)
        if self._responding():
            self._refusal = refusal  # on_response_complete answers it in its turn
            self.flow.pause_reading()
            return
        self._send_refusal(refusal)

    def _send_refusal(self, refusal: Refusal) -> None:
        body = refusal.text.encode()
        transport = self.transport
        transport.write(b"".join((
            STATUS_LINE[refusal.status], DefaultHeaders.lines(self.server_state.default_headers),
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body),
            _CLOSE, b"\r\n", body,
        )))
        if transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    # -- requests --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn builds the request's ASGI scope here; a request answered in
        # on_headers_complete never needs one, so it is built there (_build_scope), for the
        # requests that go to the app.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._idle_since = None  # a request is in progress until its answer completes
        self._head = _NEW_HEAD

    def _build_scope(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # the scope, exactly as uvicorn builds it
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        if self._check_head or self._head >= 0:  # (else: a short head, not awaited)
            self._head_arrived()
        self._head = _NO_HEAD
        rt: Runtime | None = self.app_state.get("edge")
        if rt is not None and rt.settings.fast_path and self._answer(rt):
            self._answered = True
            return
        self._build_scope()
        super().on_headers_complete()

    # -- the keep-alive timer: armed once per idle spell, not once per answer ----------------
    # uvicorn cancels its timer on every read and arms a new one on every answer (a timer
    # handle each time: about a tenth of a held bundle's cost). Here a request's first byte
    # marks the connection busy (on_message_begin), its answer idle; the one timer, when it
    # fires, closes the connection if it has been idle for the timeout since the last answer,
    # or waits out the rest.

    def on_response_complete(self) -> None:
        # uvicorn's, but for the timer and a refusal waiting for its turn
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # start the next pipelined request
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        if self._refusal is not None:
            self._send_refusal(self._refusal)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if idle_since is None or self.transport.is_closing():
            return  # a request is in progress: its answer arms the timer again
        now = self.loop.time()
        if self._responding() or self.transport.get_write_buffer_size():
            # An answer not yet written (the client does not read): not idle. Look again a
            # timeout later; idle from the first look that finds it so.
            self._idle_since = _SEEN_BUSY
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self._keep_alive_due)
            return
        if idle_since == _SEEN_BUSY:
            idle_since = self._idle_since = now
        left = idle_since + self.timeout_keep_alive - now
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_body(self, body: bytes) -> None:
        if not self._answered:  # (requests with a body never are)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    # -- the settings route ----------------------------------------------------------------

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
        except Exception:  # as uvicorn does for an app: log, 500 (no body for HEAD), close
            log.exception("answering %s", write_key)
            (status, lines, body), pending.keep_alive = _ERROR, False
            if head:
                body = b""
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
