"""``python -m bench`` (what ``bench/run`` runs): parse options, run, print and keep the table."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

from bench import report
from bench.context import PHASES, BenchConfig
from bench.runner import main_log, run


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    packages = ", ".join(f"{p} {version(p)}" for p in
                         ("uvicorn", "starlette", "uvloop", "httptools", "redis", "hiredis",
                          "orjson", "cachetools"))
    commit = _tool_version(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short",
                            "HEAD"])
    return {
        "host": socket.gethostname(),
        "cpu": f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores usable",
        "memory": f"{int(mem) // 1024:,} MiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": packages,
        "nginx": _tool_version(["nginx", "-v"]),
        "wrk": _tool_version(["wrk", "-v"]),
        "redis": _tool_version(["redis-server", "--version"]),
        "commit": commit,
    }


def render(cfg: BenchConfig, results: report.Results, info: dict[str, str]) -> str:
    x = results.extra
    notes = results.notes + report.speed_notes(results) + report.noise_notes(
        results, throughput_scenarios=("hot-200", "304", "cold", "unknown", "proxy-hit"))
    lines = [
        f"# settings-cdn bench — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        f"Command: `{cfg.command}`",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- server core {x.get('server_core')}, load core {x.get('load_core')}; "
        f"load average at start {' '.join(x.get('loadavg_start', []))}, at end "
        f"{' '.join(x.get('loadavg_end', []))}; total {x.get('seconds_total', 0):.0f} s",
        f"- {report.speed_line(results)}",
        f"- data: {cfg.total_sources:,} sources (hot set {cfg.sources:,}, Zipf s=1.0); JSON "
        f"{x.get('json_bytes_min', 0):,}–{x.get('json_bytes_max', 0):,} B (median "
        f"{x.get('json_bytes_median', 0):,.0f}), gzip median {x.get('gzip_bytes_median', 0):,.0f}"
        f" B; wrk {cfg.duration:g} s × {cfg.rounds} rounds, {cfg.connections} connections",
        "",
        "## HTTP",
        "",
        report.table(results),
        "",
        "```",
        *results.ratio_lines(),
        "```",
        "",
        "## Publisher and memory",
        "",
        *(f"- {k}: {v:,.1f}" if isinstance(v, float) else
          f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}"
          for k, v in x.items() if k.startswith(("republish", "store_", "rss", "held",
                                                 "instant", "polling", "api_"))),
        "",
        "## Outage (Redis frozen)",
        "",
        "```",
        *(report.outage_lines(x) or ["not run"]),
        "```",
        "",
        "## Targets",
        "",
        report.checks_table(report.checks(results)),
        "",
        "## Noise",
        "",
        *(f"- {n}" for n in notes or ["nothing flagged"]),
        "",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--sources", type=int, default=d.sources, help="hot set size (%(default)s)")
    p.add_argument("--total-sources", type=int, default=d.total_sources,
                   help="sources published (republish, cold pool, memory) (%(default)s)")
    p.add_argument("--duration", type=float, default=d.duration,
                   help="seconds per wrk run (%(default)s)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="rounds per server (%(default)s)")
    p.add_argument("--connections", type=int, default=d.connections)
    p.add_argument("--changes", type=int, default=d.changes,
                   help="Config API writes per mode (%(default)s)")
    p.add_argument("--phases", default=",".join(PHASES),
                   help="comma-separated subset of " + ",".join(PHASES))
    p.add_argument("--republish-timeout", type=float, default=d.republish_timeout,
                   help="stop republish --all after this many seconds (%(default)s)")
    p.add_argument("--warmup", type=float, default=d.warmup,
                   help="seconds of unrecorded load per server before a scenario (%(default)s)")
    p.add_argument("--poll-refresh", type=float, default=d.poll_refresh,
                   help="EDGE_REFRESH_INTERVAL of the polling-mode latency run (%(default)s)")
    p.add_argument("--outage-frozen", type=float, default=d.outage_frozen,
                   help="outage phase: seconds Redis is frozen (%(default)s)")
    p.add_argument("--outage-before", type=float, default=d.outage_before,
                   help="outage phase: seconds of normal service first (%(default)s)")
    p.add_argument("--outage-recovery", type=float, default=d.outage_recovery,
                   help="outage phase: seconds measured after Redis resumes (%(default)s)")
    p.add_argument("--outage-refresh", type=float, default=d.outage_refresh,
                   help="outage phase: the edge's EDGE_REFRESH_INTERVAL (%(default)s)")
    p.add_argument("--outage-rate", type=int, default=d.outage_rate,
                   help="outage phase: requests per second, open loop (%(default)s)")
    p.add_argument("--outage-cold-share", type=float, default=d.outage_cold_share,
                   help="outage phase: share of requests for keys the edge does not hold "
                   "(%(default)s)")
    p.add_argument("--results-dir", type=Path, default=d.results_dir)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser().error(f"--phases: unknown phase(s) {', '.join(unknown)}; "
                       f"choose from {', '.join(PHASES)}")
    for name in ("sources", "total_sources", "rounds", "connections", "changes",
                 "outage_rate"):
        if getattr(args, name) < 1:
            parser().error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.total_sources < args.sources:
        parser().error(f"--total-sources ({args.total_sources}) must be >= --sources "
                       f"({args.sources})")
    if args.duration <= 0:
        parser().error(f"--duration must be > 0, got {args.duration}")
    if args.warmup < 0 or args.poll_refresh <= 0 or args.republish_timeout <= 0:
        parser().error("--warmup must be >= 0, --poll-refresh and --republish-timeout > 0")
    for name in ("outage_frozen", "outage_before", "outage_recovery", "outage_refresh"):
        if getattr(args, name) <= 0:
            parser().error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not 0 <= args.outage_cold_share < 1:
        parser().error(f"--outage-cold-share must be in [0, 1), got {args.outage_cold_share}")
    cfg = replace(BenchConfig(), sources=args.sources, total_sources=args.total_sources,
                  duration=args.duration, rounds=args.rounds, connections=args.connections,
                  changes=args.changes, phases=phases,
                  republish_timeout=args.republish_timeout, warmup=args.warmup,
                  poll_refresh=args.poll_refresh, outage_frozen=args.outage_frozen,
                  outage_before=args.outage_before, outage_recovery=args.outage_recovery,
                  outage_refresh=args.outage_refresh, outage_rate=args.outage_rate,
                  outage_cold_share=args.outage_cold_share, results_dir=args.results_dir,
                  command=shlex.join(["bench/run", *(argv if argv is not None
                                                     else sys.argv[1:])]),
                  log=main_log())
    info = machine()
    results = run(cfg)
    text = render(cfg, results, info)
    print()
    print(text)
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = cfg.results_dir / f"{stamp}.md"
    out.write_text(text)
    raw = {"machine": info, "extra": results.extra, "ratios": results.ratio_lines(),
           "runs": [{"scenario": r.scenario, "target": r.target, "round": r.round,
                     **r.result.__dict__} for r in results.runs]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"results written to {out} (and {out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
