"""The Python side of ``driver.mjs``: Debian's Chromium, driven one page visit at a time.

The driver keeps one browser context for its whole life, so a second visit sees the
browser HTTP cache the first one filled — the last cache layer of the propagation model.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from typing import Any

from tests.e2e.servers import CHROMIUM, DRIVER, E2E_DIR, NODE_MODULES, require_program
from tests.services import stop_process


def require_browser_side() -> str:
    """The node binary, after checking Chromium and the npm packages are installed."""
    require_program(CHROMIUM, "install Debian's Chromium: apt-get install chromium "
                              "(or set CHROMIUM_BIN)")
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found: apt-get install nodejs npm")
    if not (NODE_MODULES / "playwright-core").is_dir() or not (
        NODE_MODULES / "@segment" / "analytics-next"
    ).is_dir():
        raise RuntimeError("tests/e2e/node_modules is missing: run `bash tests/e2e/setup.sh`")
    return node



def close_driver(proc: subprocess.Popen[str], pumps: list[threading.Thread]) -> None:
    """Ask a node driver to close its browser, then stop it (by PID) if it does not exit;
    wait for the threads reading its output and close its pipes."""
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.write('{"cmd": "close"}\n')
            proc.stdin.flush()
            proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            # SIGTERM: playwright closes the browser it launched, then node exits.
            stop_process(proc)
    for pump in pumps:
        pump.join(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()

class Browser:
    """A running ``driver.mjs``; every answer is awaited with a bound."""

    def __init__(self, timeout: float = 60.0) -> None:
        node = require_browser_side()
        self.proc = subprocess.Popen(
            [node, str(DRIVER)],
            cwd=E2E_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.pumps = [threading.Thread(target=self._pump, daemon=True),
                      threading.Thread(target=self._pump_stderr, daemon=True)]
        for pump in self.pumps:
            pump.start()
        hello = self._read(timeout)
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"Chromium did not start: {hello}")
        self.version = str(hello.get("version"))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"driver.mjs gave no answer within {timeout}s") from None
        if line is None:
            raise RuntimeError("driver.mjs exited:\n" + "".join(self.stderr[-40:]))
        answer: dict[str, Any] = json.loads(line)
        return answer

    def visit(self, url: str, timeout: float = 20.0,
              result_var: str = "__e2eResult") -> dict[str, Any]:
        """Load ``url`` and return the page's outcome (``window[result_var]``) and every
        request it made."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": "visit", "url": url, "resultVar": result_var,
                                          "timeoutMs": int(timeout * 1000)}) + "\n")
        self.proc.stdin.flush()
        answer = self._read(timeout + 10)
        if not answer.get("ok"):
            raise RuntimeError(f"visit of {url} failed in the driver: {answer}")
        return answer

    def close(self) -> None:
        close_driver(self.proc, self.pumps)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
