"""Config API fixtures: a real SQLite file, the private redis-server, tokens, a TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from publisher.api.app import create_app
from publisher.api.auth import create_token
from publisher.service import Service
from publisher.settings import PublisherSettings
from tests.publisher.workspaces import Clock

SECRET = "whsec-test-secret"


@dataclass
class Api:
    """A TestClient bound to one token; ``call`` returns (status, JSON body)."""

    client: TestClient
    token: str

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        resp = self.client.request(method, path, json=body, headers=headers, **kw)
        return resp.status_code, resp.json()


@pytest.fixture
def service(acme: Service) -> Service:
    return acme


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> PublisherSettings:
    return PublisherSettings(db_path=str(tmp_path / "publisher.db"), redis_url=redis_url,
                             webhook_secret=SECRET, webhook_tolerance=300, rate_limit=10_000,
                             max_body_bytes=64 * 1024)


@pytest.fixture
def client(settings: PublisherSettings, service: Service, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, service=service, clock=clock)) as c:
        yield c


@pytest.fixture
def writer(client: TestClient, service: Service) -> Api:
    return Api(client, create_token(service, "acme", "write", "ci"))


@pytest.fixture
def reader(client: TestClient, service: Service) -> Api:
    return Api(client, create_token(service, "acme", "read", "dashboard"))


@pytest.fixture
def outsider(client: TestClient, service: Service) -> Api:
    """A write token of another workspace."""
    return Api(client, create_token(service, "other", "write", "theirs"))


WS = "/v1beta/workspaces/acme"
SRC = WS + "/sources/site"


@pytest.fixture
def site(writer: Api) -> dict[str, Any]:
    """A web source ``acme/site``, created through the API."""
    status, body = writer.call("POST", WS + "/sources", {"source": {"slug": "site",
                                                                   "type": "web"}})
    assert status == 200, body
    return body  # type: ignore[no-any-return]
