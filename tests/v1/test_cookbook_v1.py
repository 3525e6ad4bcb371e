"""repid 1.x cookbook pages, run as a 1.x user brings them.

"Chaining jobs": on Redis the first `enqueue()` needs no `Queue.declare()` (repid 1.x's
Redis broker never asked for one): the enqueue declares the queue in the same script, so
workers, stats and readers see it; `require_declared_queues=True` keeps the strict refusal.

"Reschedule dead messages": `Queue.get_messages(category=DEAD)` (and DELAYED) waits for new
messages as repid 1.x did, so `asyncio.wait_for(anext(iterator), timeout)` times out instead
of ending the loop with StopAsyncIteration; `stop_when_empty=True` is the finite scan. Each
broker is run against its real server (in-memory in this process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Message,
    MessageCategory,
    MessageDependency,
    Queue,
    RedisBucketBroker,
    RedisMessageBroker,
    Router,
    Worker,
)
from repid.brokers.base import MessageBroker
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.errors import QueueNotDeclaredError

TIMEOUT = 10.0
#: the Redis db the chaining program runs in (it uses the default queue, so it gets a db of
#: its own, flushed before and after)
CHAINING_DB = 11

BROKERS = ["in_memory", pytest.param("redis", marks=pytest.mark.integration),
           pytest.param("rabbitmq", marks=pytest.mark.integration)]


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


def _db(dsn: str, db: int) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


# --- chaining jobs (Redis: enqueue without declare) ---

CHAINING_PROGRAM = '''
import asyncio
import logging
import os

from repid import (Connection, Job, MessageDependency, RedisBucketBroker,
                   RedisMessageBroker, Repid, Router, Worker)

messages_dsn = os.environ.get("REDIS_CONNECTION")
args_and_results_dsn = os.environ.get("REDIS_ARGS_CONNECTION")

connection = Connection(
    message_broker=RedisMessageBroker(messages_dsn),
    args_bucket_broker=RedisBucketBroker(args_and_results_dsn),
    results_bucket_broker=RedisBucketBroker(args_and_results_dsn, use_result_bucket=True),
)
app = Repid(connection)
router = Router()


@router.actor
async def add_hello(msg: MessageDependency, user_name: str, user_id: int) -> dict:
    msg.set_result(dict(user_id=user_id, greetings=f"Hello {user_name}!"))
    j = Job("add_id", args_id=msg.parameters.result.id_, result_id="some_result_id")
    msg.add_callback(j.enqueue)
    await msg.ack()


@router.actor
async def add_id(user_id: int, greetings: str) -> str:
    return f"{greetings} Your id is {user_id}."


async def main() -> None:
    async with app.magic(auto_disconnect=True):
        w = Worker(routers=[router], messages_limit=2)
        await Job("add_hello", args=dict(user_name="Alex", user_id=123),
                  result_id="chained_id").enqueue()
        await w.run()
        result_bucket = await Job("add_id", result_id="some_result_id").result
        print(result_bucket.data)


if __name__ == "__main__":
    asyncio.run(main())
'''


@pytest.fixture
async def chaining_dsn(redis_dsn: str) -> AsyncIterator[str]:
    """A Redis db of the chaining program's own, empty before and flushed after."""
    dsn = _db(redis_dsn, CHAINING_DB)
    client = Redis.from_url(dsn)
    await client.flushdb()
    try:
        yield dsn
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.mark.integration
def test_chaining_cookbook_program_runs_on_redis(chaining_dsn: str, tmp_path: Path) -> None:
    """The whole page, no queue declared: waits on the eager `msg.set_result` (a plain
    call) and `await msg.ack()` ending the actor and running its callbacks."""
    script = tmp_path / "chaining.py"
    script.write_text(textwrap.dedent(CHAINING_PROGRAM))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("REPID_", "PYTEST_"))}
    env.update(REDIS_CONNECTION=chaining_dsn, REDIS_ARGS_CONNECTION=chaining_dsn)
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                          capture_output=True, timeout=60, check=False)
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert done.stdout.decode().strip().splitlines()[-1] == "Hello Alex! Your id is 123."


@asynccontextmanager
async def _redis_broker(redis_dsn: str, **options: Any) -> AsyncIterator[RedisMessageBroker]:
    broker = RedisMessageBroker(redis_dsn, **options)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.disconnect()


@pytest.mark.integration
async def test_redis_enqueue_declares_the_queue(redis_dsn: str) -> None:
    queue = _name("undeclared")
    async with _redis_broker(redis_dsn) as broker:
        assert not broker.require_declared_queues
        conn = Connection(broker)
        await conn.connect()
        try:
            await Job("first", queue=queue, _connection=conn).enqueue()
            await broker.enqueue_many([])  # nothing to send, nothing refused
            # declared: stats count it, a DEAD reader accepts the queue, a worker runs it
            assert (await Queue(queue, _connection=conn).stats())["ready"] == 1
            assert [m async for m in Queue(queue, _connection=conn).get_messages(
                category=MessageCategory.DEAD, stop_when_empty=True)] == []
            ran: list[str] = []
            router = Router()

            @router.actor(name="first", queue=queue)
            async def first() -> None:
                ran.append("first")

            await asyncio.wait_for(Worker(routers=[router], messages_limit=1,
                                          auto_declare=False, _connection=conn).run(),
                                   TIMEOUT)
            assert ran == ["first"]
        finally:
            await Queue(queue, _connection=conn).delete()
            await conn.disconnect()


