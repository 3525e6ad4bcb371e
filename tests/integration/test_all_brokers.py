"""The outcome table of the spec, and batch enqueue, shown on each broker through a real
Worker.

Each test runs on the in-memory broker, on the real Redis and on the real RabbitMQ, with a
queue of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Generator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from broker_kinds import message_broker

from repid import (
    Connection,
    InMemoryBucketBroker,
    Job,
    MessageCategory,
    MessageDependency,
    Parameters,
    Queue,
    Router,
    RoutingKey,
    Worker,
    enqueue_many,
    hookimpl,
)

TIMEOUT = 15


@pytest.fixture(params=["in_memory", "redis", "rabbitmq", "rabbitmq_quorum", "redis_cluster"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Connection, str]]:
    """A connected Connection on one broker, and a fresh declared queue name."""
    connection = Connection(message_broker(request.param, request),
                            results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True))
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    queue = f"outcome-{uuid.uuid4().hex[:10]}"
    await connection.message_broker.queue_declare(queue)
    try:
        yield connection, queue
    finally:
        await connection.message_broker.queue_delete(queue)
        await connection.disconnect()


async def run_worker(connection: Connection, router: Router, limit: int, **kwargs: Any) -> int:
    worker = Worker(routers=[router], messages_limit=limit, handle_signals=[],
                    _connection=connection, **kwargs)
    runner = await asyncio.wait_for(worker.run(), TIMEOUT)
    return runner.processed


async def dead_letters(connection: Connection, queue: str) -> list[Any]:
    async def read() -> list[Any]:
        return [m async for m in Queue(queue, _connection=connection).get_messages(
            category=MessageCategory.DEAD, stop_when_empty=True)]

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_actor_returns_acks_and_stores_result(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()

    @router.actor(queue=queue)
    async def double(x: int) -> int:
        return x * 2

    job = Job("double", queue=queue, args={"x": 21}, _connection=connection)
    await job.enqueue()
    assert await run_worker(connection, router, 1) == 1
    result = await job.result
    assert result is not None and result.success and result.data == 42
    assert await dead_letters(connection, queue) == []


async def test_failure_with_retries_left_is_retried(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    tries: list[int] = []

    @router.actor(queue=queue, retry_policy=lambda n: 0)
    async def flaky(msg: MessageDependency) -> str:
        tries.append(msg.parameters.retries.already_tried)
        if len(tries) == 1:
            raise RuntimeError("first run fails")
        return "ok"

    job = Job("flaky", queue=queue, retries=2, headers={"tenant": "acme"},
              _connection=connection)
    await job.enqueue()
    assert await run_worker(connection, router, 2) == 2
    assert tries == [0, 1]
    result = await job.result
    assert result is not None and result.success and result.data == "ok"


async def test_timeout_counts_as_failure(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()

    @router.actor(queue=queue)
    async def slow() -> None:
        await asyncio.sleep(5)

    job = Job("slow", queue=queue, timeout=1, _connection=connection)
    await job.enqueue()
    assert await run_worker(connection, router, 1) == 1
    result = await job.result
    assert result is not None and not result.success
    assert result.exception is not None and "timeout" in result.exception
    assert len(await dead_letters(connection, queue)) == 1


async def test_no_retries_left_goes_to_dead_letters(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()

    @router.actor(queue=queue, retry_policy=lambda n: 0)
    async def broken() -> None:
        raise ValueError("always")

    job = Job("broken", queue=queue, retries=1, headers={"tenant": "acme"},
              _connection=connection)
    key, _, _ = await job.enqueue()
    assert await run_worker(connection, router, 2) == 2
    result = await job.result
    assert result is not None and not result.success
    assert result.exception == "ValueError: always"
    dead = await dead_letters(connection, queue)
    assert [m.key.id_ for m in dead] == [key.id_]
    assert dead[0].parameters.headers["tenant"] == "acme"
    assert dead[0].parameters.retries.already_tried == 1


async def test_dead_letter_sent_back_runs_again(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    runs: list[int] = []

    @router.actor(queue=queue)
    async def once_broken() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first")

    await Job("once_broken", queue=queue, _connection=connection).enqueue()
    await run_worker(connection, router, 1)
    dead = await dead_letters(connection, queue)
    assert len(dead) == 1
    await dead[0].reschedule()
    assert await run_worker(connection, router, 1) == 1
    assert len(runs) == 2
    assert await dead_letters(connection, queue) == []


async def test_recurring_job_is_requeued_for_next_time(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    ran_at: list[datetime] = []

    @router.actor(queue=queue)
    async def tick() -> None:
        ran_at.append(datetime.now(timezone.utc))

    start = datetime.now(timezone.utc)
    await Job("tick", queue=queue, deferred_until=start, deferred_by=1,
              _connection=connection).enqueue()
    assert await run_worker(connection, router, 2) == 2
    assert len(ran_at) == 2
    gap = (ran_at[1] - ran_at[0]).total_seconds()
    assert 0.5 <= gap <= 3.0, gap


async def test_expired_ttl_goes_to_dead_letters_unrun(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    calls: list[int] = []

    @router.actor(queue=queue)
    async def late() -> None:
        calls.append(1)

    await Job("late", queue=queue, ttl=1, _connection=connection).enqueue()
    await asyncio.sleep(1.3)
    assert await run_worker(connection, router, 1) == 1
    assert calls == []
    assert len(await dead_letters(connection, queue)) == 1


@pytest.mark.parametrize("payload", ["not json", '{"unknown": 1}', '{"x": "nope"}'])
async def test_poison_message_is_dead_lettered_worker_goes_on(
        env: tuple[Connection, str], payload: str) -> None:
    connection, queue = env
    router = Router()
    seen: list[int] = []

    @router.actor(queue=queue)
    async def typed(x: int) -> None:
        seen.append(x)

    broker = connection.message_broker
    await broker.enqueue(RoutingKey(uuid.uuid4().hex, "typed", queue), payload, Parameters())
    await Job("typed", queue=queue, args={"x": 7}, _connection=connection).enqueue()
    assert await run_worker(connection, router, 2, tasks_limit=1) == 2
    assert seen == [7]
    dead = await dead_letters(connection, queue)
    assert [m.raw_payload for m in dead] == [payload]


async def test_unknown_topic_is_returned_not_dropped(
        env: tuple[Connection, str], caplog: pytest.LogCaptureFixture) -> None:
    connection, queue = env
    mine, theirs = Router(), Router()
    handled: list[str] = []

    @mine.actor(queue=queue)
    async def known() -> None:
        handled.append("known")

    @theirs.actor(queue=queue)
    async def other() -> None:
        handled.append("other")

    await Job("other", queue=queue, _connection=connection).enqueue()
    await Job("known", queue=queue, _connection=connection).enqueue()
    with caplog.at_level(logging.WARNING, logger="repid"):
        assert await run_worker(connection, mine, 1, tasks_limit=1) == 1
    assert handled == ["known"]
    assert any("'other'" in r.getMessage() for r in caplog.records)
    assert await run_worker(connection, theirs, 1) == 1
    assert handled == ["known", "other"]


class _RaisingPlugin:
    """Raises in every hook it implements, before and after the call."""

    @hookimpl(wrapper=True)
    def repid_ack(self) -> Generator[None, Any, Any]:
        raise RuntimeError("plugin broken before the call")
        yield  # pragma: no cover

    @hookimpl(wrapper=True)
    def repid_actor_run(self) -> Generator[None, Any, Any]:
        yield
        raise RuntimeError("plugin broken after the call")


async def test_raising_plugin_is_skipped(env: tuple[Connection, str],
                                         caplog: pytest.LogCaptureFixture) -> None:
    connection, queue = env
    connection.middleware.register(_RaisingPlugin())
    router = Router()

    @router.actor(queue=queue)
    async def fine() -> str:
        return "done"

    job = Job("fine", queue=queue, _connection=connection)
    await job.enqueue()
    with caplog.at_level(logging.ERROR, logger="repid"):
        assert await run_worker(connection, router, 1) == 1
    result = await job.result
    assert result is not None and result.success and result.data == "done"
    assert await dead_letters(connection, queue) == []
    assert sum("plugin" in r.getMessage() for r in caplog.records) >= 2
    # acked despite the plugin: nothing comes back to a second worker
    again = Worker(routers=[router], messages_limit=1, handle_signals=[],
                   _connection=connection)
    task = asyncio.create_task(again.run())
    await asyncio.sleep(1.5)
    assert not task.done()
    again.stop()
    assert (await asyncio.wait_for(task, TIMEOUT)).processed == 0


async def test_graceful_shutdown_returns_unfinished_without_retry(
        env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    started = asyncio.Event()
    tries: list[int] = []

    @router.actor(queue=queue)
    async def long(msg: MessageDependency) -> None:
        tries.append(msg.parameters.retries.already_tried)
        started.set()
        await asyncio.sleep(30)

    await Job("long", queue=queue, retries=3, timeout=60, _connection=connection).enqueue()
    worker = Worker(routers=[router], graceful_shutdown_time=0.5, handle_signals=[],
                    _connection=connection)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    worker.stop()
    await asyncio.wait_for(task, TIMEOUT)

    returned = Router()

    @returned.actor(name="long", queue=queue)
    async def quick(msg: MessageDependency) -> None:
        tries.append(msg.parameters.retries.already_tried)

    assert await run_worker(connection, returned, 1) == 1
    assert tries == [0, 0]


async def test_delay_honoured_and_short_not_blocked_by_long(
        env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    order: list[tuple[str, float]] = []
    t0 = asyncio.get_running_loop().time()

    @router.actor(queue=queue)
    async def mark(name: str) -> None:
        order.append((name, asyncio.get_running_loop().time() - t0))

    now = datetime.now(timezone.utc)
    await Job("mark", queue=queue, args={"name": "long"},
              deferred_until=now + timedelta(hours=1), _connection=connection).enqueue()
    await Job("mark", queue=queue, args={"name": "short"},
              deferred_until=now + timedelta(seconds=2), _connection=connection).enqueue()
    assert await run_worker(connection, router, 1) == 1
    assert [name for name, _ in order] == ["short"]
    assert 1.5 <= order[0][1] <= 4.0, order


async def test_enqueue_many_delivers_every_job(env: tuple[Connection, str]) -> None:
    connection, queue = env
    router = Router()
    seen: list[int] = []

    @router.actor(queue=queue)
    async def item(n: int) -> None:
        seen.append(n)

    jobs = [Job("item", queue=queue, args={"n": n}, _connection=connection) for n in range(50)]
    keys = await asyncio.wait_for(enqueue_many(jobs), TIMEOUT)
    assert len({k.id_ for k in keys}) == 50
    assert await run_worker(connection, router, 50) == 50
    assert sorted(seen) == list(range(50))
