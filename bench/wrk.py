"""One bounded ``wrk`` run, pinned to the load core, with the CPU accounting around it.

The Lua scripts in ``bench/lua`` print one ``BENCH-RESULT {json}`` line from ``done()``;
this module parses it and adds what the noise check needs: how busy wrk, the server and
everything else on the two cores were during the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Proc, core_busy_ticks, pinned, require_tool

LUA_DIR = Path(__file__).parent / "lua"
MARKER = "BENCH-RESULT "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    status_errors: int  # responses that were not 2xx or 3xx
    socket_errors: int  # connect + read + write + timeout
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_cpu: float  # share of one core wrk used
    server_cpu: float  # share of one core the server (and its children) used
    server_core_busy: float  # share of the server core busy, whoever used it
    load_core_busy: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bytes_per_request(self) -> float:
        return self.bytes / self.requests if self.requests else 0.0


def parse_output(text: str) -> dict[str, object]:
    for line in text.splitlines():
        if line.startswith(MARKER):
            data: dict[str, object] = json.loads(line[len(MARKER):])
            return data
    raise RuntimeError(f"wrk printed no {MARKER.strip()} line; its output was:\n{text[-2000:]}")


def run(url: str, script: str, script_args: Sequence[str], *, connections: int,
        duration: float, core: int | None, server: Proc | None,
        server_core: int | None, threads: int = 1, timeout_s: float = 2.0,
        marker: Path | None = None) -> WrkResult:
    """Run wrk for ``duration`` seconds (killed after ``duration + 60``) and measure it.

    With ``marker`` (a file the script creates after one pass over its keys) wrk is
    interrupted shortly after the file appears: SIGINT makes it stop and report early.
    """
    wrk = require_tool("wrk", "apt-get install wrk (Debian package)")
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            f"--timeout={timeout_s:g}s", "-s", str(LUA_DIR / script), url, "--",
            *script_args]
    server_cpu0 = server.cpu_seconds() if server else 0.0
    s_busy0, s_total0 = core_busy_ticks(server_core)
    l_busy0, l_total0 = core_busy_ticks(core)
    started = time.monotonic()
    proc = subprocess.Popen(pinned(argv, core), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    limit = duration + 60

    def signal_wrk(sig: int) -> None:
        # os.kill, not Popen.send_signal/kill: those poll() first, and a poll() that finds wrk
        # just exited reaps it, leaving os.wait4 below a ChildProcessError (seen once). Until
        # wait4 reaps it, the pid stays wrk's (a zombie at worst), so signalling it is safe.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    watchdog = threading.Timer(limit, signal_wrk, (signal.SIGKILL,))
    watchdog.start()
    chunks: list[bytes] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: chunks.append(stdout.read()), daemon=True)
    reader.start()
    try:
        if marker is not None:
            while reader.is_alive() and not marker.exists():
                time.sleep(0.05)
            if reader.is_alive():
                time.sleep(0.3)  # let the requests in flight finish
                signal_wrk(signal.SIGINT)
        reader.join()
        stdout.close()
        # Reap it ourselves: wait4 also returns the CPU time wrk used.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        watchdog.cancel()
    out = b"".join(chunks)
    wall = time.monotonic() - started
    wrk_cpu = usage.ru_utime + usage.ru_stime
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        if wall >= limit:
            raise RuntimeError(f"wrk did not finish within {limit:.0f}s: {argv}")
        raise RuntimeError(f"wrk exited with {proc.returncode}: {argv}\n{text[-2000:]}")
    server_cpu = (server.cpu_seconds() - server_cpu0) if server else 0.0
    s_busy1, s_total1 = core_busy_ticks(server_core)
    l_busy1, l_total1 = core_busy_ticks(core)
    data = parse_output(text)
    errors = data["errors"]
    latency = data["latency_us"]
    assert isinstance(errors, dict) and isinstance(latency, dict)
    seconds = int(str(data["duration_us"])) / 1e6
    return WrkResult(
        requests=int(str(data["requests"])),
        seconds=seconds,
        bytes=int(str(data["bytes"])),
        status_errors=int(errors["status"]),
        socket_errors=int(errors["connect"]) + int(errors["read"]) + int(errors["write"])
        + int(errors["timeout"]),
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        wrk_cpu=wrk_cpu / wall if wall else 0.0,
        server_cpu=server_cpu / seconds if seconds else 0.0,
        server_core_busy=_share(s_busy1 - s_busy0, s_total1 - s_total0, server_core),
        load_core_busy=_share(l_busy1 - l_busy0, l_total1 - l_total0, core),
    )


def _share(busy: int, total: int, core: int | None) -> float:
    if total <= 0:
        return 0.0
    share = busy / total
    return share * (os.cpu_count() or 1) if core is None else share
