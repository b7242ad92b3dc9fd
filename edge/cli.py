"""``settings-cdn-edge``: validate the settings, check the propagation budget, run uvicorn;
``settings-cdn-edge assets sync`` fills the asset store (edge/mirror_sync.py).

Every option is an environment variable (``--help`` lists them with defaults). A bad value
or a worst-case propagation above the budget exits with status 2 and a message naming the
variables at fault, before anything binds a port.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from edge import propagation
from edge.settings import EdgeSettings, SettingsError, settings_table

USAGE = """\
usage: settings-cdn-edge [--help] [--check]
       settings-cdn-edge assets sync

Serve settings bundles from Redis at GET /v1/projects/{writeKey}/settings.

  --help        show this text and exit
  --check       validate the settings and the propagation budget, print the policy, exit
  assets sync   fetch into EDGE_ASSETS_DIR, from EDGE_ASSETS_UPSTREAM, every destination
                script the bundles published in Redis name and the store lacks; exit 1
                when one is missing upstream or cannot be fetched

Configuration is read from environment variables only:

"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + settings_table(), end="")
        return 0
    if args[:1] == ["assets"]:
        return _assets(args[1:])
    unknown = [a for a in args if a != "--check"]
    if unknown:
        print(f"settings-cdn-edge: unknown argument {unknown[0]!r} (see --help)", file=sys.stderr)
        return 2
    try:
        settings = EdgeSettings.from_env()
        propagation.check_budget(settings)
    except (SettingsError, propagation.BudgetExceeded) as exc:
        print(f"settings-cdn-edge: {exc}", file=sys.stderr)
        return 2
    if "--check" in args:
        import orjson

        print(orjson.dumps(propagation.policy(settings), option=orjson.OPT_INDENT_2).decode())
        return 0
    import uvicorn

    from edge.metrics import share_between_workers

    share_between_workers(settings.workers)  # each worker's /metrics then covers them all
    uvicorn.run(
        "edge.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # uvicorn's httptools protocol, answering GET/HEAD of the settings route itself
        # (edge/server.py, EDGE_FAST_PATH).
        http="edge.server:EdgeHttpProtocol",
        lifespan="on",
        access_log=False,
        server_header=False,
        # Closes idle keep-alive connections; edge/server.py keeps busy ones open.
        timeout_keep_alive=settings.keep_alive_timeout,
        # The edge never reads the client address: skip uvicorn's X-Forwarded-* middleware.
        proxy_headers=False,
        log_level=settings.log_level,
    )
    return 0


def _assets(args: list[str]) -> int:
    if args != ["sync"]:
        print("settings-cdn-edge: usage: settings-cdn-edge assets sync (see --help)",
              file=sys.stderr)
        return 2
    try:
        settings = EdgeSettings.from_env()
    except SettingsError as exc:
        print(f"settings-cdn-edge: {exc}", file=sys.stderr)
        return 2
    from edge import mirror_sync

    return mirror_sync.main(settings)
