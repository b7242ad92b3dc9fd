"""Web app fixtures: the publisher's app (Config API + /app/) on a real SQLite file and the
private redis-server, a workspace with sources, tokens, and a browser-like client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from publisher.api.app import create_app
from publisher.api.auth import create_token
from publisher.service import Service
from publisher.settings import PublisherSettings
from tests.publisher.workspaces import Clock

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def service(acme: Service) -> Service:
    acme.create_source("acme", "site", "web", "Acme site")
    acme.create_source("acme", "app", "ios", "Acme iOS")
    acme.create_source("acme", "backend", "server", "Acme backend")
    acme.create_source("other", "theirs", "web", "Their site")
    return acme


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> PublisherSettings:
    return PublisherSettings(db_path=str(tmp_path / "publisher.db"), redis_url=redis_url,
                             rate_limit=10_000, max_body_bytes=64 * 1024, retry_interval=0)


@pytest.fixture
def app_client(settings: PublisherSettings, service: Service,
               clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, service=service, clock=clock),
                    base_url="http://testserver", follow_redirects=False) as c:
        yield c


@pytest.fixture
def write_token(service: Service) -> str:
    return create_token(service, "acme", "write", "web")


@pytest.fixture
def read_token(service: Service) -> str:
    return create_token(service, "acme", "read", "web-read")


def sign_in(client: TestClient, token: str) -> Any:
    """Sign in through the form as a browser does; returns the answer to the POST."""
    page = client.get("/app/login")
    assert page.status_code == 200, page.text
    csrf = CSRF_RE.search(page.text)
    assert csrf is not None
    return client.post("/app/login", data={"csrf": csrf.group(1), "token": token})


def csrf_of(client: TestClient, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.text
    found = CSRF_RE.search(page.text)
    assert found is not None, page.text
    return found.group(1)


@pytest.fixture
def writer(app_client: TestClient, write_token: str) -> TestClient:
    assert sign_in(app_client, write_token).status_code == 303
    return app_client


@pytest.fixture
def reader(app_client: TestClient, read_token: str) -> TestClient:
    assert sign_in(app_client, read_token).status_code == 303
    return app_client
