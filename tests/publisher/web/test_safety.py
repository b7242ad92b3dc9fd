"""The web app's safety: sessions (sign-in, sign-out, expiry, cookie flags), read tokens,
CSRF, escaping, security headers — and that every refused request writes nothing."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

import pytest
import redis
from starlette.testclient import TestClient

from publisher.core.specs import InstanceSpec
from publisher.service import Service
from publisher.settings import PublisherSettings
from publisher.web.session import COOKIE, SESSION_SECONDS
from tests.publisher.web.conftest import csrf_of, sign_in
from tests.publisher.workspaces import Clock

Snapshot = Callable[[], tuple[list[str], dict[bytes, bytes]]]


@pytest.fixture
def snapshot(settings: PublisherSettings, redis_client: redis.Redis) -> Snapshot:
    """Everything SQLite and Redis hold, to compare before and after a refused request."""

    def take() -> tuple[list[str], dict[bytes, bytes]]:
        conn = sqlite3.connect(settings.db_path)
        try:
            rows = list(conn.iterdump())
        finally:
            conn.close()
        keys = sorted(redis_client.keys("*"))
        return rows, {k: redis_client.dump(k) or b"" for k in keys}

    return take


def _amplitude(service: Service, **settings: object) -> str:
    inst, _ = service.add_instance(service.source("acme", "site"), InstanceSpec(
        "amplitude", "CLOUD", enabled=False, settings=dict(settings)))
    return inst.id


def _webhooks(service: Service) -> str:
    inst, _ = service.add_instance(service.source("acme", "site"), InstanceSpec(
        "webhooks", "CLOUD", enabled=True, settings={
            "hooks": [{"hook": "https://hooks.example.com/a"}],
            "sharedSecret": "hook-secret-value-1234"}))
    return inst.id


# -- sessions --------------------------------------------------------------------------------

def test_sign_in_sets_a_signed_httponly_strict_cookie(app_client: TestClient,
                                                      write_token: str) -> None:
    resp = sign_in(app_client, write_token)
    assert resp.status_code == 303 and resp.headers["location"] == "/app/"
    cookie = next(v for k, v in resp.headers.multi_items()
                  if k == "set-cookie" and v.startswith(COOKIE + "="))
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/app" in flags
    assert f"max-age={SESSION_SECONDS}" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    assert write_token not in cookie
    assert app_client.get("/app/w/acme").status_code == 200


def test_cookie_is_secure_behind_https(app_client: TestClient, write_token: str) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto) the cookies are Secure (a browser sends them
    back over https only, as this client does)."""
    app_client.base_url = "https://testserver"  # type: ignore[assignment]
    page = app_client.get("/app/login", headers={"X-Forwarded-Proto": "https"})
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    resp = app_client.post("/app/login", data={"csrf": csrf.group(1), "token": write_token},
                           headers={"X-Forwarded-Proto": "https"})
    cookie = next(v for k, v in resp.headers.multi_items()
                  if k == "set-cookie" and v.startswith(COOKIE + "="))
    assert "secure" in [f.strip().lower() for f in cookie.split(";")]


def test_bad_token_and_missing_login_csrf_are_refused(app_client: TestClient,
                                                      write_token: str) -> None:
    resp = sign_in(app_client, "sct_" + "x" * 43)
    assert resp.status_code == 401 and "not valid" in resp.text
    assert COOKIE not in app_client.cookies
    resp = app_client.post("/app/login", data={"token": write_token})
    assert resp.status_code == 403 and COOKIE not in app_client.cookies
    assert app_client.get("/app/w/acme").headers["location"] == "/app/login"


def test_pages_need_a_session(app_client: TestClient) -> None:
    for url in ("/app/", "/app/w/acme", "/app/w/acme/catalog", "/app/w/acme/s/site"):
        resp = app_client.get(url)
        assert resp.status_code == 303 and resp.headers["location"] == "/app/login", url
    assert app_client.get("/").headers["location"] == "/app/"


def test_forged_cookie_is_refused(app_client: TestClient, write_token: str) -> None:
    sign_in(app_client, write_token)
    value = app_client.cookies[COOKIE]
    payload, mac = value.split(".")
    app_client.cookies.clear()
    app_client.cookies.set(COOKIE, payload + "." + mac[:-2] + ("AA" if mac[-2:] != "AA"
                                                               else "BB"))
    assert app_client.get("/app/w/acme").status_code == 303


def test_sign_out_ends_the_session_even_for_a_copy_of_the_cookie(
        writer: TestClient) -> None:
    copy = writer.cookies[COOKIE]
    csrf = csrf_of(writer, "/app/w/acme")
    resp = writer.post("/app/logout", data={"csrf": csrf})
    assert resp.status_code == 303 and resp.headers["location"] == "/app/login"
    assert writer.get("/app/w/acme").status_code == 303
    writer.cookies.clear()
    writer.cookies.set(COOKIE, copy)
    assert writer.get("/app/w/acme").headers["location"] == "/app/login"


def test_sign_out_without_csrf_keeps_the_session(writer: TestClient) -> None:
    assert writer.post("/app/logout", data={}).status_code == 400
    assert writer.get("/app/w/acme").status_code == 200


