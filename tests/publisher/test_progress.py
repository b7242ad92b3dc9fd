"""Progress of ``republish --all`` and ``publish --all``: one redrawn line on a terminal, one
summary line anywhere else."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from publisher.cli import main
from publisher.progress import Progress, count_sources, duration

EXAMPLE = Path(__file__).parents[2] / "examples" / "workspace.json"
SUMMARY = re.compile(r"^(re)?publish --all: 3/3 sources in \d[\d,]*\.\d s(, [\d,]+/s)?$")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def terminal() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A pseudo-terminal: its reading end, and its writing end as a text stream."""
    master, slave = pty.openpty()
    stream = open(slave, "w", encoding="utf-8", closefd=True)
    try:
        yield master, stream
    finally:
        stream.close()
        os.close(master)


def read_all(master: int, until: bytes = b"", timeout: float = 10.0) -> str:
    """What the terminal shows so far (or, with ``until``, once it appeared)."""
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout if until not in out else 0.05)
        if not ready:
            return out.decode()
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the writing end closed
            return out.decode()
        if not chunk:
            return out.decode()
        out += chunk


def test_on_a_terminal_one_line_is_redrawn_with_done_total_rate_and_time_left(
        terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = terminal
    clock = Clock()
    progress = Progress("republish --all", 1_000, stream, clock=clock, interval=0.25)
    assert progress.tty

    # When 100 sources are done in the first second, then 400 more in the next
    clock.now += 1.0
    progress.step(100)
    clock.now += 0.1  # not due yet: no redraw
    progress.step(1)
    clock.now += 0.9
    progress.step(399)
    progress.finish()

    # Then the terminal got redraws of one line, each starting at the line's start
    shown = read_all(master, until=b"\n")
    assert shown.count("\n") == 1 and shown.endswith("\n")
    redraws = [part.replace("\x1b[K", "") for part in shown.rstrip("\r\n").split("\r") if part]
    assert redraws[:2] == [
        "republish --all: 100/1,000 sources (10%), 100/s, 9s left",
        "republish --all: 500/1,000 sources (50%), 250/s, 2s left",
    ]
    assert redraws[2] == "republish --all: 500/1,000 sources in 2.0 s, 250/s"
    assert len(redraws) == 3  # the step 0.1 s after a redraw drew nothing


def test_elsewhere_nothing_while_running_and_one_summary_line() -> None:
    stream = io.StringIO()
    clock = Clock()
    progress = Progress("publish --all", 2_000, stream, clock=clock)
    assert not progress.tty

    for _ in range(2_000):
        clock.now += 0.01
        progress.step()
    assert stream.getvalue() == ""
    progress.finish()

    assert stream.getvalue() == "publish --all: 2,000/2,000 sources in 20.0 s, 100/s\n"


def test_a_note_goes_above_the_progress_line_on_a_terminal(
        terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = terminal
    clock = Clock()
    progress = Progress("republish --all", 10, stream, clock=clock)
    clock.now += 1
    progress.step(5)

    progress.note("abc: NOT PUBLISHED: redis down")

    shown = read_all(master, until=b"left")
    # the line is erased, the note printed on its own line, the progress line drawn again
    assert "\r\x1b[Kabc: NOT PUBLISHED: redis down\r\n\rrepublish --all: 5/10 sources" in shown


def test_sources_created_during_the_run_grow_the_total() -> None:
    progress = Progress("publish --all", 2, io.StringIO(), clock=Clock())
    progress.step(3)
    assert progress.line(progress.started + 1).startswith("publish --all: 3/3 sources (100%)")


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (59.4, "59s"), (65, "1m05s"),
                                               (3725, "1h02m")])
def test_time_left_reads_short(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_counting_a_missing_database_is_zero(tmp_path: Path) -> None:
    assert count_sources(str(tmp_path / "none.db")) == 0
    assert not (tmp_path / "none.db").exists()


@pytest.fixture
def applied(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example workspace's three sources, applied and published."""
    db = tmp_path / "db.sqlite"
    monkeypatch.setenv("PUBLISHER_DB", str(db))
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["apply", str(EXAMPLE)]) == 0
    return db


@pytest.mark.parametrize("argv", [["republish", "--all"], ["publish", "--all"]])
def test_the_commands_write_one_summary_line_when_stderr_is_not_a_terminal(
        applied: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()

    assert main(argv) == 0

    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line] == [
        line for line in captured.err.splitlines() if SUMMARY.match(line)]
    assert len(captured.err.splitlines()) == 1 and "\r" not in captured.err
    assert "\r" not in captured.out  # stdout keeps the result alone


def test_republish_shows_its_progress_line_on_a_terminal(
        applied: Path, terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = terminal
    # the real command, its stderr a terminal, its stdout a pipe
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from publisher.cli import main; sys.exit(main())",
         "republish", "--all"],
        stdout=subprocess.PIPE, stderr=stream, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    stream.close()
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    shown = read_all(master, until=b"\n")

    assert proc.returncode == 0
    assert out.decode() == "republished 3 of 3 sources\n"
    assert "\rrepublish --all: 1/3 sources (33%)" in shown  # the first step draws at once
    final = shown.rstrip("\r\n").split("\r")[-1].replace("\x1b[K", "")
    assert SUMMARY.match(final), shown
    assert shown.count("\n") == 1
