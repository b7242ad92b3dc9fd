"""Every uvicorn internal the edge touches, in one place: what each is and why the edge needs it.

uvicorn's public interface is ``uvicorn.run`` / its command line and the ASGI app it calls.
edge/server.py goes below that: ``EdgeHttpProtocol`` subclasses uvicorn's httptools protocol
to answer settings requests without an ASGI task and to bound what a connection may cost.
Nothing below is a documented API, and it may change in any uvicorn release. So:

* edge/server.py imports uvicorn only through this module, and every attribute or method of
  uvicorn's protocol, flow control, server state or request cycle it reads, writes, calls or
  overrides is a key of ``PROTOCOL``, ``FLOW``, ``SERVER_STATE`` or ``CYCLE`` below
  (tests/edge/test_protocol_compat.py checks both, and that the installed uvicorn still has
  each name);
* pyproject.toml pins uvicorn exactly; ``scripts/check-uvicorn [VERSION]`` runs the protocol's
  tests, including byte-for-byte equivalence with stock uvicorn, against another release.
"""

from __future__ import annotations

import inspect
import re

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

__all__ = [
    "CYCLE",
    "FLOW",
    "PROTOCOL",
    "SERVER_STATE",
    "STATUS_LINE",
    "HttpToolsProtocol",
    "RequestResponseCycle",
    "ServerState",
    "missing",
]

# Module-level names imported above:
#   HttpToolsProtocol     uvicorn's asyncio.Protocol for HTTP/1.1 over httptools (``--http
#                         httptools``): the class EdgeHttpProtocol extends.
#   STATUS_LINE           {status: b"HTTP/1.1 200 OK\r\n"}: the status lines uvicorn writes, so
#                         the edge's own answers start with the same bytes.
#   RequestResponseCycle  uvicorn's per-request ASGI state; the edge's stand-in for one
#                         (``_Pending``) offers the attributes in ``CYCLE``.
#   ServerState           the per-worker state every protocol shares (``SERVER_STATE``); the
#                         keep-alive unit tests build one.

PROTOCOL: dict[str, str] = {
    # -- set in __init__ / connection_made ------------------------------------------------
    "parser": "the connection's httptools.HttpRequestParser: get_method, get_http_version, "
              "should_keep_alive of the request being parsed, feed_data in data_received",
    "loop": "the event loop: time() and call_later() for the keep-alive and header timers, "
            "create_task() for an answer that awaits Redis",
    "transport": "the connection's asyncio transport: write, close, write_eof, is_closing, "
                 "get_write_buffer_size",
    "flow": "the connection's FlowControl (FLOW): uvicorn's read and write backpressure",
    "app_state": "the lifespan state: the edge's Runtime under 'edge' (settings, cache)",
    "server_state": "the worker's ServerState (SERVER_STATE)",
    "connections": "the worker's set of open protocols (server_state.connections): "
                   "EDGE_MAX_CONNECTIONS counts it",
    "tasks": "the worker's set of request tasks: an answer awaiting Redis is added, so graceful "
             "shutdown waits for it",
    "access_log": "True when uvicorn's access logger has handlers: requests then go to the app, "
                  "which logs them",
    "logger": "uvicorn's 'uvicorn.error' logger: the 'Invalid HTTP request received.' warning",
    "timeout_keep_alive": "the keep-alive timeout in seconds (uvicorn.run timeout_keep_alive)",
    "timeout_keep_alive_task": "the connection's keep-alive TimerHandle (None: not armed); "
                               "uvicorn's connection_lost and on_response_complete cancel it",
    "timeout_keep_alive_handler": "closes the transport: what the keep-alive timer calls",
    "pipeline": "deque of (cycle, app) of requests pipelined behind an incomplete cycle; "
                "on_response_complete starts the next",
    "cycle": "the current request's RequestResponseCycle (or the edge's _Pending): an "
             "incomplete one makes uvicorn queue the next request in pipeline",
    # -- per-request parser state (uvicorn's parser callbacks fill them) -----------------
    "url": "the request target's raw bytes (uvicorn's on_url appends each chunk)",
    "headers": "[(lower-cased name, value)] of the request (uvicorn's on_header appends)",
    "expect_100_continue": "set by on_header for 'Expect: 100-continue'",
    "scope": "the ASGI scope uvicorn's on_message_begin builds; the edge builds it only for "
             "requests that go to the app",
    # -- methods the edge overrides or calls ---------------------------------------------
    "connection_made": "extended: the connection cap and the first request's header timer",
    "connection_lost": "extended: cancels the edge's timers",
    "data_received": "replaced: uvicorn's parse-and-dispatch plus size limits, the header "
                     "timer and refusals (414/431) in place of its 400 for them",
    "on_message_begin": "replaced; uvicorn's is called from _build_scope for app requests",
    "on_headers_complete": "extended: answers settings GET/HEAD inline, else uvicorn's",
    "on_body": "extended: ignored for a request answered inline",
    "on_message_complete": "extended: ignored for a request answered inline",
    "on_response_complete": "replaced: uvicorn's bookkeeping with the edge's keep-alive timer",
    "send_400_response": "called for a request httptools cannot parse, as uvicorn does",
    "_start_asgi_task": "starts a queued pipelined request (from on_response_complete)",
    "_should_upgrade": "whether an Upgrade request is a websocket upgrade uvicorn serves",
    "handle_websocket_upgrade": "hands the connection to uvicorn's websocket protocol",
    "_unsupported_upgrade_warning": "uvicorn's warning for an upgrade it does not serve",
}

