"""An open-loop HTTP/1.1 load generator that records every request: ``python -m bench.openloop``.

``wrk`` is closed-loop: a connection waits for its answer before it sends the next request,
so while a server holds some answers back the requests those connections would have sent are
never made, and never counted (coordinated omission). A tail that hits every request for a
few hundred milliseconds once a second then hardly shows in wrk's p99. Browsers do not wait
for each other: this client sends each request at its scheduled instant (``rate`` per second,
evenly spaced), on an idle keep-alive connection or a new one, and measures its latency from
that instant — a request sent late because the client was busy is charged the delay, so the
client's own lateness can only make the numbers worse, never better.

Requests follow the hot mix of ``bench/lua/hot.lua`` (Zipf s=1.0 over the key file's paths,
ranks shuffled by a fixed seed); with ``--cold`` a share of them goes, each exactly once, to
keys of a second file (keys the server does not hold yet). One line ``T0 <instant>`` on
stdout gives the ``time.monotonic()`` instant of the first scheduled request (the system's
monotonic clock, the same in every process), once connections are open; at the end one JSON
document goes to ``--out``: per request its scheduled offset from T0, latency, status (0: the
connection failed, -1: no answer by the end; the latency of either is the time until the
failure or the end), whether its key was cold, and how late the client sent it (its own
lateness, already part of the latency).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import gc
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

MAX_CONNECTIONS = 2_000
INITIAL_CONNECTIONS = 64
DRAIN_SECONDS = 5.0  # after the last scheduled request, wait this long for answers
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
HEADERS = ("Accept-Encoding: gzip, deflate, br, zstd\r\nOrigin: https://shop.example\r\n"
           "User-Agent: settings-cdn-bench\r\n")


def read_paths(path: Path) -> list[str]:
    """The paths of a bench key file (``<path>\\t<etag>`` lines)."""
    return [line.split("\t", 1)[0] for line in path.read_text().splitlines() if line.strip()]


def zipf_order(n: int, count: int, seed: int, s: float = 1.0) -> list[int]:
    """``count`` indices in 0..n-1, rank r drawn with weight 1/r^s, ranks shuffled by seed."""
    rng = random.Random(seed)
    cdf: list[float] = []
    total = 0.0
    for r in range(1, n + 1):
        total += 1 / r**s
        cdf.append(total)
    perm = list(range(n))
    rng.shuffle(perm)
    return [perm[min(n - 1, bisect.bisect_left(cdf, rng.random() * total))]
            for _ in range(count)]


@dataclass
class Record:
    sched: list[float] = field(default_factory=list)  # seconds after T0
    latency: list[float] = field(default_factory=list)  # seconds; -1 while unanswered
    status: list[int] = field(default_factory=list)
    cold: list[bool] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # seconds the client sent it late

    def add(self, sched: float, cold: bool, late: float) -> int:
        self.sched.append(sched)
        self.late.append(late)
        self.latency.append(-1.0)
        self.status.append(-1)
        self.cold.append(cold)
        return len(self.sched) - 1


class Conn(asyncio.Protocol):
    """One keep-alive connection, at most one request in flight."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.current: int | None = None  # index of the request in flight
        self.due: float = 0.0  # its scheduled instant (monotonic)
        self.need: int | None = None  # bytes of the whole answer, once its head is parsed
        self.chunked = False
        self.code = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, index: int, due: float, request: bytes) -> None:
        assert self.transport is not None
        self.current, self.due = index, due
        self.buf.clear()
        self.need, self.chunked = None, False
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.current is None:
            return
        if self.need is None and not self.chunked:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end + 2])
            self.code = int(head[9:12])
            length = CONTENT_LENGTH.search(head)
            if length is None and CHUNKED.search(head):
                self.chunked = True
                del self.buf[:end + 4]
            else:
                body = 0 if self.code in (204, 304) or self.code < 200 or length is None \
                    else int(length.group(1))
                self.need = end + 4 + body
        if self.chunked:
            if not self.buf.endswith(b"0\r\n\r\n"):
                return
        elif self.need is None or len(self.buf) < self.need:
            return
        index = self.current
        self.current = None
        self.client.answered(self, index, self.code)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client.lost(self)


