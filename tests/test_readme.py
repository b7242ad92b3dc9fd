"""README.md and docs/ stay true to the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.readme_sync import DOCUMENTS, README, ROOT, render_document


@pytest.mark.parametrize("path", list(DOCUMENTS), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_blocks_match_the_code(path: Path) -> None:
    """The generated blocks (settings tables, propagation example) are what the code says."""
    current, wanted = render_document(path)

    assert wanted == current, f"{path.relative_to(ROOT)} is out of date: run scripts/sync-readme"


def test_readme_shows_the_two_commands() -> None:
    """The README's first two commands are scripts/run and scripts/test."""
    text = README.read_text()

    assert text.index("scripts/run") < text.index("scripts/test")
