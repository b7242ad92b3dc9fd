"""Child processes the bench owns: started pinned to a core, measured, and stopped by PID.

Every server binds 127.0.0.1 on a free port. ``taskset -c <core>`` execs the program, so the
PID we hold is the server's own and stopping it never touches anything we did not start.
CPU time is read from ``/proc`` so the noise check can tell a saturated load generator from
a saturated server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None,
                  name: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening "
                               f"on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{name}: nothing listens on 127.0.0.1:{port} after {timeout}s")


def require_tool(name: str, hint: str) -> str:
    """Absolute path of a program on PATH, or a failure that says how to get it."""
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found on PATH: {hint}")
    return found


def cores() -> tuple[int | None, int | None]:
    """(server core, load core): 0 and 1 when the machine has two or more, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        return available[0], available[1]
    return None, None


def pinned(argv: Sequence[str], core: int | None) -> list[str]:
    if core is None:
        return list(argv)
    return [require_tool("taskset", "apt-get install util-linux"), "-c", str(core), *argv]


def _proc_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def run_state(pid: int) -> str:
    """The kernel's state letter of a process (R, S, D, T stopped, ...); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            kids.extend(int(k) for k in text)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live children (nginx master + worker)."""
    total = _proc_ticks(pid) + sum(_proc_ticks(k) for k in _children(pid))
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def core_busy_ticks(core: int | None) -> tuple[int, int]:
    """(busy, total) ticks of one core (or of all cores) from /proc/stat, steal counted busy."""
    label = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == label:
            values = [int(v) for v in parts[1:]]
            idle = values[3] + values[4]  # idle + iowait
            return sum(values[:8]) - idle, sum(values[:8])
    raise RuntimeError(f"{label} missing from /proc/stat")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    paused: bool = False  # SIGSTOPped by Processes.pause

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)


@dataclass
class Processes:
    """Every process the bench started; ``stop_all`` stops them by PID, newest first."""

    logdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], *, port: int, core: int | None,
              env: Mapping[str, str] | None = None, timeout: float = 20.0,
              wait: bool = True) -> Proc:
        log = self.logdir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        with log.open("ab") as out:
            popen = subprocess.Popen(pinned(argv, core), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=full_env)
        proc = Proc(name=name, popen=popen, port=port, log=log)
        self.procs.append(proc)
        if wait:
            try:
                wait_for_port(port, timeout, popen, name)
            except RuntimeError as exc:
                tail = log.read_text(errors="replace")[-2000:]
                self.stop(proc)
                raise RuntimeError(f"{exc}\n--- {log} ---\n{tail}") from None
        return proc

    def pause(self, proc: Proc) -> None:
        """Freeze a process this bench started (SIGSTOP): it keeps its sockets, answers
        nothing, and the kernel still accepts connections to its listening port."""
        if proc not in self.procs:
            raise ValueError(f"{proc.name} (pid {proc.pid}) is not a process of this bench")
        proc.popen.send_signal(signal.SIGSTOP)
        proc.paused = True

    def resume(self, proc: Proc) -> None:
        if proc.paused and proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGCONT)
        proc.paused = False

    def stop(self, proc: Proc, sig: int = signal.SIGTERM) -> None:
        if proc.popen.poll() is None:
            self.resume(proc)  # a frozen process would not act on the signal
            proc.popen.send_signal(sig)
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)
