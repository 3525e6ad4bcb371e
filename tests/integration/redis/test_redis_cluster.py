"""RedisMessageBroker on a Redis Cluster of three masters (tests/servers/redis_cluster.py).

Queues are picked by their slot, one served by each master; each test shows on them what
the broker promises on one server: enqueue, consume and ack, delays, dead letters,
priorities, stats, the index of queue names. A node stopped and started again while a
worker runs loses nothing confirmed, and work resumes by itself. A queue declared by the
previous layout (only in the global set `<prefix>:queues`) keeps working on one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from repid import (
    Connection,
    InMemoryBucketBroker,
    Job,
    MessageCategory,
    PrioritiesT,
    Queue,
    RedisBucketBroker,
    RedisMessageBroker,
    Router,
    Worker,
)
from repid.brokers.base import DEAD_REASON_HEADER
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError
from tests.servers.redis_cluster import PrivateRedisCluster, free_ports

pytestmark = pytest.mark.integration

TIMEOUT = 20


def spread(cluster: PrivateRedisCluster, what: str) -> list[str]:
    """Fresh queue names, the i-th served by the i-th master (picked by their slot)."""
    run = uuid.uuid4().hex[:8]
    found: dict[int, str] = {}
    for n in itertools.count():
        name = f"{what}-{run}-{n}"
        found.setdefault(cluster.owner_of(key_slot(f"repid:{{{name}}}:msgs".encode())), name)
        if len(found) == len(cluster.ports):
            return [found[index] for index in range(len(cluster.ports))]
    raise AssertionError("unreachable")


async def until(predicate: Callable[[], Awaitable[Any]], what: str,
                timeout: float = TIMEOUT) -> Any:
    """The first true answer of `predicate`, asked every 50 ms for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (answer := await predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return answer


@pytest.fixture
async def connection(redis_cluster_dsn: str) -> AsyncIterator[Connection]:
    """A connected Connection to the cluster: messages and results both on it."""
    conn = Connection(RedisMessageBroker(redis_cluster_dsn, lease_time=timedelta(seconds=3)),
                      results_bucket_broker=RedisBucketBroker(redis_cluster_dsn,
                                                              use_result_bucket=True))
    await asyncio.wait_for(conn.connect(), TIMEOUT)
    yield conn
    await conn.disconnect()


@pytest.fixture
async def queues(redis_cluster: PrivateRedisCluster,
                 connection: Connection) -> AsyncIterator[list[str]]:
    """Three declared queues, one on each master; deleted afterwards."""
    names = spread(redis_cluster, "cl")
    for name in names:
        await connection.message_broker.queue_declare(name)
    yield names
    for name in names:
        await connection.message_broker.queue_delete(name)


async def run_worker(connection: Connection, router: Router, limit: int,
                     **kwargs: Any) -> int:
    worker = Worker(routers=[router], messages_limit=limit, handle_signals=[],
                    _connection=connection, **kwargs)
    runner = await asyncio.wait_for(worker.run(), TIMEOUT)
    return runner.processed


async def test_each_queue_lives_on_its_master_and_runs_its_jobs(
        redis_cluster: PrivateRedisCluster, connection: Connection,
        queues: list[str]) -> None:
    router = Router()
    ran: dict[str, list[int]] = {queue: [] for queue in queues}

    def add_actor(index: int, queue: str) -> None:
        @router.actor(name=f"work{index}", queue=queue)
        async def work(n: int) -> int:
            ran[queue].append(n)
            return n * 10

    for index, queue in enumerate(queues):
        add_actor(index, queue)

    jobs = [Job(f"work{index}", queue=queue, args={"n": n}, _connection=connection)
            for index, queue in enumerate(queues) for n in range(10)]
    for job in jobs:
        await job.enqueue()
    for index, queue in enumerate(queues):
        # every key of the queue is on the master its slot belongs to (the others answer
        # MOVED for it)
        node = Redis(host="127.0.0.1", port=redis_cluster.ports[index])
        try:
            assert await node.exists(f"repid:{{{queue}}}:declared") == 1
            assert await node.hlen(f"repid:{{{queue}}}:msgs") == 10
        finally:
            await node.aclose()
    assert await run_worker(connection, router, 30) == 30
    assert all(sorted(ran[queue]) == list(range(10)) for queue in queues), ran
    result = await jobs[-1].result  # the results bucket broker works on the cluster too
    assert result is not None and result.success and result.data == 90
    for queue in queues:
        assert await connection.message_broker.queue_stats(queue) == {
            "ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_delays_on_every_master(connection: Connection, queues: list[str]) -> None:
    router = Router()
    started = time.monotonic()
    ran_after: dict[str, float] = {}

    def add_actor(index: int, queue: str) -> None:
        @router.actor(name=f"later{index}", queue=queue)
        async def later() -> None:
            ran_after[queue] = time.monotonic() - started

    for index, queue in enumerate(queues):
        add_actor(index, queue)

    for index, queue in enumerate(queues):
        await Job(f"later{index}", queue=queue, deferred_by=timedelta(seconds=1.5),
                  _connection=connection).enqueue()
        stats = await connection.message_broker.queue_stats(queue)
        assert stats["delayed"] == 1 and stats["ready"] == 0
    assert await run_worker(connection, router, 3) == 3
    assert set(ran_after) == set(queues)
    assert all(1.3 <= after <= 5.0 for after in ran_after.values()), ran_after


async def test_priorities_on_every_master(connection: Connection, queues: list[str]) -> None:
    router = Router()
    order: dict[str, list[str]] = {queue: [] for queue in queues}

    def add_actor(index: int, queue: str) -> None:
        @router.actor(name=f"prio{index}", queue=queue)
        async def prio(level: str) -> None:
            order[queue].append(level)

    for index, queue in enumerate(queues):
        add_actor(index, queue)

    levels = [PrioritiesT.LOW, PrioritiesT.MEDIUM, PrioritiesT.HIGH] * 2
    for index, queue in enumerate(queues):
        for level in levels:
            await Job(f"prio{index}", queue=queue, priority=level, args={"level": level.name},
                      _connection=connection).enqueue()
    assert await run_worker(connection, router, 18, tasks_limit=1) == 18
    for queue in queues:
        assert order[queue] == ["HIGH", "HIGH", "MEDIUM", "MEDIUM", "LOW", "LOW"], order


async def test_dead_letters_on_every_master(connection: Connection,
                                            queues: list[str]) -> None:
    router = Router()
    for index, queue in enumerate(queues):
        @router.actor(name=f"broken{index}", queue=queue)
        async def broken() -> None:
            raise RuntimeError("broken on purpose")

    for index, queue in enumerate(queues):
        await Job(f"broken{index}", queue=queue, retries=0, _connection=connection).enqueue()
    assert await run_worker(connection, router, 3) == 3
    for queue in queues:
        assert (await connection.message_broker.queue_stats(queue))["dead"] == 1
        dead = [m async for m in Queue(queue, _connection=connection).get_messages(
            category=MessageCategory.DEAD, stop_when_empty=True)]
        assert len(dead) == 1
        assert "broken on purpose" in dead[0].parameters.headers.get(DEAD_REASON_HEADER, "")


async def test_stats_and_listing_through_the_index(redis_cluster: PrivateRedisCluster,
                                                   redis_cluster_dsn: str) -> None:
    names = spread(redis_cluster, "ix")
    broker = RedisMessageBroker(redis_cluster_dsn)
    strict = RedisMessageBroker(redis_cluster_dsn, require_declared_queues=True)
    await broker.connect()
    await strict.connect()
    try:
        connection = Connection(broker, results_bucket_broker=InMemoryBucketBroker())
        # an enqueue declares its queue (on the queue's node) and lists it (the index)
        await Job("x", queue=names[0], _connection=connection).enqueue()
        await broker.queue_declare(names[1])
        listed = await broker.queue_names() or []
        assert names[0] in listed and names[1] in listed and names[2] not in listed
        assert (await broker.queue_stats(names[0]))["ready"] == 1
        assert (await broker.queue_stats(names[1]))["ready"] == 0
        with pytest.raises(QueueNotDeclaredError):
            await broker.queue_stats(names[2])
        # a broker that needs declared queues refuses the undeclared one, accepts the others
        strict_connection = Connection(strict, results_bucket_broker=InMemoryBucketBroker())
        with pytest.raises(QueueNotDeclaredError):
            await Job("x", queue=names[2], _connection=strict_connection).enqueue()
        await Job("x", queue=names[1], _connection=strict_connection).enqueue()
        assert (await broker.queue_stats(names[1]))["ready"] == 1
        # a delete takes the queue out of the index and removes its keys
        for name in names[:2]:
            await broker.queue_delete(name)
        listed = await broker.queue_names() or []
        assert names[0] not in listed and names[1] not in listed
        with pytest.raises(QueueNotDeclaredError):
            await broker.queue_stats(names[0])
    finally:
        for name in names:
            await broker.queue_delete(name)
        await strict.disconnect()
        await broker.disconnect()


async def test_dsn_forms_and_errors(redis_cluster: PrivateRedisCluster) -> None:
    # a plain DSN of any one node with cluster=True finds the whole cluster
    broker = RedisMessageBroker(f"redis://127.0.0.1:{redis_cluster.ports[1]}/0", cluster=True)
    await asyncio.wait_for(broker.connect(), TIMEOUT)
    try:
        names = spread(redis_cluster, "plain")
        for name in names:
            await broker.queue_declare(name)
            assert (await broker.queue_stats(name))["ready"] == 0
            await broker.queue_delete(name)
    finally:
        await broker.disconnect()
    # a cluster has only database 0
    with pytest.raises(ValueError, match="only database 0"):
        await RedisMessageBroker(f"{redis_cluster.dsn}3").connect()
    # a password the cluster does not check: refused, and never shown
    hosts = ",".join(f"127.0.0.1:{port}" for port in redis_cluster.ports)
    with pytest.raises(BrokerConnectionError) as caught:
        await asyncio.wait_for(
            RedisMessageBroker(f"redis+cluster://:s3cret-pw@{hosts}/").connect(), TIMEOUT)
    assert "s3cret-pw" not in str(caught.value) and "***" in str(caught.value)
    # nothing listens: a connection error naming the DSN, password masked
    with pytest.raises(BrokerConnectionError) as caught:
        await asyncio.wait_for(RedisMessageBroker(
            "redis+cluster://:pw-never-shown@127.0.0.1:1,127.0.0.1:2/",
            retries=0).connect(), TIMEOUT)
    assert "pw-never-shown" not in str(caught.value)
    assert "127.0.0.1:1," in str(caught.value)


async def test_queue_of_the_previous_layout_keeps_working(redis_dsn: str) -> None:
    """On one server, a queue listed only in `<prefix>:queues` (how queues were declared
    before each had its own mark) is declared: stats, consume and strict enqueues work,
    and it gets its mark on first sight."""
    queue = f"legacy-{uuid.uuid4().hex[:10]}"
    mark = f"repid:{{{queue}}}:declared"
    broker = RedisMessageBroker(redis_dsn, require_declared_queues=True)
    raw = Redis.from_url(redis_dsn, decode_responses=True)
    connection = Connection(broker, results_bucket_broker=InMemoryBucketBroker())
    await connection.connect()
    try:
        router = Router()
        ran: list[int] = []

        @router.actor(queue=queue)
        async def old() -> None:
            ran.append(1)

        await broker.queue_declare(queue)
        await Job("old", queue=queue, _connection=connection).enqueue()
        # the previous layout: the name in the global set, no mark of its own
        for check in ("stats", "enqueue", "consume"):
            await raw.delete(mark)
            assert await raw.sismember("repid:queues", queue)
            if check == "stats":
                assert (await broker.queue_stats(queue))["ready"] == 1
            elif check == "enqueue":
                await Job("old", queue=queue, _connection=connection).enqueue()
            else:
                assert await run_worker(connection, router, 2) == 2
                assert ran == [1, 1]
            assert await raw.get(mark) == "1", check
        assert queue in (await broker.queue_names() or [])
    finally:
        await broker.queue_delete(queue)
        await connection.disconnect()
        await raw.aclose()


@pytest.mark.timeout(120)
async def test_node_stopped_and_started_while_a_worker_runs() -> None:
    """Jobs on three queues (one per master) while the master of one queue is SIGKILLed
    for 3 s and started again on its data: every confirmed job runs, the other queues keep
    running meanwhile, the worker's health check names the stopped node's queue while it
    is down (its /healthz answers 503) and clears after, and the stopped node's queue
    resumes by itself."""
    cluster = PrivateRedisCluster(free_ports())  # a cluster of its own
    cluster.start()
    try:
        await _stop_and_start_one_node(cluster)
    finally:
        cluster.stop()


async def _stop_and_start_one_node(cluster: PrivateRedisCluster) -> None:
    names = spread(cluster, "rs")
    broker = RedisMessageBroker(cluster.dsn, lease_time=timedelta(seconds=2), retries=2)
    connection = Connection(broker, results_bucket_broker=InMemoryBucketBroker())
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    router = Router()
    ran: dict[int, float] = {}
    for index, queue in enumerate(names):
        await broker.queue_declare(queue)

        @router.actor(name=f"job{index}", queue=queue)
        async def job(n: int) -> None:
            await asyncio.sleep(0.01)
            ran.setdefault(n, time.monotonic())

    confirmed: dict[int, int] = {}  # job number -> queue index
    refused = [0]  # enqueues that raised (the node of their queue was down)

    async def produce(numbers: range) -> None:
        for n in numbers:
            index = n % len(names)
            while True:  # an enqueue that was not confirmed is sent again (ids dedupe)
                try:
                    await Job(f"job{index}", queue=names[index], args={"n": n},
                              id_=f"job-{n}", _connection=connection).enqueue()
                    break
                except EnqueueNotConfirmedError:
                    refused[0] += 1
                    await asyncio.sleep(0.2)
            confirmed[n] = index
            await asyncio.sleep(0.005)

    worker = Worker(routers=[router], handle_signals=[], _connection=connection,
                    graceful_shutdown_time=2)
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(produce(range(0, 150)), TIMEOUT)
        cluster.stop_node(1)
        stopped = time.monotonic()
        producing = asyncio.create_task(produce(range(150, 300)))
        problems: set[str] = set()  # what the health check says meanwhile (503 with it)
        while time.monotonic() - stopped < 3:
            problem = worker.health_problem(after=0)
            if problem is not None:
                problems.add(problem)
            await asyncio.sleep(0.1)
        cluster.start_node(1)
        restarted = time.monotonic()
        await asyncio.wait_for(producing, 40)

        async def all_ran() -> bool:
            return set(confirmed) <= set(ran)

        await until(all_ran, "every confirmed job to run", 40)
        assert refused[0] > 0, "no enqueue met the stopped node"
        # health: a problem naming the stopped node's queue while it was down, none after
        assert any(repr(names[1]) in problem for problem in problems), problems

        async def healthy() -> bool:
            return worker.health_problem(after=0) is None

        await until(healthy, "the health check to clear after the node came back")
        # the queues on the other masters kept running while node 1 was down
        others_during = [n for n, at in ran.items()
                         if confirmed.get(n) != 1 and stopped < at < restarted]
        assert others_during, "no job of the other masters ran while one node was down"
        # and node 1's queue resumed after it came back
        assert any(confirmed.get(n) == 1 and at > restarted for n, at in ran.items())
    finally:
        worker.stop()
        await asyncio.wait_for(running, TIMEOUT)
        for queue in names:
            with contextlib.suppress(BrokerConnectionError):
                await broker.queue_delete(queue)
        await connection.disconnect()
