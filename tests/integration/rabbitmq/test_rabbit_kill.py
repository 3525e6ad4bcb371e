"""At-least-once with a real Worker: a worker killed with SIGKILL mid-job loses nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rabbit_helpers import unique

from repid import Connection, Job, Queue, RabbitMessageBroker

pytestmark = pytest.mark.integration

WORKER_SCRIPT = Path(__file__).with_name("rabbit_kill_worker.py")
JOBS = 12


def read_log(path: Path) -> list[tuple[str, int, int]]:
    """(event, job number, pid) lines the workers wrote."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event, n, pid = line.split()
        out.append((event, int(n), int(pid)))
    return out


async def wait_for(predicate: object, path: Path, timeout: float) -> list[tuple[str, int, int]]:
    """Poll the log until `predicate(lines)` holds."""
    stop = time.monotonic() + timeout
    while True:
        lines = read_log(path)
        if predicate(lines):  # type: ignore[operator]
            return lines
        if time.monotonic() > stop:
            raise AssertionError(f"timed out; log so far: {lines}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def connection(amqp_dsn: str) -> AsyncIterator[Connection]:
    conn = Connection(RabbitMessageBroker(dsn=amqp_dsn))
    await conn.connect()
    yield conn
    await conn.disconnect()


async def test_sigkilled_worker_jobs_run_elsewhere(
    amqp_dsn: str, connection: Connection, tmp_path: Path, spawn: Any,
) -> None:
    queue_name = unique("kill")
    queue = Queue(queue_name, _connection=connection)
    await queue.declare()
    log = tmp_path / "runs.log"
    workers = []
    try:
        for n in range(JOBS):
            await Job("record", queue=queue_name, args={"n": n},
                      _connection=connection).enqueue()
        first = spawn(WORKER_SCRIPT, amqp_dsn, queue_name, str(log), "1.0")
        # the first worker holds 4 jobs mid-run (tasks_limit=4, 1 s each)
        lines = await wait_for(lambda ls: sum(e == "start" for e, _, _ in ls) >= 4, log, 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_pid = first.pid
        lines = read_log(log)
        unfinished = {n for e, n, p in lines if e == "start"} - {
            n for e, n, p in lines if e == "done"}
        assert unfinished, "the worker was killed with no job in flight"

        second = spawn(WORKER_SCRIPT, amqp_dsn, queue_name, str(log), "1.0")
        workers.append(second)
        lines = await wait_for(
            lambda ls: {n for e, n, _ in ls if e == "done"} == set(range(JOBS)), log, 40)
        assert not any(p == killed_pid for e, n, p in lines if e == "done" and n in unfinished)
        # every job killed mid-run ran again, to the end, in the second worker
        for n in unfinished:
            assert ("done", n, second.pid) in lines
        stats = await connection.message_broker.queue_stats(queue_name)
        assert (stats["ready"], stats["dead"]) == (0, 0)
    finally:
        for worker in workers:  # stopped first, or it would declare the queue again
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 15)
        await queue.delete()
