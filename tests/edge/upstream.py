"""A local stand-in for the public CDN the /next-integrations/ mirror fetches from.

A real HTTP/1.1 server (``http.server`` in a thread) on a loopback port: it serves ``files``
under ``/next-integrations/``, counts every request by path, records the request headers, and
can be told (per path, or for every path) to answer 404, hang, truncate (announce 1000 bytes,
send 10, close), oversize, send HTML, redirect, or delay; ``stop()`` closes its port.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TREE = "/next-integrations/"


def script(name: str) -> bytes:
    """A gzipped stand-in integration script."""
    return gzip.compress(f"window['{name}Loader']=function(){{}};".encode(), mtime=0)


class Upstream:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # path under /next-integrations/ -> body
        self.modes: dict[str, str] = {}  # path (or "*") -> behaviour
        self.delay = 0.0  # seconds before each answer
        self.content_type = "application/javascript"
        self.requests: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()  # ends every hanging answer
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                upstream.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.stopped = False

    def count(self, relative: str) -> int:
        with self.lock:
            return self.requests[TREE + relative]

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        with self.lock:
            self.requests[path] += 1
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        relative = path[len(TREE):] if path.startswith(TREE) else None
        mode = self.modes.get(relative or "", self.modes.get("*", "ok"))
        if self.delay:
            time.sleep(self.delay)
        body = self.files.get(relative) if relative is not None else None
        out = handler.wfile
        if mode == "hang":
            self.release.wait(30)
            return
        if mode == "404" or body is None:
            self._send(handler, 404, b"<Error>NoSuchKey</Error>", "application/xml")
        elif mode == "500":
            self._send(handler, 500, b"oops", "text/plain")
        elif mode == "redirect":
            handler.send_response(302)
            handler.send_header("Location", "http://127.0.0.1:1/elsewhere")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif mode == "html":
            self._send(handler, 200, b"<html>maintenance</html>", "text/html")
        elif mode == "truncate":
            out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\n"
                      b"Content-Encoding: gzip\r\nContent-Length: 1000\r\n\r\n" + body[:10])
            out.flush()
            handler.close_connection = True
        elif mode == "oversize":
            self._send(handler, 200, body + b"\0" * 4096, self.content_type)
        elif mode == "chunked":
            handler.send_response(200)
            handler.send_header("Content-Type", self.content_type)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            half = len(body) // 2
            for part in (body[:half], body[half:]):
                out.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            out.write(b"0\r\n\r\n")
        else:
            self._send(handler, 200, body, self.content_type)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes,
              content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        if content_type != "text/html" and status == 200 and handler.path.endswith(".gz"):
            handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def stop(self) -> None:
        """Close the port: later connections are refused."""
        if not self.stopped:
            self.stopped = True
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