def test_session_expires(writer: TestClient, clock: Clock) -> None:
    clock.now += SESSION_SECONDS - 1
    assert writer.get("/app/w/acme").status_code == 200
    clock.now += 2
    assert writer.get("/app/w/acme").headers["location"] == "/app/login"


def test_other_workspace_is_not_found(writer: TestClient) -> None:
    assert writer.get("/app/w/other").status_code == 404
    assert writer.get("/app/w/other/s/theirs").status_code == 404


# -- read tokens -----------------------------------------------------------------------------

def test_read_token_sees_masked_secrets_and_no_write_controls(
        reader: TestClient, service: Service) -> None:
    inst = _webhooks(service)
    page = reader.get(f"/app/w/acme/s/site/d/{inst}")
    assert page.status_code == 200
    assert "hook-secret-value-1234" not in page.text
    assert "••••••••1234" in page.text
    assert 'method="post"' not in page.text.replace(
        'method="post" action="/app/logout"', "")
    source_page = reader.get("/app/w/acme/s/site")
    assert "Add Destination" not in source_page.text and "Roll back" not in source_page.text


def test_write_token_never_sees_a_secret_either(writer: TestClient, service: Service) -> None:
    inst = _webhooks(service)
    page = writer.get(f"/app/w/acme/s/site/d/{inst}")
    assert "hook-secret-value-1234" not in page.text and "••••••••1234" in page.text


def test_read_token_write_is_refused_and_writes_nothing(
        reader: TestClient, service: Service, snapshot: Snapshot) -> None:
    inst = _amplitude(service, apiKey="k")
    csrf = csrf_of(reader, "/app/w/acme")
    before = snapshot()
    posts = [
        (f"/app/w/acme/s/site/d/{inst}/enabled", {"enabled": "1"}),
        (f"/app/w/acme/s/site/d/{inst}/settings", {"display_name": "Renamed"}),
        (f"/app/w/acme/s/site/d/{inst}/delete", {}),
        ("/app/w/acme/catalog/mixpanel/configure", {"source": "site",
                                                    "connection_mode": "CLOUD"}),
        ("/app/w/acme/s/site/rollback", {"version": "1"}),
    ]
    for url, data in posts:
        resp = reader.post(url, data={"csrf": csrf, **data})
        assert resp.status_code == 403, (url, resp.text)
        assert "read scope" in resp.text
    assert snapshot() == before


# -- CSRF ------------------------------------------------------------------------------------

@pytest.mark.parametrize("csrf", [None, "", "wrong"])
def test_post_without_the_csrf_token_is_refused_and_writes_nothing(
        writer: TestClient, service: Service, snapshot: Snapshot, csrf: str | None) -> None:
    inst = _amplitude(service, apiKey="k")
    before = snapshot()
    data = {} if csrf is None else {"csrf": csrf}
    for url, extra in [(f"/app/w/acme/s/site/d/{inst}/enabled", {"enabled": "1"}),
                       (f"/app/w/acme/s/site/d/{inst}/delete", {}),
                       ("/app/w/acme/s/site/add/mixpanel", {"connection_mode": "CLOUD"})]:
        resp = writer.post(url, data={**data, **extra})
        assert resp.status_code == 403, (url, resp.text)
        assert "CSRF" in resp.text
    assert snapshot() == before


def test_post_without_a_session_is_refused(app_client: TestClient, service: Service,
                                           snapshot: Snapshot) -> None:
    inst = _amplitude(service, apiKey="k")
    before = snapshot()
    resp = app_client.post(f"/app/w/acme/s/site/d/{inst}/enabled", data={"enabled": "1"})
    assert resp.status_code == 401
    assert snapshot() == before


# -- escaping and headers --------------------------------------------------------------------

def test_typed_names_and_settings_are_rendered_inert(writer: TestClient,
                                                     service: Service) -> None:
    evil = "<script>alert(1)</script>"
    inst, _ = service.add_instance(service.source("acme", "site"), InstanceSpec(
        "amplitude", "CLOUD", display_name=evil, settings={"apiKey": evil}))
    for url in ("/app/w/acme/s/site", f"/app/w/acme/s/site/d/{inst.id}"):
        page = writer.get(url)
        assert evil not in page.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, url
    assert "<script" not in writer.get("/app/w/acme/catalog?q=" + evil).text.replace(
        '<script src="/app/static/app.js" defer></script>', "")


@pytest.mark.parametrize("url", ["/app/login", "/app/w/acme", "/app/w/acme/catalog",
                                 "/app/static/app.js", "/app/nothing-here"])
def test_security_headers_on_every_answer(writer: TestClient, url: str) -> None:
    resp = writer.get(url)
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_pages_name_no_other_host(writer: TestClient, service: Service) -> None:
    _webhooks(service)
    for url in ("/app/w/acme", "/app/w/acme/catalog?q=a", "/app/w/acme/s/site",
                "/app/w/acme/catalog/amplitude/configure"):
        html = writer.get(url).text
        assert not re.search(r'(src|href|action)="(https?:)?//', html), url
        assert "<script>" not in html and " on" + "click=" not in html

