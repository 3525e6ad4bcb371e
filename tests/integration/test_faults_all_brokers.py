"""Faults a worker must survive, on the real Redis and RabbitMQ, with the defaults:

- 1,000 concurrent jobs storing their results in a Redis results bucket (on Redis alone,
  and on RabbitMQ with a Redis results bucket) all settle;
- a results-store Redis SIGKILLed under a worker with a small `tasks_limit`: every job
  enqueued afterwards runs, and those whose result could not be stored run again;
- an actor that kills its own process beside good jobs: the good jobs run, the bad one is
  dead-lettered with the reason after `max_deliveries` deliveries.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_kinds import message_broker

from repid import (
    Connection,
    Job,
    MessageCategory,
    Queue,
    RedisBucketBroker,
    Router,
    Worker,
)
from repid.brokers.base import DEAD_REASON_HEADER, MessageBroker

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers.redis_server import PrivateRedis, available, free_port  # noqa: E402

TIMEOUT = 40
SELF_KILLING_WORKER = Path(__file__).with_name("self_killing_worker.py")


def _message_broker(kind: str, request: pytest.FixtureRequest) -> MessageBroker:
    # on quorum queues the worker's limit is RabbitMQ's x-delivery-limit: they must agree
    options = {"max_deliveries": 3} if kind == "rabbitmq_quorum" else {}
    return message_broker(kind, request, **options)


def _dsn(kind: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_dsn" if kind == "redis" else "amqp_dsn"))


@pytest.fixture
def queue_name() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


async def _until(predicate: Callable[[], Any], timeout: float = TIMEOUT,
                 what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
async def test_a_thousand_concurrent_jobs_store_their_results_with_the_defaults(
        kind: str, request: pytest.FixtureRequest, redis_dsn: str, queue_name: str) -> None:
    jobs = 1200
    conn = Connection(_message_broker(kind, request),
                      results_bucket_broker=RedisBucketBroker(redis_dsn, use_result_bucket=True))
    await asyncio.wait_for(conn.connect(), TIMEOUT)
    queue = Queue(queue_name, _connection=conn)
    await queue.declare()
    router = Router()

    @router.actor(name="nap", queue=queue_name)
    async def nap(n: int) -> int:
        await asyncio.sleep(0.3)  # long enough for ~1,000 runs to overlap
        return n

    try:
        enqueued = [Job("nap", queue=queue_name, args={"n": i}, _connection=conn)
                    for i in range(jobs)]
        await asyncio.gather(*(job.enqueue() for job in enqueued))
        worker = Worker(routers=[router], _connection=conn, messages_limit=jobs)
        assert worker.tasks_limit == 1000  # the default
        runner = await asyncio.wait_for(worker.run(), TIMEOUT)
        assert runner.processed == jobs
        assert runner.settle_failures == 0
        results = conn.results_bucket_broker
        assert results is not None
        stored = await asyncio.gather(*(results.get_bucket(j.result_id)  # type: ignore[arg-type]
                                        for j in enqueued))
        assert [b.data for b in stored] == list(range(jobs))  # type: ignore[union-attr]
    finally:
        await queue.delete()
        await conn.disconnect()


@pytest.fixture
def results_redis() -> Iterator[PrivateRedis]:
    why = available()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs a private Redis: {why}")
        pytest.skip(why)
    with PrivateRedis(free_port()) as server:
        server.start()
        yield server


@pytest.fixture(params=["redis", "rabbitmq"])
async def outage_env(request: pytest.FixtureRequest, results_redis: PrivateRedis,
                     queue_name: str) -> AsyncIterator[Connection]:
    conn = Connection(
        _message_broker(request.param, request),
        results_bucket_broker=RedisBucketBroker(results_redis.dsn, use_result_bucket=True,
                                                retries=0, socket_timeout=1.0,
                                                socket_connect_timeout=1.0))
    await asyncio.wait_for(conn.connect(), TIMEOUT)
    await Queue(queue_name, _connection=conn).declare()
    yield conn
    await Queue(queue_name, _connection=conn).delete()
    await conn.disconnect()


async def test_a_results_store_outage_never_stalls_the_worker(
        outage_env: Connection, results_redis: PrivateRedis, queue_name: str) -> None:
    conn = outage_env
    router = Router()
    ran: set[int] = set()

    @router.actor(name="work", queue=queue_name)
    async def work(n: int) -> int:
        ran.add(n)
        return n

    worker = Worker(routers=[router], _connection=conn, tasks_limit=3,
                    graceful_shutdown_time=2)
    task = asyncio.create_task(worker.run())
    try:
        results_redis.kill()
        during = [Job("work", queue=queue_name, args={"n": i}, _connection=conn)
                  for i in range(10)]
        for job in during:
            await job.enqueue()

        async def ran_during() -> bool:
            return set(range(10)) <= ran

        await _until(ran_during, what="the jobs to run while the results store is down")
        await asyncio.sleep(1)
        results_redis.start()  # empty again: nothing was stored while it was down
        after = [Job("work", queue=queue_name, args={"n": 100 + i}, _connection=conn)
                 for i in range(10)]
        for job in after:
            await job.enqueue()
        store = conn.results_bucket_broker
        assert store is not None

        async def all_stored() -> bool:
            try:
                found = await asyncio.gather(*(store.get_bucket(j.result_id)  # type: ignore[arg-type]
                                               for j in during + after))
            except ConnectionError:
                return False
            return all(b is not None for b in found)

        # the jobs after the outage run, and those whose results could not be stored are
        # run again (after the recovery delay) until they are
        await _until(all_stored, what="every result to be stored")
        assert worker.runner is not None and worker.runner.settle_failures >= 1
    finally:
        worker.stop()
        await asyncio.wait_for(task, TIMEOUT)
    stats = await Queue(queue_name, _connection=conn).stats()
    assert stats["ready"] == 0 and stats["dead"] == 0


@pytest.mark.timeout(100)
@pytest.mark.parametrize("kind", ["redis", "rabbitmq", "rabbitmq_quorum"])
async def test_an_actor_that_kills_its_process_is_dead_lettered_and_the_rest_run(
        kind: str, request: pytest.FixtureRequest, redis_dsn: str, queue_name: str,
        spawn: Any) -> None:
    """The worker process dies on the bad job; it is started again each time (as a
    supervisor would), the bad job is dead-lettered after max_deliveries=3 deliveries, and
    the good jobs all run. On quorum queues the worker dead-letters it, with its reason,
    at the 4th delivery: the last one RabbitMQ's x-delivery-limit of 3 allows."""
    dsn = _dsn(kind, request)
    conn = Connection(_message_broker(kind, request))
    await asyncio.wait_for(conn.connect(), TIMEOUT)
    queue = Queue(queue_name, _connection=conn)
    await queue.declare()
    from redis.asyncio import Redis

    raw = Redis.from_url(redis_dsn, decode_responses=True)
    runs_key = f"repid-test:selfkill:{queue_name}"
    proc = None
    try:
        await Job("die", queue=queue_name, _connection=conn).enqueue()
        for n in range(20):
            await Job("good", queue=queue_name, args={"n": n}, _connection=conn).enqueue()

        async def dead() -> list[Any]:
            return [m async for m in queue.get_messages(category=MessageCategory.DEAD,
                                                        stop_when_empty=True)]

        # Supervise as a process manager would: start the worker again each time it dies,
        # until the good jobs ran and the bad one was dead-lettered. (A worker may run
        # every good job before the bad job's lease, held by a process that died, runs
        # out; it then takes the bad job again, and may die once more.)
        deaths = 0
        deadline = time.monotonic() + 60
        proc = spawn(SELF_KILLING_WORKER, kind, dsn, queue_name, redis_dsn, runs_key)
        while True:
            ran, dead_now = await raw.scard(runs_key), await dead()
            # the bad job alone: a good one dead-lettered beside it fails at once
            assert len(dead_now) <= 1 and time.monotonic() < deadline, (
                f"after {deaths} restarts: {ran} good jobs ran, dead-lettered: "
                f"{[(m.key.topic, m.parameters.headers) for m in dead_now]}")
            if ran >= 20 and len(dead_now) == 1:
                break
            if proc.poll() is not None:
                deaths += 1
                proc = spawn(SELF_KILLING_WORKER, kind, dsn, queue_name, redis_dsn, runs_key)
            await asyncio.sleep(0.1)
        assert await raw.scard(runs_key) == 20
        assert deaths <= 3  # a limit of 3 deliveries: at most 3 deaths
        [message] = await dead()
        assert message.key.topic == "die"
        assert "delivered 4 times without being settled (limit 3)" in \
            message.parameters.headers[DEAD_REASON_HEADER]
    finally:
        if proc is not None and proc.poll() is None:  # stop it first: it would declare the
            proc.terminate()                          # queue again after the delete below
            await asyncio.to_thread(proc.wait, 15)
        await raw.delete(runs_key)
        await raw.aclose()
        await queue.delete()
        await conn.disconnect()
