"""``settings-cdn-publisher``: the publisher's command line.

Exit status: 0 done; 2 bad input or bad settings (nothing was written); 1 the change was
accepted but could not be published yet (Redis unreachable: run ``republish --all`` later),
or another runtime failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

from publisher.errors import PublisherError
from publisher.progress import Progress, count_sources
from publisher.publish import PublishResult
from publisher.redis_client import describe
from publisher.service import Service, build_service
from publisher.settings import PublisherSettings, SettingsError, settings_table

EPILOG = """\
SOURCE is WORKSPACE/SOURCE (slugs) or a write key.

settings (environment variables; --db and --redis-url override the first two):
""" + settings_table() + """

The edge's EDGE_* settings (settings-cdn-edge --help) are read too: visible_everywhere_by is
published_at + the edge's worst-case propagation time. Give the publisher the edge's values; a
bad one stops it as it stops the edge (exit 2); the budget is the edge's to check.
"""


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _report(label: str, result: PublishResult) -> int:
    state = ("new version" if result.changed else "unchanged")
    line = f"{label}: v{result.version} {state} (revision {result.revision}, etag {result.etag})"
    if result.visible_everywhere_by is not None and result.changed:
        line += f", visible everywhere by {result.to_dict()['visible_everywhere_by']}"
    print(line)
    if result.pending:
        print(f"{label}: NOT PUBLISHED YET: {result.error}", file=sys.stderr)
        return 1
    return 0


def cmd_apply(svc: Service, args: argparse.Namespace, settings: PublisherSettings) -> int:
    from publisher import workspace_file

    decl = workspace_file.parse(workspace_file.read(Path(args.file), settings.max_file_bytes))
    status = 0
    for slug, result in workspace_file.apply(svc, decl):
        status |= _report(f"{decl.slug}/{slug}", result)
    return status


def cmd_publish(svc: Service, args: argparse.Namespace, settings: PublisherSettings) -> int:
    if args.source:
        source = svc.resolve_source(args.source)
        return _report(source.slug, svc.publish(source))
    count = new = failed = 0
    progress = Progress("publish --all", count_sources(settings.db_path))
    for source, result, why in svc.publish_all():
        count += 1
        progress.step()
        if why:  # left as it is: rolled back (a result), or not compiled (none)
            failed += result is None
            progress.note(f"{source.write_key} ({source.slug}): {why}")
        elif result is not None and result.changed:
            new += 1
            if result.pending:
                failed += 1
                progress.note(f"{source.write_key}: NOT PUBLISHED YET: {result.error}")
    progress.finish()
    print(f"compiled {count} sources: {new} new versions ({failed} not published yet or not "
          "compiled)")
    return 1 if failed else 0


def cmd_republish(svc: Service, args: argparse.Namespace, settings: PublisherSettings) -> int:
    count = failed = 0
    progress = Progress("republish --all", count_sources(settings.db_path))
    for result in svc.republish_all():
        count += 1
        progress.step()
        if result.pending:
            failed += 1
            progress.note(f"{result.write_key}: NOT PUBLISHED: {result.error}")
    progress.finish()
    print(f"republished {count - failed} of {count} sources")
    return 1 if failed else 0


def cmd_rollback(svc: Service, args: argparse.Namespace, _: PublisherSettings) -> int:
    source = svc.resolve_source(args.source)
    return _report(source.slug, svc.rollback(source, args.version))


def cmd_show(svc: Service, args: argparse.Namespace, _: PublisherSettings) -> int:
    _print(svc.status(svc.resolve_source(args.source)))
    return 0


def cmd_diff(svc: Service, args: argparse.Namespace, _: PublisherSettings) -> int:
    text = svc.diff(svc.resolve_source(args.source))
    sys.stdout.write(text or "no changes: publishing now would not make a new version\n")
    return 0


def cmd_sources(svc: Service, args: argparse.Namespace, _: PublisherSettings) -> int:
    workspaces = ([svc.workspace(args.workspace)] if args.workspace is not None
                  else svc.store.list_workspaces())
    rows = []
    for ws in workspaces:
        for src in svc.store.list_sources(ws.id):
            rows.append({"workspace": ws.slug, "source": src.slug, "type": src.type,
                         "write_key": src.write_key, "revision": src.revision})
    _print(rows)
    return 0


def cmd_workspace(svc: Service, args: argparse.Namespace, _: PublisherSettings) -> int:
    if args.action == "create":
        ws = svc.create_workspace(args.slug, args.name)
        print(f"created workspace {ws.slug}")
    else:
        _print([{"slug": w.slug, "name": w.name} for w in svc.store.list_workspaces()])
    return 0


def cmd_token(svc: Service, args: argparse.Namespace, _: PublisherSettings) -> int:
    from publisher.api.auth import create_token

    token = create_token(svc, args.workspace, args.scope, args.name)
    print(token)  # stdout carries the token alone, for scripts
    return 0


def cmd_serve(svc: Service, args: argparse.Namespace, settings: PublisherSettings) -> int:
    import uvicorn

    from publisher.api.app import create_app

    uvicorn.run(create_app(settings, service=svc), host=settings.host, port=settings.port,
                log_level="warning", access_log=False)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="settings-cdn-publisher",
        description="Validate, compile and publish settings bundles; serve the Config API.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", help="SQLite database (default: $PUBLISHER_DB)")
    p.add_argument("--redis-url", help="Redis URL (default: $REDIS_URL)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    add("apply", cmd_apply, "apply a declarative workspace file (all-or-nothing, idempotent)"
        ).add_argument("file")
    pub = add("publish", cmd_publish, "compile a source; publish a new version if it changed")
    pub.add_argument("source", nargs="?")
    pub.add_argument("--all", action="store_true",
                     help="every source (after a change of the catalog or PUBLISHER_API_HOST); "
                          "one rolled back is left as it is")
    add("republish", cmd_republish, "rebuild Redis from SQLite for every source"
        ).add_argument("--all", action="store_true", help="every source (required)")
    rb = add("rollback", cmd_rollback, "serve the bytes of an earlier kept version of a source "
             "again, published as a new version (history only grows)")
    rb.add_argument("source")
    rb.add_argument("version", type=_version)
    add("show", cmd_show, "current version, ETag, publish time, visible-everywhere time"
        ).add_argument("source")
    add("diff", cmd_diff, "what publishing the source now would change").add_argument("source")
    add("sources", cmd_sources, "list sources and their write keys (JSON)"
        ).add_argument("workspace", nargs="?")
    ws = add("workspace", cmd_workspace, "create or list workspaces")
    ws.add_argument("action", choices=["create", "list"])
    ws.add_argument("slug", nargs="?")
    ws.add_argument("--name")
    tk = add("token", cmd_token, "create a Config API token for one workspace (printed once)")
    tk.add_argument("action", choices=["create"])
    tk.add_argument("workspace")
    tk.add_argument("--scope", choices=["read", "write"], required=True)
    tk.add_argument("--name", default="")
    add("serve", cmd_serve, "run the Config API and the webhook")
    return p


def _version(text: str) -> int:
    """A version number argument: a whole number SQLite can hold (argparse names it)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) < 2**63:
        raise argparse.ArgumentTypeError(f"a version is a whole number from 1, got {text!r}")
    return int(text)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What argparse cannot say: arguments that one action needs and another does not take."""
    if args.command == "republish" and not args.all:
        return "republish needs --all (to publish one source: `publish SOURCE`)"
    if args.command == "publish" and args.all == bool(args.source):
        return "publish needs a SOURCE or --all"
    if args.command == "workspace" and args.action == "create" and not args.slug:
        return "workspace create needs a SLUG"
    if args.command == "workspace" and args.action == "list" and (args.slug is not None
                                                                  or args.name is not None):
        return "workspace list takes no SLUG or --name"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    for arg in sys.argv[1:] if argv is None else argv:
        try:
            arg.encode()
        except UnicodeEncodeError:  # bytes the locale could not decode (surrogate escapes)
            print(f"settings-cdn-publisher: argument {arg.encode(errors='replace')!r} is not "
                  "valid UTF-8", file=sys.stderr)
            return 2
    args = parser().parse_args(argv)
    problem = _usage_problem(args)
    if problem:  # before the database is opened: bad input creates no file either
        print(f"settings-cdn-publisher: {problem}", file=sys.stderr)
        return 2
    env_overrides = {}  # an empty --db or --redis-url is refused, not read as "not given"
    if args.db is not None:
        env_overrides["PUBLISHER_DB"] = args.db
    if args.redis_url is not None:
        env_overrides["REDIS_URL"] = args.redis_url
    try:
        import os

        settings = PublisherSettings.from_env({**os.environ, **env_overrides})
        needs_redis = args.command not in ("diff", "sources", "workspace", "token")
        svc = build_service(settings, with_redis=needs_redis)
    except (SettingsError, ValueError) as exc:
        print(f"settings-cdn-publisher: {exc}", file=sys.stderr)
        return 2
    except PublisherError as exc:  # the database cannot be opened
        print(f"settings-cdn-publisher: {exc.message} (PUBLISHER_DB / --db) [{exc.code}]",
              file=sys.stderr)
        return 2
    try:
        status: int = args.func(svc, args, settings)
        return status
    except PublisherError as exc:
        print(f"settings-cdn-publisher: {exc.message} [{exc.code}]", file=sys.stderr)
        return 2 if 400 <= exc.http_status < 500 else 1
    except redis.RedisError as exc:
        print(f"settings-cdn-publisher: Redis at {describe(settings)}: {exc}",
              file=sys.stderr)
        return 1
    finally:
        svc.store.close()


if __name__ == "__main__":
    sys.exit(main())
