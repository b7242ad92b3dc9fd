"""The protocol's keep-alive timer on a clock the test moves: one timer per idle spell.

uvicorn's idle timeout (5 s after the last answer, the connection is closed) is kept; what
changes is that a read no longer cancels the timer and an answer no longer arms a new one,
and that a connection with a request in progress is never idle.
``tests/edge/test_server.py`` and ``tests/edge/test_protocol_keep_alive.py`` check the same on
real sockets, in real time.
"""

from __future__ import annotations

from typing import Any

from uvicorn.config import Config

from edge.server import EdgeHttpProtocol, _Pending
from edge.uvicorn_compat import ServerState

TIMEOUT = 5.0


class Handle:
    def __init__(self, when: float, callback: Any) -> None:
        self.when, self.callback, self.cancelled = when, callback, False
        self.name = callback.__name__

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time`` and ``call_later`` on a clock that only ``advance`` moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Handle:
        handle = Handle(self.now + delay, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[Handle]:
        """Keep-alive timers armed and not yet fired (the header timer aside)."""
        return [h for h in self.handles if not h.cancelled and h.callback is not None
                and h.name == "_keep_alive_due"]

    def keep_alive_timers(self) -> list[Handle]:
        return [h for h in self.handles if h.name == "_keep_alive_due"]

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer due on the way (those armed meanwhile too)."""
        end = self.now + seconds
        while True:
            due = [h for h in self.handles
                   if not h.cancelled and h.callback is not None and h.when <= end]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.now = max(self.now, handle.when)
            callback, handle.callback = handle.callback, None
            callback()
        self.now = end


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False
        self.buffered = 0  # bytes written that the client has not read yet

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write(self, data: bytes) -> None: ...


def connection() -> tuple[EdgeHttpProtocol, FakeLoop, FakeTransport]:
    config = Config(app=lambda *a: None, timeout_keep_alive=int(TIMEOUT), log_level="warning")
    config.load()
    loop = FakeLoop()
    protocol = EdgeHttpProtocol(config=config, server_state=ServerState(), app_state={},
                                _loop=loop)  # type: ignore[arg-type]
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol._head_since = None  # its first request arrived (the header timer ends)
    return protocol, loop, transport


def begins(protocol: EdgeHttpProtocol) -> None:
    """A request's first byte is parsed."""
    protocol.on_message_begin()


def answered(protocol: EdgeHttpProtocol) -> None:
    """A request read, then answered (what both answer paths end with)."""
    begins(protocol)
    protocol.on_response_complete()


def test_answers_share_one_timer_and_the_idle_connection_closes_after_the_timeout() -> None:
    protocol, loop, transport = connection()

    answered(protocol)
    loop.advance(1.0)
    answered(protocol)
    loop.advance(1.0)
    answered(protocol)  # at 102: the last answer

    assert len(loop.keep_alive_timers()) == 1  # one timer for three answers
    loop.advance(2.9)  # 104.9: the timer, armed at 100 for 105, has not fired
    assert not transport.closed
    loop.advance(0.2)  # 105.1: it fired, 3.1 s idle: waits out the rest
    assert not transport.closed and loop.pending()[0].when == 107.0
    loop.advance(1.8)  # 106.9
    assert not transport.closed
    loop.advance(0.2)  # 107.1: idle for 5 s since the last answer
    assert transport.closed and not loop.pending()


def test_a_request_in_progress_when_the_timer_fires_is_not_cut_off() -> None:
    protocol, loop, transport = connection()
    answered(protocol)  # at 100: the timer is armed for 105

    loop.advance(4.0)
    begins(protocol)  # 104: a request arrives and takes its time
    loop.advance(3.0)  # 107: the timer fired while it was in progress
    assert not transport.closed and not loop.pending()

    protocol.on_response_complete()  # 107: answered: the timer is armed again
    assert [h.when for h in loop.pending()] == [112.0]
    loop.advance(4.9)
    assert not transport.closed
    loop.advance(0.2)
    assert transport.closed


def test_a_request_begun_after_an_answer_in_the_same_read_keeps_the_connection() -> None:
    """An answer, then (same read) a request that waits: the answer armed the timer, the
    waiting request holds the connection open past it."""
    protocol, loop, transport = connection()
    answered(protocol)  # at 100, inline
    begins(protocol)  # the next request of the same read: awaits Redis or the app
    protocol.cycle = _Pending(keep_alive=True)  # type: ignore[assignment]

    loop.advance(30.0)

    assert not transport.closed


def test_an_answer_not_yet_read_by_the_client_keeps_the_connection() -> None:
    protocol, loop, transport = connection()
    answered(protocol)  # at 100
    transport.buffered = 1 << 20  # the client reads nothing

    loop.advance(12.0)  # the timer found it busy at 105 and 110
    assert not transport.closed
    transport.buffered = 0  # it read everything at 112
    loop.advance(7.9)  # 119.9: idle since the timer's look at 115
    assert not transport.closed
    loop.advance(0.2)
    assert transport.closed


def test_a_lost_connection_cancels_its_timer() -> None:
    protocol, loop, transport = connection()
    answered(protocol)
    assert loop.pending()

    protocol.connection_lost(None)

    assert transport.closed and not loop.pending()


def test_answers_of_a_closing_connection_arm_nothing() -> None:
    protocol, loop, transport = connection()
    transport.close()

    answered(protocol)

    assert not loop.keep_alive_timers()
