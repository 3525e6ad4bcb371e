"""The supervisor's parts without a broker: restart delays, the report lines worker
processes send, and the /healthz answer built from them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from repid.cli._supervisor import (
    MAX_REPORT_BYTES,
    RESTART_RESET_SECONDS,
    Backoff,
    Child,
    Supervisor,
    SupervisorSettings,
    parse_report,
    report_line,
)


def test_restart_delays_double_up_to_the_cap_and_reset_after_a_long_life() -> None:
    backoff = Backoff()
    assert [backoff.delay(lived=1) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(lived=RESTART_RESET_SECONDS) == 0.5
    assert backoff.delay(lived=5) == 1


def test_report_lines_round_trip() -> None:
    assert parse_report(report_line(42, None)) == (42, None)
    line = report_line(42, "Redis unreachable:\nError 111\tconnecting")
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert parse_report(line.rstrip(b"\n")) == (42, "Redis unreachable: Error 111 connecting")
    assert len(report_line(1, "x" * 10_000)) < MAX_REPORT_BYTES + 32  # below PIPE_BUF
    assert parse_report(b"42") == (42, None)  # a bare pid: ready
    assert parse_report(b"") is None and parse_report(b"garbage here") is None


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(SupervisorSettings(command=[], processes=2, grace=1,
                                        unhealthy_after=1))
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
             for _ in range(2)]
    for index, proc in enumerate(procs):
        sup.children[index] = Child(index, proc, ready=True)
    yield sup
    for proc in procs:
        proc.kill()
        proc.wait()


def health(sup: Supervisor) -> tuple[int, dict[str, object]]:
    status, ctype, body = sup.health()
    assert ctype == "application/json"
    return status, json.loads(body)


def test_health_is_503_with_the_problem_a_process_reports(supervisor: Supervisor) -> None:
    assert health(supervisor)[0] == 200
    supervisor.children[1].problem = "cannot take messages from 'q' for 2 s: Redis down"
    status, body = health(supervisor)
    assert status == 503 and body["status"] == "unhealthy"
    pid = supervisor.children[1].pid
    assert body["problems"] == [f"worker process 1 (pid {pid}): cannot take messages from "
                                "'q' for 2 s: Redis down"]
    supervisor.children[1].problem = None
    assert health(supervisor)[0] == 200


def test_health_is_503_when_a_process_falls_silent(supervisor: Supervisor) -> None:
    supervisor.children[0].last_report = time.monotonic() - 10
    status, body = health(supervisor)
    assert status == 503
    problems = body["problems"]
    assert isinstance(problems, list) and len(problems) == 1
    assert "has not reported for 10 s" in problems[0]


def test_health_is_503_while_a_process_is_missing(supervisor: Supervisor) -> None:
    del supervisor.children[1]  # being restarted
    status, body = health(supervisor)
    assert status == 503 and body["status"] == "starting" and body["ready"] == 1
