"""`repid worker` in operation: /healthz follows the broker (one process and supervised),
crashed worker processes come back with a growing delay, and a second SIGTERM returns the
running jobs to their queue at once."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    APP,
    PrivateRedis,
    all_ready,
    cli_env,
    declare_queue,
    delete_queue,
    enqueue,
    free_port,
    http_get,
    lines,
    queue_stats,
    running,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test only, killed afterwards even when the test fails."""
    data = tmp_path / "redis"
    data.mkdir()
    server = PrivateRedis(data)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def queue(redis_dsn: str) -> Iterator[str]:
    """A queue name no other test uses, deleted from the shared Redis afterwards."""
    name = f"cli_{uuid.uuid4().hex[:10]}"
    yield name
    delete_queue(redis_dsn, name)


def status_of(port: int) -> int | None:
    answer = http_get(port, "/healthz")
    return None if answer is None else answer[0]


def test_health_of_one_process_follows_redis(private_redis: PrivateRedis,
                                             tmp_path: Path) -> None:
    health_port = free_port()
    env = cli_env(REPID_BROKER_DSN=private_redis.dsn, CLI_TEST_QUEUE="health_q")
    args = ["worker", APP, "--health-port", str(health_port), "--bind", "127.0.0.1",
            "--unhealthy-after", "1", "--graceful-shutdown-time", "1"]
    with running(args, env, tmp_path / "log") as process:
        assert wait_for(lambda: http_get(health_port, "/healthz"), what="/healthz") == \
            (200, b"OK")
        private_redis.stop()
        lost = time.monotonic()
        answer = wait_for(lambda: (a := http_get(health_port, "/healthz")) and a[0] == 503
                          and a, timeout=15, what="/healthz to turn 503")
        assert time.monotonic() - lost >= 0.9  # not before the 1 s threshold
        assert b"health_q" in answer[1] and b"Redis" in answer[1], answer
        assert answer[1].count(b"\n") == 1  # one line of reason

        private_redis.start()  # empty: the queue is declared again by the worker
        wait_for(lambda: status_of(health_port) == 200, timeout=15,
                 what="/healthz to turn 200 again")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_supervisor_health_follows_redis(private_redis: PrivateRedis, tmp_path: Path) -> None:
    health_port = free_port()
    env = cli_env(REPID_BROKER_DSN=private_redis.dsn, CLI_TEST_QUEUE="health_q")
    args = ["worker", APP, "-p", "2", "--health-port", str(health_port), "--bind",
            "127.0.0.1", "--unhealthy-after", "1", "--graceful-shutdown-time", "1"]
    with running(args, env, tmp_path / "log") as process:
        wait_for(lambda: all_ready(health_port, 2), what="2 ready worker processes")
        private_redis.stop()

        def unhealthy() -> dict[str, object] | None:
            answer = http_get(health_port, "/healthz")
            return json.loads(answer[1]) if answer and answer[0] == 503 else None

        state = wait_for(unhealthy, timeout=15, what="/healthz to turn 503")
        assert state["status"] == "unhealthy" and state["ready"] == 2
        problems = state["problems"]
        assert isinstance(problems, list) and problems
        assert all("health_q" in p and "Redis" in p for p in problems), problems

        private_redis.start()
        wait_for(lambda: all_ready(health_port, 2), timeout=15,
                 what="/healthz to turn 200 again")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    log = (tmp_path / "log").read_text()
    assert "reports: cannot take messages from 'health_q'" in log
    assert "can take messages again" in log


def test_crashing_worker_process_restarts_with_growing_delays(
        redis_dsn: str, queue: str, tmp_path: Path) -> None:
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue,
                  CLI_TEST_DIR=str(tmp_path))
    args = ["worker", APP, "-p", "2", "--concurrency", "1", "--graceful-shutdown-time", "1"]
    declare_queue(redis_dsn, queue)
    enqueue(redis_dsn, queue, [{"n": n} for n in range(6)], actor="crash")
    with running(args, env, tmp_path / "log") as process:
        wait_for(lambda: (tmp_path / "log").read_text().count(") died (") == 6,
                 timeout=30, what="6 crashed worker processes")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    log = (tmp_path / "log").read_text()
    delays: dict[str, list[float]] = {}
    for index, delay in re.findall(r"worker process (\d) \(pid \d+\) died \(exit code 1\) "
                                   r"after [\d.]+ s; starting a new one in ([\d.]+) s", log):
        delays.setdefault(index, []).append(float(delay))
    assert sum(map(len, delays.values())) == 6, log
    for found in delays.values():
        assert found == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0][:len(found)], delays
    assert "cannot start" not in log  # they were ready before they crashed


def test_second_sigterm_returns_the_running_job_at_once(
        redis_dsn: str, queue: str, tmp_path: Path) -> None:
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue,
                  CLI_TEST_DIR=str(tmp_path))
    declare_queue(redis_dsn, queue)
    with running(["worker", APP, "--graceful-shutdown-time", "30"], env,
                 tmp_path / "log") as process:
        enqueue(redis_dsn, queue, [{"n": 1, "sleep": 60}])
        wait_for(lambda: lines(tmp_path / "started"), what="the job to start")
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # the first signal waits for the job
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - sent < 3
    assert not lines(tmp_path / "done")
    assert queue_stats(redis_dsn, queue)["ready"] == 1
    assert "again: returning running jobs to their queues now" in \
        (tmp_path / "log").read_text()


def test_supervisor_forwards_a_second_sigterm_at_once(
        redis_dsn: str, queue: str, tmp_path: Path) -> None:
    health_port = free_port()
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue,
                  CLI_TEST_DIR=str(tmp_path))
    args = ["worker", APP, "-p", "2", "--graceful-shutdown-time", "30", "--health-port",
            str(health_port), "--bind", "127.0.0.1"]
    with running(args, env, tmp_path / "log") as process:
        wait_for(lambda: all_ready(health_port, 2), what="2 ready worker processes")
        enqueue(redis_dsn, queue, [{"n": n, "sleep": 60} for n in range(2)])
        wait_for(lambda: len(lines(tmp_path / "started")) == 2, what="2 jobs to start")
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - sent < 4  # not the 30 s grace time, nor the kill margin
    assert not lines(tmp_path / "done")
    assert queue_stats(redis_dsn, queue)["ready"] == 2
    log = (tmp_path / "log").read_text()
    assert "received SIGTERM again: the worker processes return their running jobs" in log
    assert "killing" not in log
