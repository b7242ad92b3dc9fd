"""The edge's Redis reads on one pipelined connection: hiredis and an asyncio protocol.

redis-py's asyncio client costs the edge more per call than Redis costs per key: a pool
checkout, a retry wrapper, argument encoding, a ``StreamReader`` that copies every reply before
hiredis parses it — a large share of a cold miss. ``RedisPipe`` writes each command as it comes
on one connection and hands each reply, parsed by hiredis straight from ``data_received``, to
the caller that waits first: Redis answers a connection's commands in order.

Same failure behaviour as the client the edge builds in ``edge.store.make_client``:

* a reply that does not come within ``timeout`` fails every command waiting on the
  connection with ``redis.exceptions.TimeoutError`` and drops the connection (nothing says
  which reply would come next), and is not retried;
* a refused or lost connection fails with ``redis.exceptions.ConnectionError`` and is retried
  once, at once, on a new connection — the edge only reads, so a command sent again is
  harmless; so does a connection Redis answers with an error and closes (``maxclients``,
  protected mode), however the event loop reports the closed socket;
* an error reply raises ``redis.exceptions.ResponseError``.

TCP and Unix sockets only: ``RedisPipe.for_client`` returns ``None`` for a TLS URL
(``rediss://``), and the store then reads through redis-py as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def pack(*args: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


def settle(future: asyncio.Future[Any], outcome: object) -> None:
    """Give a waiter its outcome: raised when it is an exception, else returned; nothing when
    the waiter is gone (cancelled)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


# Error replies with which Redis refuses a connection before closing it.
_REFUSALS = ("ERR max number of clients reached", "DENIED ")


def _refused(reply: object) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith(_REFUSALS)


class _Connection(asyncio.Protocol):
    """One socket: commands out as they come, replies matched to waiters in order."""

    def __init__(self, pipe: RedisPipe) -> None:
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (waiter, deadline)
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's: no subclass of it)

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise RedisConnectionError("connection to redis closed")
        try:
            transport.write(packed)
        except RuntimeError as exc:  # uvloop: a transport closed under us (Redis hung up)
            error = RedisConnectionError(f"connection to redis closed: {exc}")
            self.fail(error)
            raise error from exc
        future: asyncio.Future[Any] = self.loop.create_future()
        timeout = self.pipe.timeout
        deadline = self.loop.time() + timeout if timeout is not None else 0.0
        self.waiting.append((future, deadline))
        if timeout is not None and self.timer is None:
            self.timer = self.loop.call_at(deadline, self._due)
        return future

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        try:
            while (reply := reader.gets()) is not False:
                if not waiting or _refused(reply):
                    # Redis refusing the connection (maxclients, protected mode) answers with
                    # an error and closes it, whether or not a command was waiting
                    self.fail(RedisConnectionError(f"redis closed the connection: {reply}"
                                                   if isinstance(reply, ResponseError) else
                                                   "redis sent a reply nobody asked for"))
                    return
                settle(waiting.popleft()[0], reply)  # (an error reply: a ResponseError)
        except InvalidResponse as exc:
            self.fail(RedisConnectionError(f"unreadable reply from redis: {exc}"))

    def _due(self) -> None:
        """The oldest command's deadline: fail the connection if its reply has not come."""
        self.timer = None
        if not self.waiting:
            return
        _, deadline = self.waiting[0]
        if self.loop.time() >= deadline:
            self.fail(RedisTimeoutError(f"no reply from redis within {self.pipe.timeout:g} s"))
        else:
            self.timer = self.loop.call_at(deadline, self._due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to redis lost: {exc or 'closed by server'}"))

    def fail(self, exc: Exception) -> None:
        """Fail every waiting command and drop the connection (idempotent)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting, self.waiting = self.waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
        if self.pipe.connection is self:
            self.pipe.connection = None
        if self.transport is not None:
            self.transport.abort()


class RedisPipe:
    """Commands on one connection, opened on first use and again after any failure."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 timeout: float | None = None, connect_timeout: float | None = None) -> None:
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connection: _Connection | None = None
        self._opening: asyncio.Future[_Connection] | None = None

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> RedisPipe | None:
        """A pipe to the server ``client`` is configured for; ``None`` for TLS (or any other
        connection class than plain TCP and Unix sockets)."""
        pool = client.connection_pool
        kw = pool.connection_kwargs
        common: dict[str, Any] = {
            "db": int(kw.get("db") or 0), "username": kw.get("username"),
            "password": kw.get("password"), "timeout": kw.get("socket_timeout"),
            "connect_timeout": kw.get("socket_connect_timeout"),
        }
        if pool.connection_class is Connection:
            return cls(host=kw.get("host") or "localhost", port=int(kw.get("port") or 6379),
                       **common)
        if pool.connection_class is UnixDomainSocketConnection:
            return cls(path=kw["path"], **common)
        return None

    async def execute(self, *args: bytes) -> Any:
        """Send one command and return its reply (hiredis types: bytes, int, list, None)."""
        packed = pack(*args)
        for attempt in (1, 2):
            connection = self.connection
            try:
                if connection is None or not connection.usable:
                    connection = await self._open()
                return await connection.send(packed)
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def script(self, sha: bytes, text: bytes, keys: list[bytes], args: list[bytes]
                     ) -> Any:
        """``EVALSHA``; once after a restart (or ``SCRIPT FLUSH``) the script is sent whole."""
        tail = [b"%d" % len(keys), *keys, *args]
        try:
            return await self.execute(b"EVALSHA", sha, *tail)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute(b"EVAL", text, *tail)

    async def _open(self) -> _Connection:
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._connect())
            opening.add_done_callback(self._opened)
        # shield: one caller cancelled must not cancel the connection the others wait for
        connection = await asyncio.shield(opening)
        self.connection = connection
        return connection

    def _opened(self, opening: asyncio.Future[_Connection]) -> None:
        if self._opening is opening:
            self._opening = None
        if not opening.cancelled():
            opening.exception()  # retrieved: every waiter may have been cancelled meanwhile

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = self.path or f"{self.host}:{self.port}"
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    transport, connection = await loop.create_unix_connection(
                        lambda: _Connection(self), self.path)
                else:
                    transport, connection = await loop.create_connection(
                        lambda: _Connection(self), self.host, self.port)
                # uvloop calls connection_made a loop turn after create_connection returns
                connection.transport = transport
                hello = []
                if self.password:
                    user = [self.username.encode()] if self.username else []
                    hello.append(pack(b"AUTH", *user, self.password.encode()))
                if self.db:
                    hello.append(pack(b"SELECT", b"%d" % self.db))
                await asyncio.gather(*(connection.send(command) for command in hello))
            return connection
        except BaseException as exc:
            if connection is not None:
                connection.fail(RedisConnectionError("connection abandoned"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"connecting to redis at {where} timed out") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"cannot connect to redis at {where}: {exc}") \
                    from exc
            if isinstance(exc, ResponseError):  # a wrong password, no such database
                raise RedisConnectionError(f"redis at {where} refused the connection: {exc}") \
                    from exc
            raise

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self.connection is not None:
            self.connection.fail(RedisConnectionError("pipe closed"))
