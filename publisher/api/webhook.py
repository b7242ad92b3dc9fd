"""``POST /hooks/config-changed``: another control plane states a source's whole configuration.

Signing (the sender computes, we verify; ``PUBLISHER_WEBHOOK_SECRET`` is shared)::

    X-Settings-CDN-Timestamp: <Unix seconds, decimal>
    X-Settings-CDN-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

The MAC covers the exact bytes sent, prefixed by the timestamp and a dot, so neither can be
changed or replayed later; it is compared in constant time (``hmac.compare_digest``). A
timestamp more than ``PUBLISHER_WEBHOOK_TOLERANCE`` seconds from our clock is refused (401),
which bounds how long a captured request can be replayed. With no secret set the endpoint is
disabled and says so (404). Checks run in the order size (413), signature (401), body (400),
so nothing unauthenticated is ever parsed.

Body::

    {"event_id": "evt-123", "workspace": "acme", "source": "web", "type": "web",
     "revision": 42, "destinations": [<Config API destination>, ...]}

``type`` is optional: with it, a missing source is created. Each destination has ``slug``
(catalog), ``connection_mode``, and optionally ``id`` or ``name`` (the instance id; matched by
display name otherwise), ``display_name``, ``enabled``, ``config`` entries and ``filters``
(a destination's complete filter list; omitted means none). The event is applied through the
same rules and transaction as the Config API, recording ``event_id`` with its response: a
duplicate delivery gets the first response again and changes nothing; a ``revision`` not newer
than the stored one is acknowledged (200, ``"status": "ignored"``) and changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from publisher.api.fields import Obj
from publisher.api.plumbing import json_response, parse_json, read_body, state
from publisher.api.shapes import parse_destination, source_dict
from publisher.core.model import Source
from publisher.core.specs import InstanceSpec
from publisher.errors import InvalidArgument, NotFound, Unauthenticated
from publisher.publish import PublishResult

TIMESTAMP_HEADER = "X-Settings-CDN-Timestamp"
SIGNATURE_HEADER = "X-Settings-CDN-Signature"
DUPLICATE_HEADER = "X-Settings-CDN-Duplicate"
_MAX_EVENT_ID = 200


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Settings-CDN-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str | None, given: str | None, body: bytes, *,
           now: float, tolerance: int) -> None:
    """Raise ``Unauthenticated`` unless the request is signed with ``secret`` and fresh."""
    if not timestamp or not given:
        raise Unauthenticated(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header",
                              code="unsigned")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise Unauthenticated(f"{TIMESTAMP_HEADER} must be Unix seconds, got "
                              f"{timestamp[:40]!r}", code="bad_timestamp")
    skew = int(timestamp) - now
    if abs(skew) > tolerance:
        raise Unauthenticated(f"{TIMESTAMP_HEADER} {timestamp} is {abs(skew):.0f}s "
                              f"{'ahead of' if skew > 0 else 'behind'} the publisher's clock; "
                              f"the tolerance is {tolerance}s", code="stale_timestamp")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), given.strip().encode("utf-8", "replace")):
        raise Unauthenticated("signature does not match: expected sha256=<hex HMAC-SHA256 of "
                              "'<timestamp>.<body>' with the shared secret>",
                              code="bad_signature")


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    event_id: str
    workspace: str
    source: str
    type: str | None
    revision: int
    destinations: list[InstanceSpec]


def parse_event(data: dict[str, Any]) -> ConfigChanged:
    body = Obj(data, "")
    event_id = body.text("event_id", required=True) or ""
    if len(event_id) > _MAX_EVENT_ID:
        raise InvalidArgument(f"event_id is {len(event_id)} characters; the limit is "
                              f"{_MAX_EVENT_ID}", code="out_of_range")
    workspace = body.text("workspace", required=True) or ""
    source = body.text("source", required=True) or ""
    kind = body.text("type")
    revision = body.number("revision", required=True, minimum=1) or 0
    raws = body.array("destinations", required=True) or []
    body.done()
    prefix = f"workspaces/{workspace}/sources/{source}/destinations"
    specs = [parse_destination(raw, f"destinations[{n}]", prefix, webhook=True)[0]
             for n, raw in enumerate(raws)]
    return ConfigChanged(event_id, workspace, source, kind, revision, specs)


async def config_changed(request: Request) -> Response:
    st = state(request)
    secret = st.settings.webhook_secret
    if not secret:
        raise NotFound("the config-changed webhook is disabled: set PUBLISHER_WEBHOOK_SECRET "
                       "to enable it", code="webhook_disabled")
    raw = await read_body(request, st.settings)
    verify(secret, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER),
           raw, now=st.clock(), tolerance=st.settings.webhook_tolerance)
    event = parse_event(parse_json(raw))

    def render(source: Source, result: PublishResult) -> dict[str, Any]:
        return {"source": source_dict(event.workspace, source), "bundle": result.to_dict()}

    status, body, duplicate = await run_in_threadpool(
        st.service.apply_webhook, event.workspace, event.source, event.type,
        event.destinations, revision=event.revision, event_id=event.event_id, render=render)
    return json_response(body, status, {DUPLICATE_HEADER: "true"} if duplicate else None)
