"""The web app in Debian's headless Chromium against the real publisher (`settings-cdn-publisher
serve`) and the real edge (`python -m edge`) on one private Redis.

One walk through both flows — from the catalog, and from a source — then a second instance
with copied settings, the option vanishing where the destination rules forbid it, a filter
(an FQL error first), a diff and a rollback; after each change the edge's settings document is
fetched and checked. Every step is screenshotted into the test's tmp dir. Then the same pages
at 375 px wide, the sign-in by keyboard alone, and no request to any other host.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from publisher.api.auth import create_token
from publisher.core.catalog import default_catalog
from publisher.publish import RedisPublisher
from publisher.service import Service
from publisher.store import Store
from tests.e2e.browser import close_driver, require_browser_side
from tests.e2e.conftest import StartEdge
from tests.e2e.servers import E2E_DIR, ROOT, Process, fetch
from tests.services import free_port

pytestmark = pytest.mark.slow
DRIVER = E2E_DIR / "webapp_driver.mjs"
EDGE_ENV = {"EDGE_INSTANT": "true"}


class Chromium:
    """webapp_driver.mjs: one command, one answer, each bounded."""

    def __init__(self, shots: Path) -> None:
        node = require_browser_side()
        self.shots = shots
        self.step = 0
        self.proc = subprocess.Popen([node, str(DRIVER)], cwd=E2E_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        hello = self._read(60)
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"Chromium did not start: {hello}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read(self, timeout: float) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        if line is None:
            assert self.proc.stderr is not None
            raise RuntimeError("webapp_driver.mjs exited: " + self.proc.stderr.read()[-2000:])
        answer: dict[str, Any] = json.loads(line)
        return answer

    def do(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        answer = self._read(30)
        if not answer.get("ok"):
            raise AssertionError(f"{cmd} {args}: {answer.get('error')}")
        self.url = str(answer.get("url"))
        return answer.get("value")

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.shots / f"{self.step:02d}-{name}.png"
        self.do("screenshot", path=str(path))
        return path

    def text(self, sel: str = "main") -> str:
        return str(self.do("text", sel=sel))

    def close(self) -> None:
        close_driver(self.proc, [self.pump])


@pytest.fixture
def world(tmp_path: Path, redis_url: str, start_edge: StartEdge) -> Iterator[dict[str, Any]]:
    """A workspace with a web, an iOS and a server source, a write token, the edge and
    `settings-cdn-publisher serve` on the same SQLite file and Redis."""
    db = str(tmp_path / "publisher.db")
    client = redis.Redis.from_url(redis_url)
    store = Store.open(db)
    svc = Service(store, default_catalog(), RedisPublisher(client))
    svc.create_workspace("acme", "Acme Inc")
    keys = {}
    for slug, kind, name in (("site", "web", "Acme website"), ("app", "ios", "Acme iOS"),
                             ("backend", "server", "Acme backend")):
        source, _ = svc.create_source("acme", slug, kind, name)
        keys[slug] = source.write_key
    token = create_token(svc, "acme", "write", "e2e")
    store.close()
    client.close()
    edge = start_edge(EDGE_ENV)
    port = free_port()
    env = {**__import__("os").environ, "PUBLISHER_DB": db, "REDIS_URL": redis_url,
           "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(port), **EDGE_ENV,
           "EDGE_HOST": "127.0.0.1", "EDGE_PORT": str(edge.port)}
    serve = Process("publisher", [sys.executable, "-m", "publisher.cli", "serve"], env=env,
                    cwd=ROOT, log_dir=tmp_path)
    serve.start(port)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser = Chromium(shots)
    try:
        yield {"app": f"http://127.0.0.1:{port}", "edge": edge.url, "keys": keys,
               "token": token, "browser": browser, "shots": shots}
    finally:
        browser.close()
        serve.stop()


def settings_doc(world: dict[str, Any], source: str,
                 until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The edge's settings document of a source, once ``until`` holds (the edge re-checks
    in instant mode; bounded wait)."""
    url = f"{world['edge']}/v1/projects/{world['keys'][source]}/settings"
    deadline = time.monotonic() + 10
    while True:
        reply = fetch(url)
        doc: dict[str, Any] = json.loads(reply.body) if reply.status == 200 else {}
        if doc and until(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"the edge never served the expected document: {doc}")
        time.sleep(0.1)