class Client:
    def __init__(self, host: str, port: int, record: Record) -> None:
        self.host, self.port = host, port
        self.record = record
        self.idle: list[Conn] = []  # LIFO: the most recently used first, not one a server
        self.busy: set[Conn] = set()  # is about to close for idling
        self.opening = 0
        self.waiting: collections.deque[tuple[int, float, bytes]] = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0

    async def open(self) -> None:
        self.opening += 1
        try:
            _, conn = await self.loop.create_connection(lambda: Conn(self), self.host,
                                                        self.port)
        except OSError:
            self.opening -= 1
            if self.waiting:  # nothing else would give it a connection
                index, _, _ = self.waiting.popleft()
                self.record.status[index] = 0
            return
        self.opening -= 1
        self.ready(conn)

    def ready(self, conn: Conn) -> None:
        if self.waiting:
            index, due, request = self.waiting.popleft()
            self.busy.add(conn)
            conn.send(index, due, request)
        else:
            self.idle.append(conn)

    def submit(self, index: int, due: float, request: bytes) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                self.busy.add(conn)
                conn.send(index, due, request)
                return
        self.waiting.append((index, due, request))
        if len(self.busy) + self.opening + len(self.idle) < MAX_CONNECTIONS and \
                self.opening < len(self.waiting):
            self.loop.create_task(self.open())

    def answered(self, conn: Conn, index: int, code: int) -> None:
        self.record.latency[index] = time.monotonic() - conn.due
        self.record.status[index] = code
        self.busy.discard(conn)
        self.ready(conn)

    def lost(self, conn: Conn) -> None:
        self.busy.discard(conn)  # (an idle one stays listed: submit skips it)
        if conn.current is not None:
            self.record.status[conn.current] = 0
            self.record.latency[conn.current] = time.monotonic() - conn.due
            conn.current = None
        if self.waiting:
            self.loop.create_task(self.open())


def request_bytes(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{HEADERS}\r\n".encode()


async def run(args: argparse.Namespace) -> Record:
    host = f"127.0.0.1:{args.port}"
    hot = [request_bytes(p, host) for p in read_paths(args.keys)]
    cold = [request_bytes(p, host) for p in read_paths(args.cold)] if args.cold else []
    count = max(1, round(args.rate * args.duration))
    order = zipf_order(len(hot), count, args.seed)
    pick = random.Random(args.seed + 1)
    record = Record()
    client = Client("127.0.0.1", args.port, record)
    await asyncio.gather(*(client.open() for _ in range(INITIAL_CONNECTIONS)))
    t0 = time.monotonic() + 0.2
    client.t0 = t0
    print(f"T0 {t0!r}", flush=True)
    step = 1 / args.rate
    next_cold = 0
    i = 0
    while i < count:
        now = time.monotonic()
        while i < count and t0 + i * step <= now:
            due = t0 + i * step
            is_cold = next_cold < len(cold) and pick.random() < args.cold_share
            request = cold[next_cold] if is_cold else hot[order[i]]
            next_cold += is_cold
            client.submit(record.add(i * step, is_cold, now - due), due, request)
            i += 1
        if i < count:
            await asyncio.sleep(max(0.0, t0 + i * step - time.monotonic()))
    end = time.monotonic() + DRAIN_SECONDS
    while (client.busy or client.waiting) and time.monotonic() < end:
        await asyncio.sleep(0.01)
    stop = time.monotonic()
    for index, code in enumerate(record.status):  # no answer: at least this slow
        if code <= 0 and record.latency[index] < 0:
            record.latency[index] = stop - t0 - record.sched[index]
    for conn in list(client.idle) + list(client.busy):
        if conn.transport is not None:
            conn.transport.close()
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keys", type=Path, required=True, help="key file of the hot mix")
    p.add_argument("--cold", type=Path, help="key file of keys requested once each")
    p.add_argument("--cold-share", type=float, default=0.0)
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--seed", type=int, default=4000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    # A bounded run whose objects are its records and connections: no collector pauses
    # to be charged to the server.
    gc.disable()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the edge depends on it
        record = asyncio.run(run(args))
    else:
        record = uvloop.run(run(args))
    args.out.write_text(json.dumps({"sched": record.sched, "latency": record.latency,
                                    "status": record.status, "cold": record.cold,
                                    "late": record.late}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
