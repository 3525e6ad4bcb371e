"""One outcome per run, the same on every broker (docs/outcomes.md), through real Workers
on the in-memory broker, the real Redis and the real RabbitMQ:

- an actor whose result cannot be encoded fails its run: retried, then dead-lettered
  with the encoding error as the reason;
- two workers on one queue, each with an actor the other lacks, both run their jobs
  (a message for the other's actor passes to it);
- a job for an actor none of them has is dead-lettered with the reason
  `no actor '<name>'` after 4 x `max_deliveries` returns (1 s, 2 s, 3 s, 4 s apart with
  `max_deliveries=1`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from broker_kinds import message_broker

from repid import (
    Connection,
    InMemoryBucketBroker,
    Job,
    Message,
    MessageCategory,
    Queue,
    Router,
    Worker,
)
from repid.brokers.base import DEAD_REASON_HEADER
from repid.data.headers import NO_ACTOR_RETURNS_HEADER

pytestmark = pytest.mark.integration

TIMEOUT = 20
#: the smallest `max_deliveries`, so that a message no worker has an actor for is
#: returned 4 times (1 + 2 + 3 + 4 s) and dies in ~10 s
FEW = 1

Connect = Callable[..., Awaitable[Connection]]


@pytest.fixture
def queue() -> str:
    return f"outcome-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["in_memory", "redis", "rabbitmq", "rabbitmq_quorum", "redis_cluster"])
async def connect(request: pytest.FixtureRequest, queue: str) -> AsyncIterator[Connect]:
    """`await connect(**broker_kwargs)`: a connected Connection to the broker, as each
    worker process would have its own (on the in-memory broker, the first one again: its
    messages live in it), with `queue` declared; the queue is deleted and every
    connection closed after."""
    opened: list[Connection] = []

    async def make(**kwargs: Any) -> Connection:
        if request.param == "in_memory" and opened:
            return opened[0]
        connection = Connection(
            message_broker(request.param, request, **kwargs),
            results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True))
        await asyncio.wait_for(connection.connect(), TIMEOUT)
        if not opened:
            await connection.message_broker.queue_declare(queue)
        opened.append(connection)
        return connection

    try:
        yield make
    finally:
        if opened:
            await opened[0].message_broker.queue_delete(queue)
        for connection in opened:
            await connection.disconnect()


async def _until(predicate: Callable[[], Awaitable[Any]], what: str,
                 timeout: float = TIMEOUT) -> Any:
    """The first true answer of `predicate`, asked every 50 ms for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (answer := await predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return answer


def _dead_letters(connection: Connection, queue: str) -> Callable[[], Awaitable[list[Message]]]:
    async def read() -> list[Message]:
        return [m async for m in Queue(queue, _connection=connection).get_messages(
            category=MessageCategory.DEAD, stop_when_empty=True)]

    return read


async def test_unencodable_result_is_retried_then_dead_with_the_reason(
        connect: Connect, queue: str) -> None:
    connection = await connect()
    router = Router()
    runs: list[int] = []

    @router.actor(queue=queue, retry_policy=lambda n: 0)
    async def weird() -> object:
        runs.append(1)
        return object()

    job = Job("weird", queue=queue, retries=1, store_result=True, _connection=connection)
    await job.enqueue()
    worker = Worker(routers=[router], messages_limit=2, handle_signals=[],
                    _connection=connection)
    await asyncio.wait_for(worker.run(), TIMEOUT)
    assert len(runs) == 2
    [dead] = await _until(_dead_letters(connection, queue), "the dead letter")
    assert dead.parameters.headers[DEAD_REASON_HEADER].startswith(
        "no retries left; last error: TypeError: object is not JSON-serializable")
    result = await job.result
    assert result is not None and result.success is False


@pytest.mark.timeout(240)  # six jobs, each allowed a 60 s run of bad luck (see below)
async def test_two_workers_share_a_queue_each_runs_its_jobs(
        connect: Connect, queue: str) -> None:
    """Why such messages are returned at all; with the default allowance (20 returns) a
    job is not lost to the other worker taking it every time."""
    alpha_router, beta_router = Router(), Router()
    ran: list[str] = []

    @alpha_router.actor(queue=queue)
    async def alpha() -> None:
        ran.append("alpha")

    @beta_router.actor(queue=queue)
    async def beta() -> None:
        ran.append("beta")

    producer = await connect()
    workers = [Worker(routers=[router], handle_signals=[], _connection=await connect())
               for router in (alpha_router, beta_router)]
    running = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        for name in ("alpha", "beta", "alpha", "alpha", "beta", "beta"):
            count = ran.count(name)
            await Job(name, queue=queue, _connection=producer).enqueue()

            async def ran_once_more(name: str = name, count: int = count) -> bool:
                return ran.count(name) > count

            # a job the other worker took first comes back after 1, 2, 3... s: allow for
            # a run of bad luck (a fair coin each time, see queue_ops.block_time on Redis)
            await _until(ran_once_more, f"{name} to run", timeout=60)
    finally:
        for worker in workers:
            worker.stop()
        runners = await asyncio.wait_for(asyncio.gather(*running), TIMEOUT)
    assert sorted(ran) == ["alpha"] * 3 + ["beta"] * 3
    assert [runner.processed for runner in runners] == [3, 3]
    assert await _dead_letters(producer, queue)() == []


async def test_a_job_for_an_actor_no_worker_has_ends_dead_in_bounded_time(
        connect: Connect, queue: str, caplog: pytest.LogCaptureFixture) -> None:
    router = Router()

    @router.actor(queue=queue)
    async def alpha() -> None:
        pass

    @router.actor(queue=queue)
    async def beta() -> None:
        pass

    connection = await connect(max_deliveries=FEW)
    worker = Worker(routers=[router], handle_signals=[], _connection=connection)
    running = asyncio.create_task(worker.run())
    try:
        with caplog.at_level(logging.ERROR, logger="repid"):
            typo, _, _ = await Job("alpah", queue=queue, _connection=connection).enqueue()
            started = time.monotonic()
            [dead] = await _until(_dead_letters(connection, queue), "the job to die")
            took = time.monotonic() - started
    finally:
        worker.stop()
        runner = await asyncio.wait_for(running, TIMEOUT)
    assert runner.processed == 0
    assert dead.key.id_ == typo.id_
    assert dead.parameters.headers[DEAD_REASON_HEADER].startswith("no actor 'alpah'")
    assert dead.parameters.headers[NO_ACTOR_RETURNS_HEADER] == "4"
    assert 9.5 < took < 14  # returned after 1, 2, 3 and 4 s, then dead-lettered
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "'alpah'" in error and "'alpha', 'beta'" in error