def integrations(doc: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = doc["integrations"]
    return found


def test_webapp_flows_in_chromium(world: dict[str, Any]) -> None:
    b: Chromium = world["browser"]
    app = world["app"]

    # -- sign in (keyboard alone) and pick the workspace --------------------------------------
    b.do("goto", url=app + "/")
    assert b.url == app + "/app/login"
    b.do("tabTo", sel="#token")
    b.do("fill", sel="#token", value=world["token"])
    b.shot("sign-in")
    b.do("press", key="Enter")
    assert b.url == app + "/app/"
    b.shot("pick-workspace")
    b.do("click", sel="a.card:has-text('Acme Inc')")

    # -- from the catalog: search, click, Configure, Confirm Source, settings ---------------------
    b.do("click", sel="nav >> text=Catalog")
    assert "Destinations" in b.text(".tabs")
    b.do("fill", sel="#q", value="amplitude")
    b.do("click", sel="form.search button")
    panels = b.do("count", sel="li.result")
    assert panels >= 2  # Amplitude and Amplitude (Actions): each panel says what it is
    assert b.do("count", sel="li.result dt:text-is('Modes')") == panels
    b.shot("catalog-search")
    b.do("click", sel="a.card:has(h2:text-is('Amplitude'))")
    b.do("click", sel="text=Configure Amplitude")
    b.do("check", sel="#source-site")
    b.do("check", sel="#mode-DEVICE")
    b.shot("select-source")
    b.do("click", sel="button:text-is('Confirm Source')")
    assert "/app/w/acme/s/site/d/amplitude" in b.url
    assert "(required)" in b.text("label[for='s.apiKey']")
    b.do("fill", sel="#s\\.apiKey", value="amp-browser-key")
    b.do("click", sel="button:text-is('Save Changes')")
    b.do("click", sel="button.switch")
    assert b.text("#enabled-h") == "Enabled"
    b.shot("settings-page")
    doc = settings_doc(world, "site", lambda d: "Amplitude" in integrations(d))
    assert integrations(doc)["Amplitude"]["apiKey"] == "amp-browser-key"

    # -- from a source: Add Destination, search, click, Configure, the same settings page ---------
    b.do("click", sel=".crumbs >> text=Acme website")
    b.do("click", sel="text=Add Destination")
    b.do("fill", sel="#q", value="mixpanel")
    b.do("click", sel="form.search button")
    b.do("click", sel="a.card:has(h2:text-is('Mixpanel (Legacy)'))")
    assert b.do("count", sel="input[name=source]") == 0  # no source step
    b.do("check", sel="#mode-DEVICE")
    b.do("click", sel="button:text-is('Configure')")
    assert "/app/w/acme/s/site/d/mixpanel-legacy" in b.url
    b.do("fill", sel="#s\\.token", value="mixpanel-token-1")
    b.do("click", sel="button:text-is('Save Changes')")
    b.do("click", sel="button.switch")
    b.shot("source-flow-settings")
    doc = settings_doc(world, "site", lambda d: "Mixpanel" in integrations(d))
    assert integrations(doc)["Mixpanel"]["token"] == "mixpanel-token-1"

    # -- a second Amplitude, its settings copied; device mode no longer offered --------------------
    b.do("goto", url=app + "/app/w/acme/s/site/add/amplitude")
    assert b.do("count", sel="#mode-DEVICE") == 0  # one device-mode instance per source
    b.do("fill", sel="#display_name", value="Amplitude EU")
    b.do("select", sel="#copy_from", value="site/amplitude")
    b.shot("second-instance")
    b.do("click", sel="button:text-is('Configure')")
    assert "/d/amplitude-eu" in b.url
    assert b.do("attr", sel="#s\\.apiKey", name="value") == "amp-browser-key"
    b.do("click", sel="button.switch")
    assert b.text("#enabled-h") == "Enabled"
    # an enabled cloud-mode instance: its key is unbundled; the device-mode entry is the first's
    doc = settings_doc(world, "site", lambda d: "Amplitude" in integrations(d)[
        "Segment.io"].get("unbundledIntegrations", []))
    assert integrations(doc)["Amplitude"]["apiKey"] == "amp-browser-key"
    assert integrations(doc)["Segment.io"]["maybeBundledConfigIds"]["Amplitude"] == [
        "amplitude"]

    # -- where the rules forbid another instance, the option is not there -----------------------
    b.do("goto", url=app + "/app/w/acme/s/app/add/amplitude")
    b.do("click", sel="button:text-is('Configure')")
    b.do("fill", sel="#s\\.apiKey", value="amp-ios-key")
    b.do("click", sel="button:text-is('Save Changes')")
    b.do("goto", url=app + "/app/w/acme/s/app/add?q=amplitude")
    assert b.do("count", sel="a.card[href$='/s/app/add/amplitude']") == 0
    assert "single_instance_source" in b.text()
    b.shot("option-gone")
    b.do("goto", url=app + "/app/w/acme/catalog/amplitude/configure")
    assert b.do("count", sel="#source-app") == 0 and b.do("count", sel="#source-site") == 1
    b.do("goto", url=app + "/app/w/acme/s/backend/add/amplitude")
    assert b.do("count", sel="#mode-DEVICE") == 0 and b.do("count", sel="#mode-CLOUD") == 1

    # -- a filter on the device-mode Amplitude: an FQL error first, then a routing rule ----------
    b.do("goto", url=app + "/app/w/acme/s/site/d/amplitude")
    b.do("click", sel="text=Add Filter")
    b.do("fill", sel="#title", value="No test events")
    b.do("fill", sel="#if", value="event = = 'Test'")
    b.do("click", sel="button:text-is('Save Filter')")
    assert "position" in b.text("#err-if")
    assert b.do("eval", js="document.querySelector('#title').value") == "No test events"
    b.shot("filter-error")
    b.do("fill", sel="#if", value="event = 'Test'")
    b.do("click", sel="button:text-is('Save Filter')")
    assert "/d/amplitude" in b.url and "No test events" in b.text()
    assert "drop" in b.text("details pre")
    b.shot("filter-saved")
    doc = settings_doc(world, "site", lambda d: bool(
        d.get("middlewareSettings", {}).get("routingRules")))
    rule = doc["middlewareSettings"]["routingRules"][0]
    assert rule["destinationName"] == "Amplitude" and rule["matchers"][0]["type"] == "fql"

    # -- publishing: version, live-everywhere countdown, diff, roll back --------------------------
    b.do("click", sel=".crumbs >> text=Acme website")
    filtered = int(b.text("#current-version"))
    assert "live everywhere" in b.text("#publishing").lower() or " in " in b.text("#publishing")
    b.do("select", sel="#a", value=str(filtered - 1))
    b.do("select", sel="#b", value=str(filtered))
    b.do("click", sel="button:text-is('Show diff')")
    assert "routingRules" in b.text("pre.diff")
    b.shot("history-diff")
    b.do("click", sel=f"button[aria-label='Roll back to version {filtered - 1}']")
    assert int(b.text("#current-version")) == filtered + 1
    doc = settings_doc(world, "site", lambda d: not d.get("middlewareSettings", {}).get(
        "routingRules"))
    assert "Amplitude" in integrations(doc)
    served = json.loads(b.text("#bundle-json"))
    assert served == doc  # the page shows the exact document the edge serves
    b.shot("rolled-back")

    # -- 375 px wide: no horizontal scrolling --------------------------------------------------
    b.do("viewport", width=375, height=800)
    for url in ("/app/w/acme/s/site", "/app/w/acme/s/site/d/amplitude",
                "/app/w/acme/catalog?q=amp"):
        b.do("goto", url=app + url)
        width = b.do("eval", js="document.documentElement.scrollWidth")
        assert width <= 375, (url, width)
    b.shot("narrow")

    # -- every request went to this app; nothing was refused by the CSP -----------------------
    log = b.do("log")
    assert all(u.startswith((app + "/", "data:")) for u in log["requests"]), log["requests"]
    # (the console's "Failed to load resource" lines are the refusals the walk provoked)
    assert not [c for c in log["console"] if "Content Security Policy" in c
                or c.startswith("pageerror")], log["console"]
