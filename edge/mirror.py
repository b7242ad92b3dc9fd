"""Pull-through mirror of the upstream CDN's ``/next-integrations/`` tree into the local store.

A request for a ``/next-integrations/`` file the store (``EDGE_ASSETS_DIR``) lacks is fetched
from ``EDGE_ASSETS_UPSTREAM`` once, checked, written to the store atomically and served from
there from then on, the way operators who host Segment's CDN themselves proxy the public one:

* **Single flight.** Concurrent requests for one path in one worker share one upstream fetch
  (``Mirror.obtain``); a client that goes away does not cancel it.
* **Bounded.** A fetch (connect, headers and body) takes at most ``EDGE_ASSETS_UPSTREAM_TIMEOUT``
  seconds: then 504, on any other failure 502, both with ``Retry-After``. For
  ``EDGE_ASSETS_RETRY_AFTER`` seconds afterwards that path gets the same answer without asking
  the upstream again; an upstream 404 (or 410) is remembered ``EDGE_ASSETS_NEGATIVE_TTL``
  seconds and passed on with that max-age. Neither is ever stored.
* **Checked.** Stored only: status 200, no redirect followed, a body of exactly the announced
  ``Content-Length`` (or a complete chunked body) of at most ``EDGE_ASSETS_MAX_BYTES``, a
  ``Content-Type`` that fits the file (``upstream_type_fits``), no content coding but gzip on a
  ``.gz`` file, and gzip bytes in a ``.gz`` file. An answer without a length is refused: its
  truncation could not be told from its end.
* **Atomic.** The body goes to a hidden temporary file beside the target (hidden segments are
  never served), is fsynced, and ``os.replace`` puts it in place: workers and processes
  sharing one store never serve a half-written file. The store directory is created when the
  first file is stored.
* **Stored files never wait on the upstream.** A versioned file, once stored, is served
  forever (``immutable``). A ``latest`` file older than ``EDGE_ASSETS_LATEST_MAX_AGE`` (its
  mtime) is served as it is while one background fetch replaces it.
* **Contained.** Only paths whose every segment is a plain name (``assets.mirrorable``) are
  fetched, at ``<upstream>/next-integrations/<path>`` with each segment percent-encoded, so a
  fetch never leaves that tree; no client header is sent upstream.

The HTTP client is a small HTTP/1.1 GET over asyncio streams (TLS through ``ssl`` with the
system's trust store for ``https://``), one connection per fetch (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from edge.assets import FileMemory, media_type
from edge.metrics import Metrics

log = logging.getLogger("edge.mirror")

TREE = "/next-integrations/"
MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
REMEMBERED_MAX = 10_000  # paths remembered as missing or failing upstream, per worker
_GZIP_MAGIC = b"\x1f\x8b"


# -- the upstream ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base: str  # path prefix before /next-integrations/, without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """An ``http://`` or ``https://`` origin, optionally with a path; ``ValueError`` else."""
        problem = upstream_problem(url)
        if problem:
            raise ValueError(problem)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, parts.hostname or "", port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def target(self, relative: str) -> str:
        """The request target of ``relative``: always inside the upstream's tree."""
        return self.base + TREE + "/".join(quote(s, safe="") for s in relative.split("/"))

    def url(self, relative: str) -> str:
        return f"{self.scheme}://{self.host_header}{self.target(relative)}"


def upstream_problem(value: object) -> str | None:
    """Why ``value`` is not a usable EDGE_ASSETS_UPSTREAM (empty is: the mirror is off)."""
    url = str(value)
    if url == "":
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "must be an http:// or https:// URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.query or parts.fragment or "?" in url:
        return "must not carry credentials, a query or a fragment"
    return None


class UpstreamError(Exception):
    """The upstream failed or gave an answer the mirror refuses (502)."""

    status = 502


class UpstreamTimeout(UpstreamError):
    """The upstream took longer than EDGE_ASSETS_UPSTREAM_TIMEOUT (504)."""

    status = 504


class UpstreamNotFound(Exception):
    """The upstream has no such file (404 or 410)."""


# Content types that fit a file, by the type of what it holds (edge.assets.media_type).
_OCTET = frozenset({"application/octet-stream", "binary/octet-stream"})
_GZIP_TYPES = frozenset({"application/gzip", "application/x-gzip"})
_JAVASCRIPT = frozenset({"text/javascript", "application/javascript", "application/x-javascript",
                         "application/ecmascript", "text/ecmascript"})


