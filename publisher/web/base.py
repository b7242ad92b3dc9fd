"""What every page of the web app shares: who is signed in, templates, form posts, answers.

A page handler asks ``signed_in`` for the request's ``Ctx`` (the Service, the token's
``Principal``, the session) — no session sends the browser to the sign-in page — and renders a
template with ``render``. A state-changing request goes through ``posted``: the session, then
the body (at most ``PUBLISHER_MAX_BODY_BYTES``, urlencoded), then the CSRF token, then the
token's write scope, then the Config API's rate limit; any refusal raises before the handler
calls the write path, so it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from publisher.api.auth import Principal
from publisher.api.plumbing import ApiState, read_body, state
from publisher.errors import NotFound, PermissionDenied, PublisherError
from publisher.service import Service
from publisher.web.forms import Form
from publisher.web.session import COOKIE, Session, Signer, csrf_ok

BASE = "/app"
HERE = Path(__file__).parent


def _when(ts: int | float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["when"] = _when
TEMPLATES.globals["base"] = BASE


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page, posts answer 401."""


@dataclass(frozen=True, slots=True)
class Ctx:
    svc: Service
    who: Principal
    session: Session

    @property
    def ws(self) -> str:
        return self.who.workspace.slug

    @property
    def can_write(self) -> bool:
        return self.who.scope == "write"


def signer(request: Request) -> Signer:
    found: Signer = request.app.state.signer
    return found


def _principal(svc: Service, session: Session) -> Principal | None:
    token = svc.store.find_token(session.token_hash)
    if token is None:
        return None
    ws = next((w for w in svc.store.list_workspaces() if w.id == token.workspace_id), None)
    return None if ws is None else Principal(token.id, ws, token.scope)


async def signed_in(request: Request) -> Ctx:
    """The request's session and token, and that ``{ws}`` in the path is the token's own
    (any other answers 404, as the Config API does)."""
    session = signer(request).session(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired()
    st: ApiState = state(request)
    who = await run_in_threadpool(_principal, st.service, session)
    if who is None:
        raise SignInRequired()
    ws = request.path_params.get("ws")
    if ws is not None:
        who.require_workspace(ws)
    return Ctx(st.service, who, session)


async def posted(request: Request) -> tuple[Ctx, Form]:
    """A state-changing request, refused unless it is signed in, carries the session's CSRF
    token and comes from a write token."""
    ctx = await signed_in(request)
    st = state(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, st.settings)
    form = Form(body if kind == "application/x-www-form-urlencoded" else b"")
    if not csrf_ok(ctx.session, form.get("csrf")):
        raise PermissionDenied("the form's CSRF token is missing or wrong: reload the page and "
                               "send it again", code="csrf")
    ctx.who.require_write()
    st.limiter.take(ctx.who.token_id)
    return ctx, form


def render(request: Request, template: str, ctx: Ctx | None, status: int = 200,
           **values: Any) -> HTMLResponse:
    page = TEMPLATES.get_template(template).render(
        ctx=ctx, csrf=ctx.session.csrf if ctx else "", can_write=bool(ctx and ctx.can_write),
        ws=ctx.ws if ctx else "", path=request.url.path, **values)
    return HTMLResponse(page, status_code=status)


def see_other(url: str, params: Mapping[str, Any] | None = None) -> RedirectResponse:
    if params:
        from urllib.parse import urlencode

        url = f"{url}?{urlencode(params)}"
    return RedirectResponse(url, status_code=303)


def http_status(exc: PublisherError) -> int:
    return exc.http_status


def error_page(request: Request, exc: PublisherError, ctx: Ctx | None = None) -> Response:
    title = {401: "Sign-in needed", 403: "Refused", 404: "Not found", 409: "Conflict",
             413: "Too large", 429: "Slow down", 503: "Busy"}.get(exc.http_status, "Error")
    if isinstance(exc, NotFound):
        title = "Not found"
    return render(request, "error.html", ctx, status=exc.http_status, title=title,
                  message=exc.message)
