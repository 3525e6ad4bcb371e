"""Faults between a run and its settle, lost queues, health, a second stop signal and the
size limit, on the in-memory broker (the Redis and RabbitMQ forms are in
tests/integration/test_faults_all_brokers.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    MessageBroker,
    MessageCategory,
    MessageDependency,
    MessageTooLargeError,
    Queue,
    RabbitMessageBroker,
    RedisMessageBroker,
    Router,
    Worker,
)
from repid.brokers.base import DEAD_REASON_HEADER, DEFAULT_MAX_MESSAGE_SIZE
from repid.data import BucketT
from repid.serializer import to_json
from repid.worker._processor import RECOVERIES_HEADER

TIMEOUT = 10


class FlakyResults(InMemoryBucketBroker):
    """A results store that is down while `down` is True."""

    def __init__(self) -> None:
        super().__init__(use_result_bucket=True)
        self.down = False
        self.refused = 0

    async def _store_bucket(self, id_: str, payload: BucketT) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("results store unreachable")
        await super()._store_bucket(id_, payload)


async def _connect(results: InMemoryBucketBroker | None = None,
                   broker: InMemoryMessageBroker | None = None,
                   plugins: tuple[object, ...] = ()) -> Connection:
    conn = Connection(broker or InMemoryMessageBroker(), results_bucket_broker=results,
                      plugins=plugins)
    await conn.connect()
    await Queue(_connection=conn).declare()
    return conn


async def _wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `predicate` (state another task changes) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_results_store_outage_never_stalls_a_worker() -> None:
    """With tasks_limit=2, more failed result stores than slots: every job enqueued after
    the outage still runs, and those that failed run again and store their results."""
    results = FlakyResults()
    conn = await _connect(results)
    router = Router()
    ran: list[int] = []

    @router.actor
    async def work(n: int) -> int:
        ran.append(n)
        return n

    worker = Worker(routers=[router], _connection=conn, tasks_limit=2)
    task = asyncio.create_task(worker.run())
    results.down = True
    failed = [Job("work", args={"n": i}, _connection=conn) for i in range(6)]
    for job in failed:
        await job.enqueue()
    await _wait_for(lambda: results.refused >= 6)
    results.down = False
    later = [Job("work", args={"n": 100 + i}, _connection=conn) for i in range(5)]
    for job in later:
        await job.enqueue()
    await _wait_for(lambda: {100, 101, 102, 103, 104} <= set(ran))
    # the ones whose result could not be stored come back after the recovery delay
    for job in failed:
        assert job.result_id is not None
        await _wait_for(lambda j=job: j.result_id in results.buckets)
    worker.stop()
    runner = await asyncio.wait_for(task, TIMEOUT)
    assert runner.settle_failures == 6
    stats = await Queue(_connection=conn).stats()
    assert stats == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_a_result_store_that_keeps_failing_ends_in_the_dead_letters() -> None:
    results = FlakyResults()
    results.down = True
    conn = await _connect(results, InMemoryMessageBroker(max_deliveries=3))
    router = Router()
    runs: list[int] = []

    @router.actor
    async def work() -> None:
        runs.append(1)

    await Job("work", _connection=conn).enqueue()
    worker = Worker(routers=[router], _connection=conn, tasks_limit=1)
    task = asyncio.create_task(worker.run())
    messages = Queue(_connection=conn)

    async def dead() -> list[object]:
        return [m async for m in messages.get_messages(category=MessageCategory.DEAD,
                                                       stop_when_empty=True)]

    await _wait_for(lambda: bool(conn.message_broker.queues["default"].dead))  # type: ignore[attr-defined]
    [message] = await dead()
    worker.stop()
    await asyncio.wait_for(task, TIMEOUT)
    assert len(runs) == 3
    headers = message.parameters.headers  # type: ignore[attr-defined]
    assert headers[RECOVERIES_HEADER] == "2"
    assert headers[DEAD_REASON_HEADER] == (
        "could not be settled 3 times; last: ConnectionError: results store unreachable")


def raising_policy(retry_number: int) -> float:
    raise RuntimeError("policy bug")


async def test_a_retry_policy_that_raises_is_recovered_then_dead_lettered() -> None:
    conn = await _connect(None, InMemoryMessageBroker(max_deliveries=2))
    router = Router()

    @router.actor(retry_policy=raising_policy)
    async def work() -> None:
        raise ValueError("boom")

    await Job("work", retries=3, _connection=conn).enqueue()
    worker = Worker(routers=[router], _connection=conn, tasks_limit=1, messages_limit=2)
    runner = await asyncio.wait_for(worker.run(), TIMEOUT)
    assert runner.settle_failures == 2
    [dead] = [m async for m in Queue(_connection=conn).get_messages(
        category=MessageCategory.DEAD, stop_when_empty=True)]
    assert dead.parameters.headers[DEAD_REASON_HEADER].endswith("RuntimeError: policy bug")


class FailingAcks(InMemoryMessageBroker):
    """An ack that fails the first `failures` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def _ack(self, key, handle):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise ConnectionError("connection lost during ack")
        await super()._ack(key, handle)


