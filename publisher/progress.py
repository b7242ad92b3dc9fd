"""Progress of a run over every source (``republish --all``, ``publish --all``).

At a million sources such a run takes minutes. On a terminal it shows one line, redrawn in
place at most every ``interval`` seconds: sources done of the total, the rate so far and the
time left at that rate. Anywhere else (a log file, a pipe, a CI job) it writes nothing while
running and one summary line at the end, so a log holds no carriage returns or a line per
redraw. It writes to stderr: stdout keeps the command's result alone, for scripts.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

CLEAR_TO_END = "\x1b[K"  # erase what a longer earlier line left to the right


def count_sources(db_path: str) -> int:
    """How many sources the database holds, from a read-only connection of its own (0 when
    it cannot be read: the run itself then says why)."""
    try:
        conn = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)
    except (sqlite3.Error, ValueError):
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """Counts the sources a run has done and shows it (see the module docstring).

    ``total`` is counted before the run starts; sources created meanwhile may take the count
    past it, and the total then grows with it.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, *,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.25) -> None:
        self.label = label
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.interval = interval
        self.done = 0
        self.started = clock()
        self._drawn_at: float | None = None
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):  # closed, or not a file at all
            self.tty = False

    def step(self, count: int = 1) -> None:
        """``count`` more sources done; redraws the line when it is due."""
        self.done += count
        if self.tty:
            now = self.clock()
            if self._drawn_at is None or now - self._drawn_at >= self.interval:
                self._draw(now)

    def note(self, text: str) -> None:
        """A line of its own (a source that failed), printed above the progress line."""
        if self.tty and self._drawn_at is not None:
            self.stream.write("\r" + CLEAR_TO_END)
        self.stream.write(text + "\n")
        if self.tty and self._drawn_at is not None:
            self._draw(self.clock())
        else:
            self.stream.flush()

    def finish(self) -> None:
        """The summary: on a terminal it replaces the progress line; elsewhere it is the one
        line the run writes."""
        elapsed = self.clock() - self.started
        rate = f", {self.done / elapsed:,.0f}/s" if elapsed > 0 else ""
        line = (f"{self.label}: {self.done:,}/{max(self.total, self.done):,} sources in "
                f"{elapsed:,.1f} s{rate}")
        self.stream.write(("\r" + line + CLEAR_TO_END if self.tty else line) + "\n")
        self.stream.flush()

    def line(self, now: float) -> str:
        """The progress line at ``now``: done/total, percent, rate, time left."""
        total = max(self.total, self.done)
        elapsed = now - self.started
        text = f"{self.label}: {self.done:,}/{total:,} sources"
        if total:
            text += f" ({100 * self.done / total:.0f}%)"
        if elapsed > 0 and self.done:
            rate = self.done / elapsed
            text += f", {rate:,.0f}/s, {duration((total - self.done) / rate)} left"
        return text

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self.stream.write("\r" + self.line(now) + CLEAR_TO_END)
        self.stream.flush()
