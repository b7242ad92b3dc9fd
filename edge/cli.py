"""``settings-cdn-edge``: validate the settings, check the propagation budget, run uvicorn.

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

Serve settings bundles from Redis at GET /v1/projects/{writeKey}/settings.

  --help    show this text and exit
  --check   validate the settings and the propagation budget, print the policy, exit

Configuration is read from environment variables only:

"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + settings_table(), end="")
        return 0
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