async def test_failed_acks_free_their_slots() -> None:
    conn = await _connect(None, FailingAcks(failures=3))
    router = Router()
    ran: list[int] = []

    @router.actor
    async def work(n: int) -> None:
        ran.append(n)

    for i in range(6):
        await Job("work", args={"n": i}, _connection=conn).enqueue()
    worker = Worker(routers=[router], _connection=conn, tasks_limit=1, messages_limit=6)
    runner = await asyncio.wait_for(worker.run(), TIMEOUT)
    assert sorted(ran) == list(range(6))
    assert runner.settle_failures == 3


async def test_a_deleted_queue_is_declared_again_by_the_worker() -> None:
    conn = await _connect()
    router = Router()
    ran: list[str] = []

    @router.actor
    async def work(tag: str) -> None:
        ran.append(tag)

    worker = Worker(routers=[router], _connection=conn)
    task = asyncio.create_task(worker.run())
    await Job("work", args={"tag": "before"}, _connection=conn).enqueue()
    await _wait_for(lambda: ran == ["before"])
    await Queue(_connection=conn).delete()

    async def enqueue_when_declared() -> None:
        while True:
            try:
                await Job("work", args={"tag": "after"}, _connection=conn).enqueue()
                return
            except KeyError:  # QueueNotDeclaredError until the worker declared it again
                await asyncio.sleep(0.01)

    await asyncio.wait_for(enqueue_when_declared(), TIMEOUT)
    await _wait_for(lambda: ran == ["before", "after"])
    worker.stop()
    await asyncio.wait_for(task, TIMEOUT)


async def test_no_redeclare_without_auto_declare_and_health_says_why() -> None:
    conn = await _connect()
    router = Router()

    @router.actor
    async def work() -> None:
        pass

    worker = Worker(routers=[router], _connection=conn, auto_declare=False)
    task = asyncio.create_task(worker.run())
    await _wait_for(lambda: worker.runner is not None)
    assert worker.health_problem(after=0) is None
    await Queue(_connection=conn).delete()
    await _wait_for(lambda: worker.health_problem(after=0) is not None)
    problem = worker.health_problem(after=0)
    assert problem is not None
    assert "'default'" in problem and "not declared" in problem
    assert worker.health_problem(after=60) is None  # not for long enough yet
    await Queue(_connection=conn).declare()
    await Job("work", _connection=conn).enqueue()
    await _wait_for(lambda: worker.health_problem(after=0) is None, timeout=5)
    worker.stop()
    await asyncio.wait_for(task, TIMEOUT)


async def test_a_second_signal_returns_running_jobs_at_once() -> None:
    conn = await _connect()
    router = Router()
    started = asyncio.Event()

    @router.actor
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    await Job("slow", _connection=conn).enqueue()
    worker = Worker(routers=[router], _connection=conn, graceful_shutdown_time=20,
                    handle_signals=[signal.SIGUSR1])
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.sleep(0.2)
    assert not task.done()  # the first signal waits for the grace time
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(task, 3)
    assert loop.time() - begun < 3
    stats = await Queue(_connection=conn).stats()
    assert stats["ready"] == 1 and stats["in_flight"] == 0


async def test_a_message_over_the_size_limit_is_refused_naming_its_size() -> None:
    conn = await _connect(None, InMemoryMessageBroker(max_message_size=1000))
    await Job("work", args={"text": "x" * 900}, _connection=conn).enqueue()
    with pytest.raises(MessageTooLargeError) as info:
        await Job("work", args={"text": "é" * 600}, _connection=conn).enqueue()
    args = to_json({"text": "é" * 600})
    assert info.value.size == len(args.encode()) > 1000
    assert f"{info.value.size:,} bytes" in str(info.value)
    assert "max_message_size of 1,000" in str(info.value)
    assert (await Queue(_connection=conn).stats())["ready"] == 1
    assert InMemoryMessageBroker().max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 16 << 20


