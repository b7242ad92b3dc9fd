"""HTTP plumbing shared by the Config API and the webhook: state, bodies, errors.

Errors are mapped to responses here and nowhere else: a ``PublisherError`` becomes its
``http_status`` with the Config API body ``{"error", "code", "reason"}``; Starlette's own 404/405
get the same body; anything unexpected is a 500 with code 13 (and is a bug: bad input never
gets there). Bodies are read with a hard cap: a ``Content-Length`` over the limit is refused
before a byte is read, and a body that turns out longer than it said (or is chunked) is
refused as soon as the cap is crossed, without reading the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from publisher.api import shapes
from publisher.api.auth import Principal, RateLimiter, authenticate
from publisher.api.fields import check_unique_keys
from publisher.core.model import Source
from publisher.core.rules import RULES
from publisher.errors import (
    InvalidArgument,
    PayloadTooLarge,
    PublisherError,
    RateLimited,
    RequestTimeout,
)
from publisher.publish import PublishResult
from publisher.service import Service
from publisher.settings import PublisherSettings


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the lifespan opens; every request reaches it as ``request.state.api``."""

    service: Service
    settings: PublisherSettings
    limiter: RateLimiter
    clock: Callable[[], float]


def state(request: Request) -> ApiState:
    return cast(ApiState, request.state.api)


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")


# -- endpoint helpers: who is calling, which source, what a write answers -----------------

async def authorize(request: Request, *, write: bool = False) -> tuple[Service, Principal]:
    """Authenticate, rate-limit, keep the token in its workspace, and check the scope."""
    st = state(request)
    who = await run_in_threadpool(authenticate, st.service, request.headers.get("authorization"))
    st.limiter.take(who.token_id)
    ws = request.path_params.get("ws")
    if ws is not None:
        who.require_workspace(ws)
    if write:
        who.require_write()
    request.state.principal = who  # (what the answer may show: publisher/api/destinations.py)
    return st.service, who


async def source_of(request: Request, *, write: bool = False) -> tuple[Service, Source]:
    svc, _ = await authorize(request, write=write)
    p = request.path_params
    return svc, await run_in_threadpool(svc.source, p["ws"], p["src"])


def written(key: str, resource: dict[str, Any], result: PublishResult) -> Response:
    return json_response({key: resource, "bundle": result.to_dict()})


def page(request: Request, key: str, items: list[dict[str, Any]]) -> Response:
    q = request.query_params
    items_page, token = shapes.paginate(items, q.get("page_size"), q.get("page_token"))
    return json_response({key: list(items_page), "next_page_token": token})


async def read_body(request: Request, settings: PublisherSettings) -> bytes:
    """The raw body: at most ``PUBLISHER_MAX_BODY_BYTES`` (``PayloadTooLarge`` otherwise),
    all of it within ``PUBLISHER_BODY_TIMEOUT`` (``RequestTimeout``: a client that stalls
    mid-body does not hold a connection and a task forever)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
            raise InvalidArgument(f"Content-Length {declared[:40]!r} is not a byte count",
                                  code="bad_content_length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} "
                                  "(PUBLISHER_MAX_BODY_BYTES)")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes "
                                          "(PUBLISHER_MAX_BODY_BYTES)")
                chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; a 4xx keeps it out of the log
        raise InvalidArgument(f"the client closed the connection after {size} bytes of the "
                              "body", code="incomplete_body") from None
    except TimeoutError:
        raise RequestTimeout(f"the request body was not complete after "
                             f"{settings.body_timeout:g} s ({size} bytes received; "
                             "PUBLISHER_BODY_TIMEOUT)") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object from a request body; ``InvalidArgument`` naming what is wrong otherwise."""
    if not body.strip():
        raise InvalidArgument("request body is empty; expected a JSON object", code="bad_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}", code="bad_json") from None
    check_unique_keys(body, "request body")
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
            type(data), "a number")
        raise InvalidArgument(f"request body must be a JSON object, got {kind}",
                              code="bad_json")
    return data


async def read_json(request: Request) -> dict[str, Any]:
    return parse_json(await read_body(request, state(request).settings))


def error_response(exc: PublisherError) -> Response:
    """The response for ``exc``; a destination rule's code is always named in the message."""
    body = exc.to_dict()
    if exc.code in RULES and exc.code not in exc.message:
        body["error"] = f"{exc.message} [{exc.code}: {RULES[exc.code]}]"
    headers: dict[str, str] = {}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="settings-cdn"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, int(getattr(exc, "retry_after", 1) + 0.999)))
    elif exc.http_status == 503:
        headers["Retry-After"] = "1"
    elif isinstance(exc, RequestTimeout):  # the rest of the body may still come: not read
        headers["Connection"] = "close"
    return json_response(body, exc.http_status, headers)


async def on_publisher_error(request: Request, exc: Exception) -> Response:
    return error_response(cast(PublisherError, exc))


async def on_http_error(request: Request, exc: Exception) -> Response:
    http = cast(HTTPException, exc)
    if http.status_code == 405:
        body = {"error": f"method {request.method} is not supported on {request.url.path}",
                "code": 12, "reason": "unimplemented"}
    elif http.status_code == 404:
        body = {"error": f"no such resource or path: {request.url.path}", "code": 5,
                "reason": "not_found"}
    else:
        body = {"error": str(http.detail), "code": 3, "reason": "invalid_argument"}
    return json_response(body, http.status_code, dict(http.headers or {}))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return json_response({"error": "internal error; see the publisher's log", "code": 13,
                          "reason": "internal"}, 500)


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    PublisherError: on_publisher_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}