def upstream_type_fits(relative: str, content_type: str | None) -> bool:
    """Whether the upstream's ``Content-Type`` fits the file ``relative`` (never HTML)."""
    if not content_type:
        return False
    essence = content_type.split(";", 1)[0].strip().lower()
    expected, gzipped = media_type(relative)
    if essence in _OCTET or essence == expected or (gzipped and essence in _GZIP_TYPES):
        return True
    return expected == "text/javascript" and essence in _JAVASCRIPT


def check_body(relative: str, headers: dict[str, str], body: bytes) -> None:
    """Raise ``UpstreamError`` unless a complete 200 answer may be stored as ``relative``."""
    if not upstream_type_fits(relative, headers.get("content-type")):
        raise UpstreamError(f"content type {headers.get('content-type')!r} does not fit "
                            f"{relative}")
    coding = headers.get("content-encoding", "identity").strip().lower()
    gzipped = relative.endswith(".gz")
    if coding not in ("identity", "") and not (gzipped and coding == "gzip"):
        raise UpstreamError(f"content encoding {coding!r} does not fit {relative}")
    if gzipped and not body.startswith(_GZIP_MAGIC):
        raise UpstreamError(f"{relative} is not gzip data")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\n")
    if len(line) > MAX_HEADER_LINE:
        raise UpstreamError("upstream header line too long")
    return line


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str],
                     max_bytes: int) -> bytes:
    transfer = headers.get("transfer-encoding")
    if transfer is not None:
        if transfer.strip().lower() != "chunked":
            raise UpstreamError(f"unsupported transfer encoding {transfer!r}")
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = (await _read_line(reader)).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise UpstreamError("malformed chunked body") from None
            if size == 0:
                while (await _read_line(reader)).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > max_bytes:
                raise UpstreamError(f"body over EDGE_ASSETS_MAX_BYTES={max_bytes}")
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise UpstreamError("malformed chunked body")
    length = headers.get("content-length")
    if length is None:
        raise UpstreamError("answer without Content-Length: a truncation would go unseen")
    if not length.strip().isdigit():
        raise UpstreamError(f"malformed Content-Length {length!r}")
    size = int(length)
    if size > max_bytes:
        raise UpstreamError(f"Content-Length {size} over EDGE_ASSETS_MAX_BYTES={max_bytes}")
    return await reader.readexactly(size)


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


async def _get(upstream: Upstream, relative: str, max_bytes: int) -> bytes:
    tls = _tls() if upstream.scheme == "https" else None
    reader, writer = await asyncio.open_connection(
        upstream.host, upstream.port, ssl=tls, server_hostname=upstream.host if tls else None,
        limit=MAX_HEADER_LINE * 2)
    try:
        writer.write(
            f"GET {upstream.target(relative)} HTTP/1.1\r\nHost: {upstream.host_header}\r\n"
            "User-Agent: settings-cdn-edge-mirror\r\nAccept: */*\r\n"
            "Accept-Encoding: identity\r\nConnection: close\r\n\r\n".encode("ascii"))
        status_line = (await _read_line(reader)).decode("latin-1").split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise UpstreamError("not an HTTP/1.x answer")
        try:
            status = int(status_line[1])
        except ValueError:
            raise UpstreamError("malformed status line") from None
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = (await _read_line(reader)).decode("latin-1")
            if not line.strip():
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise UpstreamError("malformed header line")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        else:
            raise UpstreamError("too many header lines")
        if status in (404, 410):
            raise UpstreamNotFound(relative)
        if status != 200:
            raise UpstreamError(f"upstream answered {status}")
        body = await _read_body(reader, headers, max_bytes)
        check_body(relative, headers, body)
        return body
    except asyncio.IncompleteReadError as exc:
        raise UpstreamError(f"upstream closed after {len(exc.partial)} bytes: truncated") from None
    except asyncio.LimitOverrunError:
        raise UpstreamError("upstream header line too long") from None
    finally:
        writer.transport.abort()  # Connection: close; nothing more to read or say


