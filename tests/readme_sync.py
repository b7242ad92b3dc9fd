"""The parts of docs/ generated from code, and the check that they are current.

Each ``<!-- name -->`` … ``<!-- /name -->`` block of a document in ``DOCUMENTS`` is owned by a
function here. ``python -m tests.readme_sync --write`` rewrites them; ``tests/test_readme.py``
compares.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PROPAGATION = ROOT / "docs" / "PROPAGATION.md"
SETTINGS = ROOT / "docs" / "SETTINGS.md"


def publisher_settings() -> str:
    from publisher.settings import settings_table

    return settings_table()


def edge_settings() -> str:
    from edge.settings import settings_table

    return settings_table()


def propagation() -> str:
    from edge.propagation import policy
    from edge.settings import EdgeSettings

    p = policy(EdgeSettings.from_env({}))
    t, life = p["terms"], p["lifetimes"]
    return "\n".join([
        "A published change reaches a page only after every cache between Redis and the page",
        "has let go of the old bundle. The edge names each layer's lifetime and computes the",
        "worst case (`edge/propagation.py`; `GET /v1/propagation` shows the live policy):",
        "",
        "```text",
        p["formula"],
        "```",
        "",
        "With the defaults (computed by the program):",
        "",
        "| layer | lifetime | term |",
        "|---|---|---|",
        f"| edge in-process cache | `EDGE_REFRESH_INTERVAL` = {life['edge_refresh_interval']:g} s "
        f"| E = {t['edge']:g} s |",
        f"| shared caches (CDN, nginx) | `EDGE_S_MAXAGE` = {life['s_maxage']} s + "
        f"`EDGE_STALE_WHILE_REVALIDATE` = {life['stale_while_revalidate']} s "
        f"| S = {t['shared']} s |",
        f"| browser cache | `EDGE_MAX_AGE` = {life['max_age']} s + "
        f"`EDGE_STALE_WHILE_REVALIDATE` | B = {t['browser']} s |",
        f"| **worst case** | | **{p['worst_case_seconds']} s** "
        f"(budget {p['budget_seconds']} s) |",
        "",
        "The edge refuses to start when the worst case exceeds `EDGE_PROPAGATION_BUDGET`",
        "(default 30 minutes) and names the settings at fault. Every publish reports",
        "`visible_everywhere_by` = `published_at` + the worst case (CLI `show`, the Config API's",
        "publish status). `EDGE_INSTANT=true` subscribes the edge to `sc:published` and re-checks",
        "a replaced bundle at once (its old copy kept only as a fallback should Redis fail), so",
        "E = 0. The edge sends `Age` (seconds since it last verified",
        "its copy against Redis); with `EDGE_CACHES_HONOUR_AGE=true` (every cache honours `Age`,",
        "RFC 9111 §4.2.3) the terms no longer add up and the bound is their maximum.",
        f"`stale-if-error` ({life['stale_if_error']} s) is outside the bound: it applies only "
        "while",
        "an origin fails. A bundle's 200 carries `Surrogate-Key: <writeKey>` (a 304 or 404",
        "does not), so a CDN that supports",
        "surrogate keys can purge one source after a publish (e.g. a hook that calls the CDN's",
        "purge-by-key API with the write key from the `sc:published` message).",
    ])


BLOCKS: dict[str, Callable[[], str]] = {
    "settings:publisher": publisher_settings,
    "settings:edge": edge_settings,
    "propagation": propagation,
}
# Which blocks each document holds (each block lives in exactly one).
DOCUMENTS: dict[Path, tuple[str, ...]] = {
    SETTINGS: ("settings:publisher", "settings:edge"),
    PROPAGATION: ("propagation",),
}


def _literally(block: str) -> Callable[[re.Match[str]], str]:
    """A replacement that inserts ``block`` as it is (a string would expand its backslashes)."""
    return lambda _match: block


def render(text: str, names: tuple[str, ...] = DOCUMENTS[SETTINGS],
           where: str = "docs/SETTINGS.md") -> str:
    for name in names:
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        block = f"{start}\n{BLOCKS[name]()}\n{end}"
        pattern = re.compile(re.escape(start) + r"(?:.*?" + re.escape(end) + r")?", re.S)
        text, n = pattern.subn(_literally(block), text, count=1)
        if n != 1:
            raise SystemExit(f"{where} has no {start} marker")
    return text


def render_document(path: Path) -> tuple[str, str]:
    """``(current, wanted)`` text of one document in ``DOCUMENTS``."""
    current = path.read_text()
    return current, render(current, DOCUMENTS[path], str(path.relative_to(ROOT)))


if __name__ == "__main__":
    for path in DOCUMENTS:
        current, wanted = render_document(path)
        if "--write" in sys.argv:
            if wanted != current:
                path.write_text(wanted)
        elif wanted != current:
            raise SystemExit(f"{path.relative_to(ROOT)} is out of date: run scripts/sync-readme")
