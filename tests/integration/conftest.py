"""Fixtures shared by the integration tests: worker subprocesses that never outlive a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers.redis_cluster import PrivateRedisCluster, free_ports
from tests.servers.redis_cluster import available as redis_cluster_available

Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """`spawn(script, *args)`: run a Python script in a subprocess that imports what this
    test process imports; any still running at the end get SIGTERM, then SIGKILL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(script: Path, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, str(script), *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    """A private three-master Redis Cluster on the first three free ports from 7100 (so
    sessions running at once do not share one), started once per session (a few seconds)
    and stopped at its end, even after failures. Skips when redis-server or redis-cli is
    missing, except under CI=true, where it fails."""
    why_not = redis_cluster_available()
    if why_not is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why_not}; CI=true requires a Redis installation")
        pytest.skip(f"{why_not}; install Redis to run the Redis Cluster tests")
    cluster = PrivateRedisCluster(free_ports())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_dsn(redis_cluster: PrivateRedisCluster) -> str:
    """`redis+cluster://` DSN of the session's Redis Cluster."""
    return redis_cluster.dsn
