"""The web app: server-rendered pages over the Config API's write path, mounted at ``/app``.

``web_routes(clock)`` gives what publisher/api/app.py mounts: ``/app/`` (this app) and a
redirect from ``/`` to it. Requests reach the Config API's lifespan state (the Service, the
settings, the rate limiter), so the pages read and write exactly what the API does.

Every answer carries the same security headers: a Content-Security-Policy that allows scripts,
styles and images from this app alone (no inline script, no third party), ``X-Frame-Options:
DENY``, ``nosniff``, no referrer, and ``Cache-Control: no-store`` on pages (they show
configuration). Templates autoescape everything (publisher/web/base.py), so a name a user typed
is text, never markup. The JavaScript (``static/app.js``) only enhances: every page works
without it.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from publisher.errors import NotFound, PublisherError
from publisher.web import views
from publisher.web.base import BASE, HERE, SignInRequired, error_page, render, see_other
from publisher.web.session import Signer

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds ``HEADERS`` to every answer (and ``no-store`` to all but static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(BASE + "/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in HEADERS if h[0] not in names]
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)


class Static:
    """The files of ``static/``, read once: ETag, 304, revalidated on every use."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted((HERE / "static").iterdir()):
            if path.is_file():
                body = path.read_bytes()
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind.endswith("javascript"):
                    kind += "; charset=utf-8"
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self.files[path.name] = (body, kind, etag)

    async def serve(self, request: Request) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            raise NotFound(f"no static file {request.path_params['name'][:100]!r}")
        body, kind, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=kind, headers=headers)


async def _on_publisher_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PublisherError)
    return error_page(request, exc)


async def _on_sign_in(request: Request, exc: Exception) -> Response:
    if request.method in ("GET", "HEAD"):
        return see_other(f"{BASE}/login")
    return render(request, "error.html", None, status=401, title="Sign-in needed",
                  message="Your session ended or was never started: sign in again. Nothing "
                          "was changed.")


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (f"method {request.method} is not supported here" if exc.status_code == 405
               else f"no page at {request.url.path}")
    return render(request, "error.html", None, status=exc.status_code,
                  title="Not found" if exc.status_code == 404 else "Not allowed",
                  message=message)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", None, status=500, title="Internal error",
                  message="internal error; see the publisher's log")


def create_web_app(clock: Callable[[], float]) -> ASGIApp:
    """The web app (paths relative to its mount point); ``clock`` (Unix seconds) dates the
    session cookies."""
    static = Static()
    app = Starlette(
        routes=[*views.ROUTES, Route("/static/{name}", static.serve)],
        exception_handlers={SignInRequired: _on_sign_in, PublisherError: _on_publisher_error,
                            HTTPException: _on_http, Exception: _on_unexpected})
    app.state.signer = Signer(clock)
    return SecurityHeaders(app)


async def _to_app(request: Request) -> Response:
    return RedirectResponse(f"{BASE}/", status_code=307)


def web_routes(clock: Callable[[], float]) -> list[BaseRoute]:
    """What the publisher's HTTP app mounts: the web app at ``/app`` and ``/`` sent there."""
    return [Route("/", _to_app), Route(BASE, _to_app), Mount(BASE, app=create_web_app(clock))]
