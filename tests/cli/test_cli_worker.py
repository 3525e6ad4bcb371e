"""`repid worker` as a real subprocess: N processes on Redis, /healthz and /metrics from the
supervisor, graceful SIGTERM, a killed worker process replaced, failed starts, --reload."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    APP,
    all_ready,
    cli_env,
    delete_queue,
    enqueue,
    free_port,
    http_get,
    lines,
    metric_total,
    running,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(redis_dsn: str) -> Iterator[str]:
    """A queue name no other test uses, deleted afterwards."""
    name = f"cli_{uuid.uuid4().hex[:10]}"
    yield name
    delete_queue(redis_dsn, name)


def test_processes_serve_health_and_metrics_and_stop_gracefully(
        redis_dsn: str, queue: str, tmp_path: Path) -> None:
    health_port, metrics_port = free_port(), free_port()
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue,
                  CLI_TEST_DIR=str(tmp_path))
    pidfile = tmp_path / "repid.pid"
    args = ["worker", APP, "--processes", "2", "--health-port", str(health_port),
            "--metrics-port", str(metrics_port), "--bind", "127.0.0.1",
            "--pidfile", str(pidfile), "--concurrency", "2"]
    with running(args, env, tmp_path / "log") as process:
        state = wait_for(lambda: all_ready(health_port, 2), what="2 ready worker processes")
        assert len({w["pid"] for w in state["workers"]}) == 2
        assert pidfile.read_text().strip() == str(process.pid)

        # two jobs at a time per process: both processes take some of the ten
        enqueue(redis_dsn, queue, [{"n": n, "sleep": 0.2} for n in range(10)])
        wait_for(lambda: len(lines(tmp_path / "done")) == 10, what="10 jobs done")
        assert len({line.split()[1] for line in lines(tmp_path / "done")}) == 2

        def processed() -> float:
            answer = http_get(metrics_port, "/metrics")
            assert answer is not None and answer[0] == 200
            return metric_total(answer[1].decode(), "repid_messages_processed_total",
                                queue=queue, outcome="success")

        # one /metrics for both processes
        assert wait_for(lambda: processed() == 10, what="/metrics to count 10 messages")

        # jobs still running when SIGTERM comes are finished before the processes exit
        enqueue(redis_dsn, queue, [{"n": n, "sleep": 1.5} for n in range(10, 14)])
        wait_for(lambda: len(lines(tmp_path / "started")) == 14, what="14 jobs started")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    done = {line.split()[0] for line in lines(tmp_path / "done")}
    assert done == {str(n) for n in range(14)}
    log = (tmp_path / "log").read_text()
    assert "received SIGTERM" in log
    assert not pidfile.exists()


def test_killed_worker_process_is_replaced(redis_dsn: str, queue: str, tmp_path: Path) -> None:
    health_port = free_port()
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue,
                  CLI_TEST_DIR=str(tmp_path))
    args = ["worker", APP, "-p", "2", "--health-port", str(health_port), "--bind", "127.0.0.1"]
    with running(args, env, tmp_path / "log") as process:
        state = wait_for(lambda: all_ready(health_port, 2), what="2 ready worker processes")
        before = {w["index"]: w["pid"] for w in state["workers"]}
        os.kill(before[0], signal.SIGKILL)

        def replaced() -> dict[int, int] | None:
            found = all_ready(health_port, 2)
            if found is None:
                return None
            pids = {w["index"]: w["pid"] for w in found["workers"]}
            return pids if pids[0] != before[0] else None

        after = wait_for(replaced, what="a new worker process 0")
        assert after[1] == before[1]
        enqueue(redis_dsn, queue, [{"n": n} for n in range(4)])
        wait_for(lambda: len(lines(tmp_path / "done")) == 4, what="4 jobs done")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    log = (tmp_path / "log").read_text()
    died = next(line for line in log.splitlines() if f"(pid {before[0]}) died" in line)
    assert "(killed by SIGKILL)" in died and died.endswith("starting a new one in 0.5 s")


def test_exits_non_zero_when_worker_processes_cannot_start(tmp_path: Path) -> None:
    env = cli_env(REPID_BROKER_DSN="memory://", CLI_TEST_CRASH="1")
    with running(["worker", APP, "-p", "2"], env, tmp_path / "log") as process:
        code = process.wait(timeout=40)
    log = (tmp_path / "log").read_text()
    assert code == 3, log
    assert "cannot start" in log


def test_single_process_health_and_metrics_ports(tmp_path: Path) -> None:
    health_port, metrics_port = free_port(), free_port()
    env = cli_env(REPID_BROKER_DSN="memory://")
    args = ["worker", APP, "--health-port", str(health_port), "--metrics-port",
            str(metrics_port), "--bind", "127.0.0.1", "--concurrency", "7"]
    with running(args, env, tmp_path / "log") as process:
        assert wait_for(lambda: http_get(health_port, "/healthz"), what="/healthz") == \
            (200, b"OK")
        answer = wait_for(lambda: http_get(metrics_port, "/metrics"), what="/metrics")
        assert answer[0] == 200 and b"repid_broker_call_duration_seconds" in answer[1]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    log = (tmp_path / "log").read_text()
    assert "7 jobs at a time" in log and "received SIGINT: stopping" in log


def test_reload_restarts_worker_processes_on_change(tmp_path: Path) -> None:
    app = tmp_path / "reload_app.py"
    app.write_text("from repid import Router\nrouter = Router()\n\n"
                   "@router.actor\nasync def job() -> None:\n    pass\n")
    health_port = free_port()
    env = cli_env(REPID_BROKER_DSN="memory://")
    args = ["worker", "reload_app:router", "--reload", "--health-port", str(health_port),
            "--bind", "127.0.0.1"]
    with running(args, env, tmp_path / "log", cwd=tmp_path) as process:
        first = wait_for(lambda: all_ready(health_port, 1), what="a ready worker process")
        time.sleep(1.1)  # a later mtime, on file systems with coarse timestamps
        app.write_text(app.read_text() + "\n# changed\n")

        def restarted() -> dict[str, object] | None:
            found = all_ready(health_port, 1)
            return found if found and found["workers"] != first["workers"] else None

        wait_for(restarted, what="a new worker process after the change")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "reload_app.py changed; restarting the worker processes" in \
        (tmp_path / "log").read_text()


def test_one_process_on_rabbitmq(amqp_dsn: str, tmp_path: Path) -> None:
    name = f"cli_{uuid.uuid4().hex[:10]}"
    env = cli_env(REPID_BROKER_DSN=amqp_dsn, CLI_TEST_QUEUE=name, CLI_TEST_DIR=str(tmp_path))
    health_port = free_port()
    args = ["worker", APP, "--health-port", str(health_port), "--bind", "127.0.0.1"]
    try:
        with running(args, env, tmp_path / "log") as process:
            wait_for(lambda: http_get(health_port, "/healthz"), what="/healthz")
            enqueue(amqp_dsn, name, [{"n": n} for n in range(3)])
            wait_for(lambda: len(lines(tmp_path / "done")) == 3, what="3 jobs done")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        log = (tmp_path / "log").read_text()
        assert "RabbitMessageBroker(dsn='amqp://guest:***@" in log
    finally:
        delete_queue(amqp_dsn, name)