async def fetch(upstream: Upstream, relative: str, *, timeout: float, max_bytes: int) -> bytes:
    """The checked body of ``relative`` from the upstream, within ``timeout`` seconds.

    Raises ``UpstreamNotFound``, ``UpstreamTimeout`` or ``UpstreamError``.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _get(upstream, relative, max_bytes)
    except TimeoutError:
        raise UpstreamTimeout(f"no complete answer within {timeout:g} s") from None
    except (OSError, ssl.SSLError, UnicodeError) as exc:
        raise UpstreamError(f"{type(exc).__name__}: {exc}") from None


# -- the store -------------------------------------------------------------------------------


def store(root: str, relative: str, body: bytes) -> str:
    """Write ``body`` as ``root/relative`` atomically (temp file, fsync, rename); its path.

    Creates ``root`` and the file's directories; raises ``OSError`` (the target's directory
    resolving outside ``root`` included)."""
    os.makedirs(root, exist_ok=True)
    base = os.path.realpath(root)
    directory, name = os.path.split(os.path.join(base, relative))
    os.makedirs(directory, exist_ok=True)
    real_dir = os.path.realpath(directory)
    if os.path.commonpath([real_dir, base]) != base:
        raise OSError(f"{relative}: its directory resolves outside the store")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=real_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        target = os.path.join(real_dir, name)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash
        dir_fd = os.open(real_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


# -- the mirror ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a fetch left: a stored file, a body the store refused, a 404, or an error."""

    kind: Literal["stored", "unstored", "not_found", "error"]
    path: str = ""  # stored: the file
    body: bytes = b""  # unstored: the checked body
    status: int = 0  # error: 502 or 504
    reason: str = ""


class Mirror:
    """One worker's pull-through state: flights in progress and paths remembered as missing or
    failing upstream."""

    def __init__(self, root: str, upstream: Upstream | None, *, timeout: float,
                 max_bytes: int, negative_ttl: float, retry_after: float,
                 metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.upstream = upstream
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.negative_ttl = negative_ttl
        self.retry_after = retry_after
        self.metrics = metrics if metrics is not None else Metrics()
        self.clock = clock
        self._flights: dict[str, asyncio.Task[Outcome]] = {}
        self.memory = FileMemory()  # stored files served from memory (edge/assets.py)
        self._remembered: dict[str, tuple[float, Outcome]] = {}

    def remembered(self, relative: str) -> Outcome | None:
        held = self._remembered.get(relative)
        if held is None:
            return None
        if held[0] <= self.clock():
            del self._remembered[relative]
            return None
        return held[1]

    def _remember(self, relative: str, outcome: Outcome, seconds: float) -> None:
        if seconds <= 0:
            return
        if len(self._remembered) >= REMEMBERED_MAX:
            now = self.clock()
            for key in [k for k, (until, _) in self._remembered.items() if until <= now]:
                del self._remembered[key]
            while len(self._remembered) >= REMEMBERED_MAX:
                del self._remembered[next(iter(self._remembered))]  # the oldest entry
        self._remembered[relative] = (self.clock() + seconds, outcome)

    def refreshing(self, relative: str) -> bool:
        return relative in self._flights

    def start(self, relative: str) -> asyncio.Task[Outcome]:
        """The flight fetching ``relative``: the one in progress, or a new one."""
        task = self._flights.get(relative)
        if task is None:
            task = asyncio.create_task(self._fly(relative))
            self._flights[relative] = task
        return task

    async def obtain(self, relative: str) -> Outcome:
        """``relative`` fetched and stored, or why not; concurrent callers share one fetch."""
        held = self.remembered(relative)
        if held is not None:
            return held
        return await asyncio.shield(self.start(relative))

    async def _fly(self, relative: str) -> Outcome:
        try:
            return await self._fetch_and_store(relative)
        finally:
            self._flights.pop(relative, None)

    async def _fetch_and_store(self, relative: str) -> Outcome:
        assert self.upstream is not None
        metrics = self.metrics
        metrics.mirror_fetches += 1
        try:
            body = await fetch(self.upstream, relative, timeout=self.timeout,
                               max_bytes=self.max_bytes)
        except UpstreamNotFound:
            metrics.mirror_not_found += 1
            outcome = Outcome("not_found")
            self._remember(relative, outcome, self.negative_ttl)
            return outcome
        except UpstreamError as exc:
            metrics.mirror_upstream_errors += 1
            log.warning("mirror: %s: %s", self.upstream.url(relative), exc)
            outcome = Outcome("error", status=exc.status, reason=str(exc))
            self._remember(relative, outcome, self.retry_after)
            return outcome
        except Exception as exc:  # never a 500, never a dead flight
            metrics.mirror_upstream_errors += 1
            log.exception("mirror: %s", self.upstream.url(relative))
            outcome = Outcome("error", status=502, reason=f"{type(exc).__name__}")
            self._remember(relative, outcome, self.retry_after)
            return outcome
        try:
            path = await asyncio.to_thread(store, self.root, relative, body)
        except OSError as exc:
            log.error("mirror: cannot store %s in %s: %s", relative, self.root, exc)
            return Outcome("unstored", body=body)
        metrics.mirror_stored_bytes += len(body)
        return Outcome("stored", path=path)

    async def aclose(self) -> None:
        """Cancel the fetches in progress (at shutdown)."""
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