@pytest.mark.parametrize("make", [
    lambda **limits: InMemoryMessageBroker(**limits),
    lambda **limits: RedisMessageBroker("redis://127.0.0.1:6379/0", **limits),
    lambda **limits: RabbitMessageBroker("amqp://guest:guest@127.0.0.1:5672/", **limits),
], ids=["in_memory", "redis", "rabbitmq"])
def test_every_broker_refuses_a_limit_under_one(make: Callable[..., MessageBroker]) -> None:
    for name in ("max_deliveries", "max_message_size"):
        with pytest.raises(ValueError, match=f"{name} is 0; give 1 or more"):
            make(**{name: 0})
    broker = make(max_deliveries=3, max_message_size=1000)
    assert (broker.max_deliveries, broker.max_message_size) == (3, 1000)


def test_max_deliveries_of_an_actor_must_be_positive() -> None:
    router = Router()
    with pytest.raises(ValueError, match="max_deliveries is 0"):
        router.actor(name="zero", max_deliveries=0)(lambda: None)
    router.actor(name="ok", max_deliveries=2)(lambda: None)
    assert router.actors["ok"].max_deliveries == 2


class CountingBroker(InMemoryMessageBroker):
    """Reports the delivery counts a test sets, by job name (as Redis and RabbitMQ count
    deliveries that ended unsettled)."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__()
        self.counts = counts

    def delivery_count(self, message):  # type: ignore[no-untyped-def]
        # the worker asks with the Delivery; 1.x-style callers with its key
        key = getattr(message, "key", message)
        return self.counts.get(key.topic, 1)


async def test_suspects_run_alone_and_past_the_limit_are_dead_lettered() -> None:
    broker = CountingBroker({"suspect": 3, "worn": 6})
    conn = await _connect(None, broker)
    router = Router()
    running: set[str] = set()
    beside: dict[str, set[str]] = {}

    def make(name: str) -> None:
        async def run() -> None:
            beside[name] = set(running)
            running.add(name)
            await asyncio.sleep(0.05)
            beside[name] |= running - {name}
            running.discard(name)

        router.actor(name=name)(run)

    for name in ("a", "b", "suspect", "c", "d", "worn"):
        make(name)
        await Job(name, _connection=conn).enqueue()
    runner = await asyncio.wait_for(
        Worker(routers=[router], _connection=conn, messages_limit=6).run(), TIMEOUT)
    assert runner.processed == 6
    assert beside["suspect"] == set()  # nothing ran beside it
    assert all("suspect" not in others for others in beside.values())
    assert "worn" not in beside  # delivered 6 times (limit 5): never run
    [dead] = [m async for m in Queue(_connection=conn).get_messages(
        category=MessageCategory.DEAD, stop_when_empty=True)]
    assert dead.key.topic == "worn"
    assert dead.parameters.headers[DEAD_REASON_HEADER].startswith(
        "delivered 6 times without being settled (limit 5)")


async def test_a_rescheduled_dead_letter_starts_afresh() -> None:
    conn = await _connect()
    router = Router()
    runs: list[int] = []

    @router.actor
    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first time")

    await Job("flaky", _connection=conn).enqueue()
    await asyncio.wait_for(Worker(routers=[router], _connection=conn,
                                  messages_limit=1).run(), TIMEOUT)
    queue = Queue(_connection=conn)
    [dead] = [m async for m in queue.get_messages(category=MessageCategory.DEAD,
                                                  stop_when_empty=True)]
    assert DEAD_REASON_HEADER in dead.parameters.headers
    await dead.reschedule()
    seen: list[dict[str, str]] = []

    @router.actor(name="flaky")
    async def again(msg: MessageDependency) -> None:
        seen.append(dict(msg.parameters.headers))

    await asyncio.wait_for(Worker(routers=[router], _connection=conn,
                                  messages_limit=1).run(), TIMEOUT)
    assert seen == [{}]


async def test_a_requeue_after_a_flush_has_no_effect() -> None:
    conn = await _connect()
    await Job("x", _connection=conn).enqueue()
    queue = Queue(_connection=conn)
    async for message in queue.get_messages():
        await queue.flush()
        await message.force_retry(0)
        break
    assert await queue.stats() == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