@pytest.mark.integration
async def test_redis_strict_option_still_refuses_an_undeclared_queue(redis_dsn: str) -> None:
    queue = _name("typo")
    async with _redis_broker(redis_dsn, require_declared_queues=True) as broker:
        conn = Connection(broker)
        await conn.connect()
        try:
            with pytest.raises(QueueNotDeclaredError, match="declare"):
                await Job("first", queue=queue, _connection=conn).enqueue()
            await Queue(queue, _connection=conn).declare()
            await Job("first", queue=queue, _connection=conn).enqueue()
            assert (await Queue(queue, _connection=conn).stats())["ready"] == 1
        finally:
            await Queue(queue, _connection=conn).delete()
            await conn.disconnect()


@pytest.mark.integration
async def test_redis_actor_chains_jobs_into_undeclared_queues(redis_dsn: str) -> None:
    """An actor enqueues into a queue nobody declared, directly and through
    `msg.add_callback(job.enqueue)`; both land and run."""
    first, direct, chained = _name("first"), _name("direct"), _name("chained")
    async with _redis_broker(redis_dsn) as broker:
        conn = Connection(broker, args_bucket_broker=RedisBucketBroker(redis_dsn))
        await conn.connect()
        ran: list[str] = []
        router = Router()

        @router.actor(name="start", queue=first)
        async def start(msg: MessageDependency, n: int) -> None:
            await Job("direct", queue=direct, args={"n": n + 1}, _connection=conn).enqueue()
            msg.add_callback(Job("chained", queue=chained, args={"n": n + 2},
                                 _connection=conn).enqueue)

        @router.actor(name="direct", queue=direct)
        async def direct_actor(n: int) -> None:
            ran.append(f"direct {n}")

        @router.actor(name="chained", queue=chained)
        async def chained_actor(n: int) -> None:
            ran.append(f"chained {n}")

        try:
            await Job("start", queue=first, args={"n": 1}, _connection=conn).enqueue()
            # auto_declare=False: only the enqueues declare these queues
            await asyncio.wait_for(Worker(routers=[router], messages_limit=3,
                                          auto_declare=False, _connection=conn).run(),
                                   TIMEOUT)
            assert sorted(ran) == ["chained 3", "direct 2"]
        finally:
            for name in (first, direct, chained):
                await Queue(name, _connection=conn).delete()
            await conn.disconnect()


# --- reschedule dead messages (DEAD and DELAYED wait, on every broker) ---

Make = Callable[[], Connection]


@pytest.fixture(params=BROKERS)
def make_connection(request: pytest.FixtureRequest) -> Make:
    """A factory of connections to the broker under test (one broker per test)."""
    kind = request.param
    if kind == "in_memory":
        broker: MessageBroker = InMemoryMessageBroker()
        buckets = InMemoryBucketBroker()
        return lambda: Connection(broker, args_bucket_broker=buckets)
    if kind == "redis":
        dsn = request.getfixturevalue("redis_dsn")
        return lambda: Connection(RedisMessageBroker(dsn),
                                  args_bucket_broker=RedisBucketBroker(dsn))
    dsn = request.getfixturevalue("amqp_dsn")
    redis_dsn = request.getfixturevalue("redis_dsn")
    return lambda: Connection(RabbitMessageBroker(dsn),
                              args_bucket_broker=RedisBucketBroker(redis_dsn))


@asynccontextmanager
async def _queue(make: Make) -> AsyncIterator[tuple[Connection, Queue]]:
    conn = make()
    await conn.connect()
    queue = Queue(_name("q"), _connection=conn)
    await queue.declare()
    try:
        yield conn, queue
    finally:
        await queue.delete()
        await conn.disconnect()


async def _dead_letter(conn: Connection, queue: Queue, topic: str, n: int = 0) -> None:
    """Enqueue a job and dead-letter it (take it and nack it)."""
    await Job(topic, queue=queue.name, args={"n": n}, _connection=conn).enqueue()
    taking = queue.get_messages()
    try:
        message = await asyncio.wait_for(anext(taking), TIMEOUT)
        await message.nack()
    finally:
        await taking.aclose()


async def _next(iterator: AsyncIterator[Message], within: float = TIMEOUT) -> Message:
    return await asyncio.wait_for(anext(iterator), within)


async def test_dead_messages_are_waited_for(make_connection: Make) -> None:
    """The cookbook's second program: a dead message already there, then one dead-lettered
    after the iteration started, then `wait_for(anext(...))` times out."""
    async with _queue(make_connection) as (conn, queue):
        await _dead_letter(conn, queue, "before")
        iterator = queue.get_messages(category=MessageCategory.DEAD)
        try:
            assert (await _next(iterator)).key.topic == "before"
            waiting = asyncio.ensure_future(_next(iterator))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # no StopAsyncIteration: it waits
            await _dead_letter(conn, queue, "after")
            assert (await waiting).key.topic == "after"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(iterator), 1)
        finally:
            await iterator.aclose()
        # only read, never settled: both are still dead
        dead = [m async for m in queue.get_messages(category=MessageCategory.DEAD,
                                                     stop_when_empty=True)]
        assert sorted(m.key.topic for m in dead) == ["after", "before"]


