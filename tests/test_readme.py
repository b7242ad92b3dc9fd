"""README.md stays true to the code."""

from __future__ import annotations

from tests.readme_sync import README, render


def test_generated_readme_blocks_match_the_code() -> None:
    """The settings tables and the propagation example in README.md are what the code says."""
    current = README.read_text()

    assert render(current) == current, "README.md is out of date: run scripts/sync-readme"


def test_readme_shows_the_two_commands() -> None:
    """The README's first two commands are scripts/run and scripts/test."""
    text = README.read_text()

    assert text.index("scripts/run") < text.index("scripts/test")
