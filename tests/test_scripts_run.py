"""README command 1 works: scripts/run sets up, serves the example workspace, and stops."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_scripts_run_smoke(tmp_path: Path) -> None:
    """`scripts/run --smoke` starts its own Redis, edge and API, and every printed URL answers."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        EDGE_PORT=str(free_port()),
        PUBLISHER_PORT=str(free_port()),
        PUBLISHER_DB=str(tmp_path / "run.db"),
    )

    proc = subprocess.run([str(ROOT / "scripts" / "run"), "--smoke"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "private Redis" in proc.stdout
    assert f"http://127.0.0.1:{env['EDGE_PORT']}/v1/projects/acmeWebsiteWriteKey0001/settings" \
        in proc.stdout
    assert "smoke check passed" in proc.stdout
    assert "stopped." in proc.stdout