async def test_rescheduled_dead_message_runs_in_a_worker(make_connection: Make) -> None:
    """The cookbook's first program, stopped once the worker ran what it rescheduled; a
    message sent back that dies again is yielded again."""
    async with _queue(make_connection) as (conn, queue):
        await _dead_letter(conn, queue, "work", 7)
        ran: list[int] = []
        router = Router()

        @router.actor(name="work", queue=queue.name)
        async def work(n: int) -> None:
            ran.append(n)
            if len(ran) == 1:
                raise RuntimeError("dies once more")

        async def reschedule_dead() -> None:
            async for msg in queue.get_messages(category=MessageCategory.DEAD):
                await msg.reschedule()

        rescheduler = asyncio.ensure_future(reschedule_dead())
        try:
            worker = Worker(routers=[router], messages_limit=2, _connection=conn)
            await asyncio.wait_for(worker.run(), TIMEOUT)
        finally:
            rescheduler.cancel()
            await asyncio.gather(rescheduler, return_exceptions=True)
        assert ran == [7, 7]  # the first run died (no retries: dead again), then rescheduled
        stats = await queue.stats()
        assert (stats["ready"], stats["dead"]) == (0, 0)


async def test_delayed_messages_are_waited_for(make_connection: Make) -> None:
    async with _queue(make_connection) as (conn, queue):
        iterator = queue.get_messages(category=MessageCategory.DELAYED)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(iterator), 1)
        finally:
            await iterator.aclose()
        iterator = queue.get_messages(category=MessageCategory.DELAYED)
        try:
            waiting = asyncio.ensure_future(_next(iterator))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await Job("later", queue=queue.name, deferred_by=3600, _connection=conn).enqueue()
            assert (await waiting).key.topic == "later"
        finally:
            await iterator.aclose()


async def test_stop_when_empty_is_the_finite_scan(make_connection: Make) -> None:
    async with _queue(make_connection) as (conn, queue):
        await _dead_letter(conn, queue, "dead")
        for _ in range(2):  # read, not settled: there again for the next reader
            dead = [m async for m in queue.get_messages(category=MessageCategory.DEAD,
                                                         stop_when_empty=True)]
            assert [m.key.topic for m in dead] == ["dead"]
        assert [m async for m in queue.get_messages(category=MessageCategory.DELAYED,
                                                     stop_when_empty=True)] == []
        with pytest.raises(ValueError, match="stop_when_empty"):
            await anext(queue.get_messages(stop_when_empty=True))


async def test_a_cancelled_take_never_strands_a_dead_message(
        make_connection: Make, caplog: pytest.LogCaptureFixture) -> None:
    """`wait_for(anext(...))` may cancel a take at any moment, even while the broker answers
    (RabbitMQ's basic.get, whose cancel would otherwise close the reader's channel and with
    it every message read and not yet settled): each message is handed out by a later take
    of the same reader, nothing goes wrong on the way, and all of them can be settled."""
    async with _queue(make_connection) as (conn, queue):
        broker = conn.message_broker
        reader = broker.consume(queue.name, category=MessageCategory.DEAD)
        await reader.start()
        caplog.clear()
        got: list[Any] = []
        try:
            for round_ in range(3):
                await _dead_letter(conn, queue, f"dead{round_}")
                for step in range(1, 60):  # cancelled after 50 µs, 100 µs, ...
                    try:
                        got.append(await asyncio.wait_for(reader.__anext__(), step * 5e-5))
                        break
                    except asyncio.TimeoutError:
                        continue
                else:
                    got.append(await asyncio.wait_for(reader.__anext__(), TIMEOUT))
            assert [key.topic for key, _, _ in got] == [f"dead{n}" for n in range(3)]
            assert reader.problem is None
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
            for key, _, _ in got:  # every one is still held by the reader's live channel
                await broker.ack(key)
        finally:
            await reader.finish()
        assert [m async for m in queue.get_messages(category=MessageCategory.DEAD,
                                                     stop_when_empty=True)] == []


async def test_an_abandoned_wait_leaves_later_dead_messages_for_the_next_reader(
        make_connection: Make) -> None:
    """The cookbook's loop exits on TimeoutError; a message dead-lettered afterwards waits
    for the next run."""
    async with _queue(make_connection) as (conn, queue):
        iterator = queue.get_messages(category=MessageCategory.DEAD)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(iterator), 0.5)
        await iterator.aclose()
        await _dead_letter(conn, queue, "late")
        again = queue.get_messages(category=MessageCategory.DEAD)
        try:
            msg = await _next(again)
            assert msg.key.topic == "late"
            await msg.reschedule()
        finally:
            await again.aclose()
        assert (await queue.stats())["ready"] == 1
