"""The app as ``settings-cdn-publisher serve`` builds it: from settings alone, with a CLI token."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient
from starlette.types import Message

from publisher import cli
from publisher.api.app import create_app
from publisher.api.plumbing import error_response, read_body
from publisher.errors import InvalidArgument, RequestTimeout
from publisher.settings import PublisherSettings
from publisher.store import Store


def test_app_builds_its_own_service_and_accepts_cli_tokens(
        tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a service the lifespan opens one from the settings; a token printed by
    `token create` authenticates, and only its SHA-256 is stored."""
    db = str(tmp_path / "cli.db")
    assert cli.main(["--db", db, "workspace", "create", "acme"]) == 0
    assert cli.main(["--db", db, "token", "create", "acme", "--scope", "write"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    settings = PublisherSettings(db_path=db, redis_url=redis_url)

    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1beta/workspaces/acme/sources",
                           json={"source": {"slug": "site", "type": "web"}},
                           headers={"Authorization": f"Bearer {token}"})

    assert resp.status_code == 200, resp.text
    assert token.startswith("sct_") and len(token) > 40
    with Store.open(db) as store:
        found = store.find_token(hashlib.sha256(token.encode()).hexdigest())
        assert found is not None and found.scope == "write"
        rows = store._all("SELECT hash FROM tokens")
        assert token not in {r["hash"] for r in rows}


def test_client_gone_mid_body_is_a_4xx() -> None:
    """A client that closes the connection before its body is complete ends the request as a
    400 incomplete_body (no ClientDisconnect traceback in the log)."""
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"fil', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)

    with pytest.raises(InvalidArgument) as caught:
        asyncio.run(read_body(request, PublisherSettings(max_body_bytes=1000)))

    assert caught.value.code == "incomplete_body"
    assert caught.value.message == ("the client closed the connection after 5 bytes of the "
                                    "body")


def test_a_body_that_stalls_is_a_408_and_closes_the_connection() -> None:
    """A client that sends part of its body and then nothing gets a 408 body_timeout after
    PUBLISHER_BODY_TIMEOUT (no task waits forever), and the answer closes the connection: the
    rest of that body, should it come, is not read as a next request."""
    messages: list[Message] = [{"type": "http.request", "body": b'{"fil', "more_body": True}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client stalls
        raise AssertionError("unreachable")

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    settings = PublisherSettings(max_body_bytes=1000, body_timeout=0.2)

    with pytest.raises(RequestTimeout) as caught:
        asyncio.run(read_body(request, settings))

    assert caught.value.http_status == 408 and caught.value.code == "body_timeout"
    assert "5 bytes received; PUBLISHER_BODY_TIMEOUT" in caught.value.message
    assert error_response(caught.value).headers["connection"] == "close"