FLOW: dict[str, str] = {
    "write_paused": "the transport's buffer is above its high-water mark: inline answers "
                    "stop and requests go to uvicorn, which waits for it to drain",
    "read_paused": "reading is paused (requests queued in pipeline): a head that waits behind "
                   "them is not late",
    "pause_reading": "stop reading: a refused request's answer waits for the answers before it",
    "resume_reading": "read again after an answer, or to drop what a refused client still sends",
}

SERVER_STATE: dict[str, str] = {
    "total_requests": "requests answered by this worker; uvicorn's --limit-max-requests reads it",
    "default_headers": "[(name, value)] uvicorn adds to every answer (Date, optional Server); "
                       "uvicorn replaces the list once a second",
    "connections": "the open protocols of this worker (see PROTOCOL['connections'])",
    "tasks": "the request tasks of this worker (see PROTOCOL['tasks'])",
}

CYCLE: dict[str, str] = {
    "keep_alive": "False once the answer must close the connection (shutdown clears it)",
    "response_complete": "True once the answer is written; uvicorn then starts the next request",
    "disconnected": "set by connection_lost while the answer is pending: write nothing",
    "message_event": "an object with set(): connection_lost wakes the request's reader",
}


def _defined(cls: type, name: str) -> bool:
    """Whether uvicorn's ``cls`` defines ``name``: a method or class attribute, or an instance
    attribute assigned (``self.name = ...``) somewhere in its source."""
    if any(name in vars(klass) for klass in cls.__mro__):
        return True
    source = inspect.getsource(cls)
    return re.search(rf"\bself\.{re.escape(name)}\b\s*(?::[^=\n]+)?=(?!=)", source) is not None


def missing() -> list[str]:
    """The names above that the installed uvicorn lacks (empty: all there)."""
    absent = [f"HttpToolsProtocol.{n}" for n in PROTOCOL if not _defined(HttpToolsProtocol, n)]
    absent += [f"FlowControl.{n}" for n in FLOW if not _defined(FlowControl, n)]
    absent += [f"ServerState.{n}" for n in SERVER_STATE if not _defined(ServerState, n)]
    absent += [f"RequestResponseCycle.{n}" for n in CYCLE
               if not _defined(RequestResponseCycle, n)]
    if not all(code in STATUS_LINE for code in (200, 304, 404, 408, 414, 431, 500, 503)):
        absent.append("STATUS_LINE (status lines)")
    return absent
