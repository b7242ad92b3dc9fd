"""Config API tokens and the per-token rate limit.

A token is ``sct_`` followed by 43 URL-safe characters (256 random bits), shown once by
``settings-cdn-publisher token create``. The store keeps only its SHA-256, so a leaked database
does not leak usable tokens; a request is authenticated by looking the hash of the presented
token up (an exact-match index lookup, no secret-dependent string comparison in Python).

Each token belongs to one workspace and has the scope ``read`` or ``write`` (a read token
sees secret settings masked: publisher/api/destinations.py). The API answers a
token asking for another workspace's resources exactly as it answers for a workspace that does
not exist (404), so names do not leak.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from publisher.core.model import Workspace
from publisher.core.specs import check_text
from publisher.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from publisher.service import Service
from publisher.store.callers import TOKEN_SCOPES

TOKEN_PREFIX = "sct_"
MAX_TOKEN_NAME = 100  # characters of a token's name (what `token create --name` labels it)
_MAX_TOKEN_CHARS = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(svc: Service, workspace_slug: str, scope: str, name: str = "") -> str:
    """Create a token for one workspace and return it (the only time it is ever visible)."""
    if scope not in TOKEN_SCOPES:
        raise InvalidArgument(f"token scope must be one of {', '.join(TOKEN_SCOPES)}, got "
                              f"{scope!r}", code="invalid_scope")
    name = check_text(name.strip(), "token name")
    if len(name) > MAX_TOKEN_NAME:
        raise InvalidArgument(f"token name is {len(name)} characters; the limit is "
                              f"{MAX_TOKEN_NAME}", code="invalid_text")
    ws = svc.workspace(workspace_slug)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    svc.store.create_token(ws.id, name or f"{scope} token", hash_token(token), scope)
    return token


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, its workspace and its scope."""

    token_id: int
    workspace: Workspace
    scope: str

    def require_workspace(self, slug: str) -> None:
        """404 for any workspace but the token's own (the same answer as a missing one)."""
        if slug != self.workspace.slug:
            raise NotFound(f"workspace {slug!r} not found")

    def require_write(self) -> None:
        if self.scope != "write":
            raise PermissionDenied("this token has read scope; creating, updating and deleting "
                                   "need a token with write scope", code="read_only_token")


def authenticate(svc: Service, authorization: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header, or ``Unauthenticated``."""
    if not authorization:
        raise Unauthenticated("missing Authorization header: send 'Authorization: Bearer "
                              "<token>' (create one with `settings-cdn-publisher token create`)",
                              code="missing_token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.casefold() != "bearer" or not token:
        raise Unauthenticated("Authorization header must be 'Bearer <token>'",
                              code="invalid_authorization")
    if len(token) > _MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("the access token is invalid", code="invalid_token")
    found = svc.store.find_token(hash_token(token))
    if found is None:
        raise Unauthenticated("the access token is invalid", code="invalid_token")
    workspace = next((w for w in svc.store.list_workspaces() if w.id == found.workspace_id), None)
    if workspace is None:  # the workspace was deleted with its tokens (ON DELETE CASCADE)
        raise Unauthenticated("the access token is invalid", code="invalid_token")
    return Principal(token_id=found.id, workspace=workspace, scope=found.scope)


class TokenRateLimited(RateLimited):
    """``RateLimited`` with the seconds until the next request would be allowed."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, code="rate_limited")
        self.retry_after = retry_after


class RateLimiter:
    """A token bucket per API token: ``per_minute`` requests, refilled continuously.

    The clock is injected (Unix seconds); a clock that steps backwards refills nothing.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, token_id: int) -> None:
        """Spend one request of ``token_id``'s allowance, or raise ``RateLimited``."""
        now = self.clock()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(token_id, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + max(0.0, now - at) * rate)
            if tokens < 1.0:
                self._buckets[token_id] = (tokens, max(at, now))
                wait = (1.0 - tokens) / rate
                raise TokenRateLimited(f"rate limit of {self.per_minute} requests per minute "
                                       f"per token exhausted; retry in {wait:.1f}s",
                                       retry_after=wait)
            self._buckets[token_id] = (tokens - 1.0, max(at, now))
