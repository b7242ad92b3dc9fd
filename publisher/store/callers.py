"""What the store keeps about the publisher's HTTP callers: API tokens and webhook deliveries.

A Config API token is stored only as its hash (publisher/api/auth.py makes and checks
tokens), so the database never holds a usable credential. A webhook delivery is recorded under
its event id with the response it got, so a sender's retry of the same event replays that
response and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson

from publisher.errors import AlreadyExists, InvalidArgument
from publisher.store.base import StoreBase
from publisher.store.schema import now_rfc3339, require_name, to_json

TOKEN_SCOPES = ("read", "write")


@dataclass(frozen=True, slots=True)
class Token:
    """An API token's record; the store only ever sees the token's hash."""

    id: int
    workspace_id: int
    name: str
    scope: str
    created_at: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    event_id: str
    source_id: int | None
    status: int
    response: Any
    received_at: str


class CallersMixin(StoreBase):
    """API tokens and webhook events."""

    # -- tokens and webhook events ----------------------------------------------------

    def create_token(self, workspace_id: int, name: str, token_hash: str, scope: str) -> Token:
        name = require_name("token name", name)
        if scope not in TOKEN_SCOPES:
            raise InvalidArgument(f"token scope {scope!r} is not one of {', '.join(TOKEN_SCOPES)}")
        now = now_rfc3339()
        with self.transaction():
            if self._one("SELECT 1 FROM tokens WHERE hash = ?", (token_hash,)):
                raise AlreadyExists("a token with this hash already exists")
            cur = self._conn.execute(
                "INSERT INTO tokens (workspace_id, name, hash, scope, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (workspace_id, name, token_hash, scope, now),
            )
        return Token(cast(int, cur.lastrowid), workspace_id, name, scope, now)

    def find_token(self, token_hash: str) -> Token | None:
        row = self._one("SELECT * FROM tokens WHERE hash = ?", (token_hash,))
        if row is None:
            return None
        return Token(row["id"], row["workspace_id"], row["name"], row["scope"], row["created_at"])

    def record_webhook_event(
        self, event_id: str, source_id: int | None, status: int, response: Any
    ) -> bool:
        """Remember a webhook delivery's outcome; ``False`` if the event was already seen."""
        with self.transaction():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO webhook_events (event_id, source_id, status, response,"
                " received_at) VALUES (?, ?, ?, ?, ?)",
                (event_id, source_id, status, to_json(response), now_rfc3339()),
            )
        return cur.rowcount == 1

    def update_webhook_response(self, event_id: str, response: Any) -> None:
        """The reply a duplicate delivery gets, when the first one's changed after recording
        (its publish turned out pending)."""
        with self.transaction():
            self._conn.execute("UPDATE webhook_events SET response = ? WHERE event_id = ?",
                               (to_json(response), event_id))

    def get_webhook_event(self, event_id: str) -> WebhookEvent | None:
        row = self._one("SELECT * FROM webhook_events WHERE event_id = ?", (event_id,))
        if row is None:
            return None
        return WebhookEvent(
            row["event_id"], row["source_id"], row["status"], orjson.loads(row["response"]),
            row["received_at"],
        )
