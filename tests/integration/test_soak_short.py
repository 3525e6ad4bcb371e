"""The short soak (`benchmarks/soak.py --short`) on each broker: jobs go through
`repid worker --processes 2` while a private broker server restarts and a worker process
is killed; no confirmed job may be lost and jobs must keep completing.

Each soak starts its own Redis or RabbitMQ node (the shared servers only hold the run
counts), so these need the server binaries; without them they skip, except under CI=true.
A soak takes up to a minute or two, so these tests have a longer timeout than the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak.py"
GAP_LIMIT_SECONDS = 30.0
IN_CI = os.environ.get("CI", "").lower() == "true"


def need_binary(name: str) -> None:
    """Skip (fail under CI=true) when the server binary `name` is not installed."""
    if shutil.which(name) is not None or Path("/usr/lib/rabbitmq/bin", name).exists():
        return
    message = f"{name} is not installed; the soak starts a private server of its own"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def run_soak(broker: str, record_dsn: str) -> tuple[dict[str, Any], str]:
    """Run the short soak on `broker`; its final JSON line, and everything it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--short", "--broker", broker, "--record-dsn", record_dsn],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=170)
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the soak printed no JSON accounting (exit {proc.returncode}):\n{output}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result, output


def check(result: dict[str, Any], output: str) -> None:
    assert result["confirmed"] == result["attempted"] == 2000, output
    assert result["lost"] == 0, output
    assert result["run"] == result["confirmed"], output
    assert result["longest_gap"] <= GAP_LIMIT_SECONDS, output
    # the faults really happened, and the soak saw jobs complete after each of them
    assert result["restarts"] == 1 and result["kills"] == 1, output
    assert all(f["recovered_after"] is not None for f in result["faults"]), output


@pytest.mark.timeout(180)
def test_short_soak_on_redis(redis_dsn: str) -> None:
    need_binary("redis-server")
    result, output = run_soak("redis", redis_dsn)
    check(result, output)


@pytest.mark.timeout(180)
def test_short_soak_on_rabbitmq(redis_dsn: str) -> None:
    need_binary("rabbitmq-server")
    result, output = run_soak("rabbitmq", redis_dsn)
    check(result, output)
