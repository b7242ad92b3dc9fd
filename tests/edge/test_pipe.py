"""The store's pipelined connection (edge/pipe.py) against real redis-servers: what the URL
says (password, database, Unix socket, TLS), replies in order, time-outs and reconnection."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge import keyspace
from edge.pipe import RedisPipe, pack
from edge.store import Store, StoreUnavailable
from tests.edge.helpers import publish
from tests.services import RedisServer, free_port

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-pass"


@pytest.fixture(params=["uvloop", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every pipe test under uvloop, the loop settings-cdn-edge runs, and asyncio's own: the
    two report a closed transport differently."""
    if request.param == "uvloop":
        return "asyncio", {"loop_factory": uvloop.new_event_loop}
    return "asyncio", {}


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with a password and a Unix socket."""
    server = RedisServer(args=["--requirepass", PASSWORD,
                               "--unixsocket", str(tmp_path / "redis.sock")])
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def pipe(redis_url: str) -> AsyncIterator[RedisPipe]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    made = RedisPipe.for_client(client)
    assert made is not None
    yield made
    await made.aclose()
    await client.aclose()


async def _read(url: str, write_key: str) -> object:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    store = Store(client)
    try:
        assert store.pipe is not None
        return await store.current(write_key)
    finally:
        await store.aclose()
        await client.aclose()


async def test_password_and_database_come_from_the_url(guarded: RedisServer) -> None:
    """AUTH and SELECT are sent first on every connection; a wrong password is refused."""
    writer = redis.Redis(port=guarded.port, password=PASSWORD, db=3)
    env = publish(writer, "in-db-3", version=5)
    writer.close()
    for db in (0, 3):  # both databases loaded by a publisher: an absent pointer is a 404
        marker = redis.Redis(port=guarded.port, password=PASSWORD, db=db)
        marker.set(keyspace.LOADED_KEY, "1")
        marker.close()
    base = f"redis://:{PASSWORD}@127.0.0.1:{guarded.port}"

    found = await _read(f"{base}/3", "in-db-3")
    elsewhere = await _read(f"{base}/0", "in-db-3")
    with pytest.raises(StoreUnavailable, match="refused the connection"):
        await _read(f"redis://:wrong@127.0.0.1:{guarded.port}/3", "in-db-3")

    assert found is not None
    pointer, version = found  # type: ignore[misc]
    assert pointer == (5, env.etag) and version.gzip == env.gzip
    assert elsewhere is None


async def test_unix_socket_url(guarded: RedisServer, tmp_path: Path) -> None:
    writer = redis.Redis(port=guarded.port, password=PASSWORD)
    env = publish(writer, "over-unix")
    writer.close()

    found = await _read(f"unix://:{PASSWORD}@{tmp_path / 'redis.sock'}?db=0", "over-unix")

    assert found is not None and found[0] == (1, env.etag)  # type: ignore[index]


def test_a_tls_url_reads_through_redis_py() -> None:
    """The pipe speaks plain TCP and Unix sockets; for rediss:// the store keeps redis-py."""
    client = aioredis.Redis.from_url("rediss://127.0.0.1:6390/0")

    assert RedisPipe.for_client(client) is None
    assert Store(client).pipe is None


async def test_replies_reach_their_callers_in_order(
    pipe: RedisPipe, redis_client: redis.Redis
) -> None:
    """Commands in flight together get their own replies, also when one caller gave up."""
    redis_client.mset({"pipe-a": b"A", "pipe-b": b"B", "pipe-c": b"C"})

    calls = [asyncio.ensure_future(pipe.execute(b"GET", key))
             for key in (b"pipe-a", b"pipe-b", b"pipe-c")]
    await asyncio.sleep(0)  # all three are written before any reply is read
    await asyncio.sleep(0)
    calls[1].cancel()
    got = await asyncio.gather(*calls, return_exceptions=True)
    after = await pipe.execute(b"GET", b"pipe-b")

    assert got[0] == b"A" and got[2] == b"C"
    assert isinstance(got[1], asyncio.CancelledError)
    assert after == b"B"


async def test_an_error_reply_fails_its_command_alone(pipe: RedisPipe) -> None:
    with pytest.raises(ResponseError, match="unknown command"):
        await pipe.execute(b"NO-SUCH-COMMAND")
    assert await pipe.execute(b"PING") == b"PONG"


async def test_a_flushed_script_is_sent_whole_once(
    pipe: RedisPipe, redis_client: redis.Redis
) -> None:
    """After a Redis restart (or SCRIPT FLUSH) EVALSHA fails with NOSCRIPT: EVAL follows."""
    text = b"return ARGV[1]"
    sha = redis_client.script_load(text)
    redis_client.script_flush()

    first = await pipe.script(sha.encode(), text, [], [b"one"])
    second = await pipe.script(sha.encode(), text, [], [b"two"])

    assert (first, second) == (b"one", b"two")
    assert redis_client.script_exists(sha) == [True]


async def test_a_timeout_fails_what_waits_and_the_next_command_reconnects() -> None:
    """A frozen Redis: the commands waiting fail after the timeout (not retried); once Redis
    runs again, the next command gets a new connection."""
    server = RedisServer()
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.3)
    made = RedisPipe.for_client(client)
    assert made is not None and server.proc is not None
    try:
        assert await made.execute(b"PING") == b"PONG"
        first = made.connection
        server.proc.send_signal(signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            outcome = await asyncio.gather(made.execute(b"PING"), made.execute(b"PING"),
                                           return_exceptions=True)
            waited = loop.time() - started
        finally:
            server.proc.send_signal(signal.SIGCONT)
        again = await made.execute(b"PING")
    finally:
        await made.aclose()
        await client.aclose()
        server.stop()

    assert all(isinstance(o, RedisTimeoutError) for o in outcome), outcome
    assert 0.3 <= waited < 2.0
    assert again == b"PONG" and made.connection is not first


async def test_refused_is_a_connection_error() -> None:
    made = RedisPipe(port=free_port(), connect_timeout=1)  # nothing listens there
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await made.execute(b"PING")
    await made.aclose()


def test_pack_is_resp() -> None:
    assert pack(b"GET", b"k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert pack(b"SET", b"", b"a\r\nb") == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"


async def test_a_connection_redis_refuses_and_closes_is_a_connection_error() -> None:
    """Redis at ``maxclients`` answers a new connection with an error and closes it: every
    command on it fails with a ConnectionError naming Redis's reason — never the event loop's
    RuntimeError for a write to a closed transport."""
    with RedisServer(args=["--maxclients", "1"]) as server:
        blocker = redis.Redis(port=server.port)
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # (the start-up probe's connection may hold the slot for a moment)
            try:
                blocker.ping()
                break
            except redis.ConnectionError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        pipe = RedisPipe(port=server.port, timeout=2, connect_timeout=2)
        try:
            for _ in range(5):
                with pytest.raises(RedisConnectionError):
                    await pipe.execute(b"PING")
                await asyncio.sleep(0.01)  # (the close reaches the transport meanwhile)
        finally:
            await pipe.aclose()
            blocker.close()
