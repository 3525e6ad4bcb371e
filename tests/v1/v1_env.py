"""A throwaway virtualenv with the real repid 1.6.0, and a producer run in it that writes
repid 1.x data (`v1_producer.py`) for the migration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() == "true"
V1_REQUIREMENT = "repid[redis,amqp]==1.6.0"


def make_v1_venv(where: Path) -> Path:
    """The interpreter of a new virtualenv in `where` holding repid 1.6.0; skips (fails
    under CI=true) when it cannot be made, e.g. without network."""
    python = where / "venv" / "bin" / "python"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", V1_REQUIREMENT], check=True,
                       capture_output=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        output = getattr(exc, "stderr", b"") or b""
        reason = f"cannot install {V1_REQUIREMENT} in a virtualenv: {exc} {output[-500:]!r}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def produce_v1(python: Path, kind: str, message_dsn: str, bucket_dsn: str,
               queue: str) -> dict[str, Any]:
    """Run the repid 1.6.0 producer; what it wrote (ids per category, result ids)."""
    done = subprocess.run([str(python), str(HERE / "v1_producer.py"), kind, message_dsn,
                           bucket_dsn, queue], capture_output=True, timeout=60, check=False,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                          cwd=str(python.parent))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))
