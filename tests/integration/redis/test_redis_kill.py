"""At-least-once with a real Worker on Redis: a worker killed with SIGKILL mid-job loses
nothing, and its jobs run again in another worker within about a lease, however long
their timeout; a live worker keeps a job that runs for several leases to itself."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from repid import Connection, Job, RedisMessageBroker
from repid.queue import Queue

pytestmark = pytest.mark.integration

WORKER_SCRIPT = Path(__file__).with_name("redis_kill_worker.py")
JOBS = 12
TIMEOUT = 120.0  # each job's execution timeout: far longer than the test
LEASE = 3.0  # the workers' lease_time
SECONDS_PER_JOB = 1.0

Runs = set[tuple[str, int, int]]


async def read_runs(raw: Redis, key: str) -> Runs:
    out = set()
    for member in await raw.smembers(key):
        event, n, pid = str(member).split(":")
        out.add((event, int(n), int(pid)))
    return out


async def wait_runs(raw: Redis, key: str, predicate: Callable[[Runs], bool],
                    timeout: float) -> Runs:
    stop = time.monotonic() + timeout
    while True:
        runs = await read_runs(raw, key)
        if predicate(runs):
            return runs
        if time.monotonic() > stop:
            raise AssertionError(f"timed out; runs so far: {sorted(runs)}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def connection(redis_dsn: str) -> AsyncIterator[Connection]:
    conn = Connection(RedisMessageBroker(dsn=redis_dsn))
    await conn.connect()
    yield conn
    await conn.disconnect()


@pytest.fixture
async def raw(redis_dsn: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_dsn, decode_responses=True)
    yield client
    await client.aclose()


async def test_sigkilled_worker_jobs_run_again_elsewhere(
    redis_dsn: str, connection: Connection, raw: Redis, spawn: Any,
) -> None:
    queue_name = f"kill-{uuid.uuid4().hex[:10]}"
    runs_key = f"repid-test:runs:{queue_name}"
    queue = Queue(queue_name, _connection=connection)
    await queue.declare()
    try:
        for n in range(JOBS):
            await Job("record", queue=queue_name, args={"n": n},
                      timeout=timedelta(seconds=TIMEOUT), _connection=connection).enqueue()
        first = spawn(WORKER_SCRIPT, redis_dsn, queue_name, runs_key, str(SECONDS_PER_JOB),
                     str(LEASE))
        # the first worker holds 4 jobs mid-run (tasks_limit=4, 1 s each)
        await wait_runs(raw, runs_key, lambda rs: sum(e == "start" for e, _, _ in rs) >= 4, 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        runs = await read_runs(raw, runs_key)
        unfinished = ({n for e, n, _ in runs if e == "start"}
                      - {n for e, n, _ in runs if e == "done"})
        assert unfinished, "the worker was killed with no job in flight"

        second = spawn(WORKER_SCRIPT, redis_dsn, queue_name, runs_key, str(SECONDS_PER_JOB),
                     str(LEASE))
        runs = await wait_runs(
            raw, runs_key,
            lambda rs: {n for e, n, _ in rs if e == "done"} == set(range(JOBS)), 40)
        # the killed jobs came back once their leases (3 s, no longer extended) ran out,
        # not after their timeout: with the second worker's start-up, within the lease, the
        # once-a-second check, the job itself and a few seconds
        assert time.monotonic() - killed_at < LEASE + 1 + SECONDS_PER_JOB + 6
        for n in unfinished:
            assert ("done", n, second.pid) in runs
            assert ("done", n, first.pid) not in runs
        # the last acks follow the last "done" records; then nothing is left anywhere
        settled = {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
        for _ in range(100):
            stats = await connection.message_broker.queue_stats(queue_name)
            if stats == settled:
                break
            await asyncio.sleep(0.05)
        assert stats == settled
    finally:
        await queue.delete()
        await raw.delete(runs_key)
