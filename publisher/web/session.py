"""The web app's sign-in session: a signed cookie naming a Config API token by its hash.

Signing in with a Config API token sets one cookie, ``sc_session``: the token's SHA-256 (the
hash the store keeps, never the token itself), an expiry, a session id and the session's CSRF
token, as base64url JSON followed by an HMAC-SHA256 over it. The key is random per process, so
a restart of ``serve`` signs everyone out; the cookie is ``HttpOnly``, ``SameSite=Strict``,
``Path=/app``, ``Secure`` when the request came over HTTPS (directly or, per
``X-Forwarded-Proto``, through a proxy), and expires after ``SESSION_SECONDS``. Every request
looks the token up again, so a session ends with its token's workspace; signing out records
the session id as ended until its expiry, so a copy of the cookie stops working too.

Every state-changing request carries the session's CSRF token in a form field (``csrf``),
compared in constant time: another site can make the browser send the cookie (SameSite=Strict
already stops that in current browsers) but cannot read the token. The sign-in form, before any
session, is protected the same way by a short-lived ``sc_login`` cookie and its form field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

COOKIE = "sc_session"
LOGIN_COOKIE = "sc_login"
COOKIE_PATH = "/app"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session cookie's content."""

    token_hash: str
    expires: int
    sid: str
    csrf: str


class Signer:
    """Makes and checks the web app's cookies; one key per process."""

    def __init__(self, clock: Callable[[], float], key: bytes | None = None,
                 session_seconds: int = SESSION_SECONDS) -> None:
        self.clock = clock
        self.key = key or secrets.token_bytes(32)
        self.session_seconds = session_seconds
        self._ended: dict[str, int] = {}  # session id -> its expiry (signed out before it)
        self._lock = threading.Lock()

    def _mac(self, kind: str, payload: str) -> str:
        return _b64(hmac.new(self.key, f"{kind}.{payload}".encode(), hashlib.sha256).digest())

    def _seal(self, kind: str, data: dict[str, Any]) -> str:
        payload = _b64(orjson.dumps(data))
        return f"{payload}.{self._mac(kind, payload)}"

    def _open(self, kind: str, value: str | None) -> dict[str, Any] | None:
        if not value or len(value) > 1024 or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(kind, payload)):
            return None
        try:
            data = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("e"), int):
            return None
        if data["e"] <= self.clock():
            return None
        return data

    # -- the session ------------------------------------------------------------------

    def new_session(self, token_hash: str) -> tuple[str, Session]:
        """A fresh session for the token with this hash: the cookie value and its content."""
        session = Session(token_hash, int(self.clock()) + self.session_seconds,
                          secrets.token_urlsafe(16), secrets.token_urlsafe(32))
        value = self._seal("session", {"t": session.token_hash, "e": session.expires,
                                       "s": session.sid, "c": session.csrf})
        return value, session

    def session(self, value: str | None) -> Session | None:
        """The session a cookie value holds, if it is signed by this process, not expired and
        not signed out."""
        data = self._open("session", value)
        if data is None:
            return None
        fields = (data.get("t"), data.get("s"), data.get("c"))
        if not all(isinstance(f, str) and f for f in fields):
            return None
        session = Session(data["t"], data["e"], data["s"], data["c"])
        with self._lock:
            if session.sid in self._ended:
                return None
        return session

    def end(self, session: Session) -> None:
        """Sign out: the session id is refused until the cookie would have expired anyway."""
        now = int(self.clock())
        with self._lock:
            self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
            self._ended[session.sid] = session.expires

    # -- the sign-in form's CSRF token ------------------------------------------------------

    def new_login(self) -> tuple[str, str]:
        """The ``sc_login`` cookie value and the form token it vouches for."""
        token = secrets.token_urlsafe(32)
        return self._seal("login", {"c": token, "e": int(self.clock()) + LOGIN_SECONDS}), token

    def login_ok(self, cookie: str | None, form_token: str) -> bool:
        data = self._open("login", cookie)
        return data is not None and isinstance(data.get("c"), str) and \
            hmac.compare_digest(data["c"].encode(), form_token.encode())


def csrf_ok(session: Session, form_token: str) -> bool:
    return hmac.compare_digest(session.csrf.encode(), form_token.encode())
