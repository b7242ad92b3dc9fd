"""Tiny classic device-mode integration scripts, shaped like Segment's ``next-integrations``.

analytics-next loads ``{cdn}/next-integrations/integrations/<p>/<version>/<p>.dynamic.js.gz``
for every installable destination, then calls ``window['<p>Loader']()`` and instantiates
``window['<p>Integration']`` (``plugins/ajs-destination/loader.ts``). These stand-ins do
exactly that much and record their name in ``window.__e2eInitialized`` so the browser can
tell which destinations really initialized.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def path_name(integrations_key: str) -> str:
    """analytics-next's ``normalizeName``: lower case, first '.' dropped, spaces to '-'."""
    return "-".join(integrations_key.lower().replace(".", "", 1).split())


def script_url_path(integrations_key: str, version: str) -> str:
    """The path (below the CDN base) the library requests for this destination."""
    p = path_name(integrations_key)
    return f"/next-integrations/integrations/{p}/{version}/{p}.dynamic.js.gz"


def script_source(integrations_key: str) -> str:
    p = path_name(integrations_key)
    name = json.dumps(integrations_key)
    return f"""window[{json.dumps(p + "Deps")}] = [];
window[{json.dumps(p + "Loader")}] = function () {{
  function Integration(settings) {{ this.settings = settings; this.handlers = {{}}; }}
  Integration.prototype.name = {name};
  Integration.prototype.on = function (event, fn) {{
    (this.handlers[event] = this.handlers[event] || []).push(fn); return this;
  }};
  Integration.prototype.once = Integration.prototype.on;
  Integration.prototype.emit = function (event) {{
    (this.handlers[event] || []).forEach(function (fn) {{ fn(); }});
  }};
  Integration.prototype.loaded = function () {{ return true; }};
  Integration.prototype.initialize = function () {{
    (window.__e2eInitialized = window.__e2eInitialized || []).push({name});
    this.emit("initialize");
    this.emit("ready");
  }};
  window[{json.dumps(p + "Integration")}] = Integration;
}};
"""


def write_integration(assets_dir: Path, integrations_key: str, version: str) -> str:
    """Write the gzipped script where ``/next-integrations/`` maps to ``assets_dir``.

    Returns the URL path the browser will request.
    """
    url_path = script_url_path(integrations_key, version)
    target = assets_dir / url_path.removeprefix("/next-integrations/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(script_source(integrations_key).encode(), mtime=0))
    return url_path
