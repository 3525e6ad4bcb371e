"""RedisMessageBroker against a real Redis: every delivery promise, shown on the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from repid.brokers.base import Consumer, RawMessage
from repid.brokers.redis import RedisMessageBroker
from repid.data import (
    DelayProperties,
    MessageCategory,
    Parameters,
    PrioritiesT,
    RetriesProperties,
    RoutingKey,
    utcnow,
)
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError

pytestmark = pytest.mark.integration


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw(redis_dsn: str) -> AsyncIterator[Redis]:
    """A plain client, to look at and tamper with what the broker stored."""
    client = Redis.from_url(redis_dsn, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def broker(redis_dsn: str) -> AsyncIterator[RedisMessageBroker]:
    b = RedisMessageBroker(redis_dsn, lease_time=timedelta(milliseconds=300),
                           client_name=_name("repid-test"))
    await b.connect()
    yield b
    await b.disconnect()


def message(queue: str, *, id_: str | None = None, priority: int = PrioritiesT.MEDIUM,
            ready_at_in: float | None = None, timeout: float = 30.0,
            headers: dict[str, str] | None = None, payload: str = '{"x": 1}',
            retries: int = 3) -> RawMessage:
    delay = DelayProperties() if ready_at_in is None else DelayProperties(
        next_execution_time=utcnow() + timedelta(seconds=ready_at_in))
    params = Parameters(execution_timeout=timedelta(seconds=timeout),
                        retries=RetriesProperties(retries, 0), delay=delay,
                        headers=dict(headers or {}))
    return RoutingKey(id_=id_ or uuid.uuid4().hex, topic="t", queue=queue,
                      priority=int(priority)), payload, params


async def take(consumer: Consumer, within: float = 3.0) -> RawMessage:
    return await asyncio.wait_for(consumer.__anext__(), within)


async def assert_nothing(consumer: Consumer, within: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(consumer.__anext__(), within)


async def drain(consumer: Consumer) -> list[RawMessage]:
    return [m async for m in consumer]


@contextlib.asynccontextmanager
async def consuming(broker: RedisMessageBroker, queue: str,
                    limit: int | None = 10) -> AsyncIterator[Consumer]:
    consumer = broker.consume(queue, max_unacked_messages=limit)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.finish()


async def test_enqueue_consume_ack(broker: RedisMessageBroker, queue: str) -> None:
    key, payload, params = message(queue, headers={"a": "b"})
    await broker.enqueue(key, payload, params)
    assert (await broker.queue_stats(queue))["ready"] == 1
    async with consuming(broker, queue) as consumer:
        got_key, got_payload, got_params = await take(consumer)
        assert got_key == key
        assert got_payload == payload
        assert got_params.encode() == params.encode()
        assert (await broker.queue_stats(queue))["in_flight"] == 1
        await broker.ack(got_key)
    assert await broker.queue_stats(queue) == {"ready": 0, "delayed": 0, "in_flight": 0,
                                               "dead": 0}


async def test_idle_consumer_wakes_at_once(broker: RedisMessageBroker, queue: str) -> None:
    async with consuming(broker, queue) as consumer:
        await assert_nothing(consumer, 0.2)  # the consumer is now blocked on Redis
        key, payload, params = message(queue)
        started = time.monotonic()
        await broker.enqueue(key, payload, params)
        got, _, _ = await take(consumer)
        assert got == key
        assert time.monotonic() - started < 0.5  # not a 1 s poll
        await broker.ack(got)


async def test_idle_consumers_all_wake_for_a_burst(broker: RedisMessageBroker,
                                                   queue: str) -> None:
    """Only the first message of a burst pushes a wake-up; a full consumer passes it on."""
    consumers = [broker.consume(queue, max_unacked_messages=1) for _ in range(3)]
    for c in consumers:
        await c.start()
    try:
        for c in consumers:
            await assert_nothing(c, 0.1)  # all three are blocked on Redis
        started = time.monotonic()
        await broker.enqueue_many(message(queue) for _ in range(3))
        got = await asyncio.gather(*(take(c) for c in consumers))
        assert time.monotonic() - started < 0.5  # none waited for its 1 s timeout
        assert len({k.id_ for k, _, _ in got}) == 3
        for key, _, _ in got:
            await broker.ack(key)
    finally:
        for c in consumers:
            await c.finish()


async def test_undeclared_queue_raises_when_declared_queues_are_required(
        redis_dsn: str) -> None:
    strict = RedisMessageBroker(redis_dsn, require_declared_queues=True)
    assert strict.require_declared_queues
    await strict.connect()
    try:
        missing = _name("never-declared")
        with pytest.raises(QueueNotDeclaredError) as info:
            await strict.enqueue(*message(missing))
        assert info.value.queue == missing
        assert isinstance(info.value, KeyError)
        assert "declare" in str(info.value)
        with pytest.raises(QueueNotDeclaredError):
            await strict.enqueue_many([message(missing)])
        with pytest.raises(QueueNotDeclaredError):  # nothing stored: still not declared
            await strict.queue_stats(missing)
    finally:
        await strict.disconnect()


async def test_consuming_an_undeclared_queue_raises_until_declared(
        broker: RedisMessageBroker) -> None:
    missing = _name("later")
    with pytest.raises(QueueNotDeclaredError):
        await drain(broker.consume(missing, category=MessageCategory.DEAD, stop_when_empty=True))
    consumer = broker.consume(missing, max_unacked_messages=5)
    await consumer.start()
    try:
        with pytest.raises(QueueNotDeclaredError):
            await take(consumer)
        await broker.queue_declare(missing)
        sent = message(missing)
        await broker.enqueue(*sent)
        got, _, _ = await take(consumer)
        assert got == sent[0]
        await broker.ack(got)
    finally:
        await consumer.finish()
        await broker.queue_delete(missing)


async def test_nack_dead_list_and_requeue_back(broker: RedisMessageBroker, queue: str) -> None:
    headers = {"traceparent": "00-abc-def-01", "k": "v"}
    await broker.enqueue(*message(queue, headers=headers))
    async with consuming(broker, queue) as consumer:
        key, _, _ = await take(consumer)
        await broker.nack(key)
        await assert_nothing(consumer, 0.2)
    assert await broker.queue_stats(queue) == {"ready": 0, "delayed": 0, "in_flight": 0,
                                               "dead": 1}

    dead = await asyncio.wait_for(drain(broker.consume(queue, category=MessageCategory.DEAD,
                                                       stop_when_empty=True)), 3)
    assert len(dead) == 1
    dead_key, dead_payload, dead_params = dead[0]
    assert dead_key == key
    assert dead_params.headers == headers
    await broker.requeue(dead_key, dead_payload, dead_params)
    assert (await broker.queue_stats(queue))["dead"] == 0

    async with consuming(broker, queue) as consumer:
        back, _, back_params = await take(consumer)
        assert back == key
        assert back_params.headers == headers
        await broker.nack(back)

    # a dead message read and acked is deleted
    dead = await asyncio.wait_for(drain(broker.consume(queue, category=MessageCategory.DEAD,
                                                       stop_when_empty=True)), 3)
    await broker.ack(dead[0][0])
    assert (await broker.queue_stats(queue))["dead"] == 0
    assert await drain(broker.consume(queue, category=MessageCategory.DEAD,
                                      stop_when_empty=True)) == []


async def test_reject_returns_message_unchanged(broker: RedisMessageBroker, queue: str) -> None:
    await broker.enqueue(*message(queue))
    async with consuming(broker, queue) as consumer:
        key, payload, params = await take(consumer)
        await broker.reject(key)
        again, again_payload, again_params = await take(consumer)
        assert again == key
        assert again_payload == payload
        assert again_params.retries == params.retries
        await broker.ack(again)


async def test_requeue_with_delay_to_the_second(broker: RedisMessageBroker, queue: str) -> None:
    await broker.enqueue(*message(queue, headers={"h": "1"}))
    async with consuming(broker, queue) as consumer:
        key, payload, params = await take(consumer)
        retry = params.with_retry(timedelta(seconds=1.5))
        await broker.requeue(key, payload, retry)
        assert (await broker.queue_stats(queue))["delayed"] == 1
        await assert_nothing(consumer, 1.2)  # not before its time
        again, _, again_params = await take(consumer, 2.0)
        arrived = utcnow()
        assert again == key
        assert retry.ready_at is not None
        assert retry.ready_at <= arrived <= retry.ready_at + timedelta(seconds=1)
        assert again_params.retries.already_tried == 1
        assert again_params.headers == {"h": "1"}
        await broker.ack(again)


async def test_long_delay_does_not_hold_back_short(broker: RedisMessageBroker,
                                                   queue: str) -> None:
    long_key, *long_rest = message(queue, ready_at_in=30)
    short_key, *short_rest = message(queue, ready_at_in=0.5)
    await broker.enqueue(long_key, *long_rest)  # type: ignore[arg-type]
    await broker.enqueue(short_key, *short_rest)  # type: ignore[arg-type]
    started = time.monotonic()
    async with consuming(broker, queue) as consumer:
        got, _, _ = await take(consumer, 3.0)
        assert got == short_key
        assert 0.4 <= time.monotonic() - started <= 1.6
        await broker.ack(got)
        stats = await broker.queue_stats(queue)
        assert stats["delayed"] == 1


async def test_delayed_snapshot_and_move_now(broker: RedisMessageBroker, queue: str) -> None:
    await broker.enqueue(*message(queue, ready_at_in=60, headers={"d": "1"}))
    await broker.enqueue(*message(queue, ready_at_in=90))
    delayed = await asyncio.wait_for(
        drain(broker.consume(queue, category=MessageCategory.DELAYED, stop_when_empty=True)), 3)
    assert len(delayed) == 2
    key, payload, params = delayed[0]
    assert params.headers == {"d": "1"}
    await broker.requeue(key, payload, params.with_delay(None))
    async with consuming(broker, queue) as consumer:
        got, _, _ = await take(consumer)
        assert got == key
        await broker.ack(got)
    assert (await broker.queue_stats(queue))["delayed"] == 1


async def test_priorities_higher_first(broker: RedisMessageBroker, queue: str) -> None:
    order = [PrioritiesT.LOW, PrioritiesT.MEDIUM, PrioritiesT.HIGH, PrioritiesT.LOW,
             PrioritiesT.HIGH, PrioritiesT.MEDIUM]
    for p in order:
        await broker.enqueue(*message(queue, priority=p))
    async with consuming(broker, queue, limit=None) as consumer:
        got = []
        for _ in order:
            key, _, _ = await take(consumer)
            got.append(key.priority)
            await broker.ack(key)
    assert got == [2, 2, 1, 1, 0, 0]


async def test_low_priority_is_not_starved(broker: RedisMessageBroker, queue: str) -> None:
    for _ in range(30):
        await broker.enqueue(*message(queue, priority=PrioritiesT.HIGH))
    low = [message(queue, priority=PrioritiesT.LOW) for _ in range(2)]
    medium = message(queue, priority=PrioritiesT.MEDIUM)
    for m in [*low, medium]:
        await broker.enqueue(*m)
    async with consuming(broker, queue, limit=100) as consumer:
        keys = [(await take(consumer))[0] for _ in range(33)]
        for key in keys:
            await broker.ack(key)
    position = {key.id_: i for i, key in enumerate(keys)}
    # with K = 10: ten HIGH, then the starved MEDIUM, then LOW, ten HIGH, LOW again
    assert position[medium[0].id_] == 10
    assert position[low[0][0].id_] == 11
    assert position[low[1][0].id_] == 22


async def test_id_is_deduplicated_while_it_exists(broker: RedisMessageBroker,
                                                  queue: str) -> None:
    key, payload, params = message(queue, id_="unique-1")
    await broker.enqueue(key, payload, params)
    await broker.enqueue(key, '{"other": true}', params)
    assert (await broker.queue_stats(queue))["ready"] == 1
    async with consuming(broker, queue) as consumer:
        got, got_payload, got_params = await take(consumer)
        assert got_payload == payload
        # in flight it still exists
        await broker.enqueue(key, payload, params)
        assert (await broker.queue_stats(queue))["ready"] == 0
        # its own requeue is not blocked by itself
        await broker.requeue(got, got_payload, got_params.with_delay(None))
        again, _, _ = await take(consumer)
        assert again == key
        await broker.ack(again)
    # once gone, the id may be used again
    await broker.enqueue(key, payload, params)
    assert (await broker.queue_stats(queue))["ready"] == 1


async def test_headers_intact_through_requeue_and_dead_letter(broker: RedisMessageBroker,
                                                              queue: str) -> None:
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
               "tracestate": "k=v,é=ü", "empty": ""}
    await broker.enqueue(*message(queue, headers=headers))
    async with consuming(broker, queue) as consumer:
        key, payload, params = await take(consumer)
        assert params.headers == headers
        await broker.requeue(key, payload, params.with_retry(timedelta(0)))
        key, payload, params = await take(consumer)
        assert params.headers == headers
        await broker.nack(key)
    dead = await drain(broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True))
    assert dead[0][2].headers == headers


async def test_poison_goes_to_dead_list_and_consuming_goes_on(
        broker: RedisMessageBroker, queue: str, raw: Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    keys = broker._keys(queue)
    msgs, ready = keys[0], keys[2]
    await raw.hset(msgs, mapping={
        "garbage": "\x00not a message at all{",
        # valid JSON, valid key, but parameters that do not decode
        "bad-params": "1|1000|" + json.dumps({
            "k": {"id": "bad-params", "topic": "t", "queue": queue, "priority": 1},
            "p": "{}", "a": {"timeout": "soon"}}),
    })
    await raw.rpush(ready, "garbage", "bad-params", "no-body", "line\nbreak")
    good_key, payload, params = message(queue)
    await broker.enqueue(good_key, payload, params)
    with caplog.at_level(logging.ERROR, logger="repid.brokers.redis"):
        async with consuming(broker, queue) as consumer:
            got, _, _ = await take(consumer)
            assert got == good_key
            await broker.ack(got)
            await assert_nothing(consumer, 0.2)
    assert (await broker.queue_stats(queue))["dead"] == 4
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if r.name == "repid.brokers.redis")
    for id_ in ("garbage", "bad-params", "no-body"):
        assert repr(id_) in logged
    assert "malformed" in logged and "no stored body" in logged
    assert "line break" in logged


async def test_expired_lease_comes_back(broker: RedisMessageBroker, queue: str,
                                        redis_dsn: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A message taken and never settled is delivered again once its lease is no longer
    extended, counted as a second delivery."""
    await broker.enqueue(*message(queue, timeout=1.0))
    dying = broker.consume(queue, max_unacked_messages=1)
    key, _, _ = await take(dying)
    assert broker.delivery_count(key) == 1
    # the taker goes silent (as if killed): its lease is no longer extended
    heartbeat = dying._heartbeat  # type: ignore[attr-defined]
    heartbeat.cancel()
    await asyncio.wait({heartbeat})
    taken_at = time.monotonic()
    # another broker instance takes over
    other = RedisMessageBroker(redis_dsn, lease_time=timedelta(milliseconds=300))
    await other.connect()
    try:
        async with consuming(other, queue) as consumer:
            again, _, params = await take(consumer, 4.0)
            waited = time.monotonic() - taken_at
            assert again == key
            assert waited <= 2.5  # lease 0.3 s, checked at least once a second
            assert params.retries.already_tried == 0  # a redelivery is not a retry
            assert other.delivery_count(again) == 2
            with caplog.at_level(logging.WARNING, logger="repid.brokers.redis"):
                await broker.ack(key)  # the old lease no longer counts
            assert "no longer held" in caplog.text
            assert (await broker.queue_stats(queue))["in_flight"] == 1
            await other.ack(again)
    finally:
        await other.disconnect()
    assert (await broker.queue_stats(queue))["in_flight"] == 0


async def test_two_consumers_never_get_one_message(redis_dsn: str, broker: RedisMessageBroker,
                                                   queue: str) -> None:
    other = RedisMessageBroker(redis_dsn)
    await other.connect()
    n = 300
    await broker.enqueue_many(message(queue) for _ in range(n))
    seen: list[str] = []

    async def work(b: RedisMessageBroker) -> None:
        async with consuming(b, queue, limit=7) as consumer:
            while len(seen) < n:
                try:
                    key, _, _ = await take(consumer, 0.5)
                except asyncio.TimeoutError:
                    continue
                seen.append(key.id_)
                await asyncio.sleep(0)
                await b.ack(key)

    try:
        await asyncio.wait_for(asyncio.gather(work(broker), work(other)), 20)
    finally:
        await other.disconnect()
    assert len(seen) == n
    assert len(set(seen)) == n


async def test_batch_take_and_finish_returns_buffered(broker: RedisMessageBroker,
                                                      queue: str) -> None:
    sent = [message(queue) for _ in range(6)]
    await broker.enqueue_many(sent)
    consumer = broker.consume(queue, max_unacked_messages=10)
    first, _, _ = await take(consumer)
    # one TAKE leased all six at once into the consumer's buffer
    assert (await broker.queue_stats(queue))["in_flight"] == 6
    await consumer.finish()
    assert await broker.queue_stats(queue) == {"ready": 5, "delayed": 0, "in_flight": 1,
                                               "dead": 0}
    with pytest.raises(StopAsyncIteration):
        await consumer.__anext__()
    await broker.ack(first)  # what it handed out it can still settle
    async with consuming(broker, queue) as again:
        rest = [await take(again) for _ in range(5)]
        for key, _, params in rest:
            assert params.retries.already_tried == 0
            await broker.ack(key)
    assert [k.id_ for k, _, _ in rest] == [k.id_ for k, _, _ in sent[1:]]


async def test_capacity_bounds_what_a_consumer_holds(broker: RedisMessageBroker,
                                                     queue: str) -> None:
    await broker.enqueue_many(message(queue) for _ in range(5))
    async with consuming(broker, queue, limit=2) as consumer:
        a = await take(consumer)
        b = await take(consumer)
        await assert_nothing(consumer, 0.3)
        assert (await broker.queue_stats(queue))["in_flight"] == 2
        await broker.ack(a[0])
        c = await take(consumer)
        await broker.ack(b[0])
        await broker.ack(c[0])


async def test_cancelled_anext_loses_nothing(broker: RedisMessageBroker, queue: str) -> None:
    async with consuming(broker, queue) as consumer:
        for _ in range(5):
            await assert_nothing(consumer, 0.05)
        sent = message(queue)
        await broker.enqueue(*sent)
        got, _, _ = await take(consumer)
        assert got == sent[0]
        await broker.ack(got)


async def test_an_unfinished_consumer_ends_when_its_task_is_cancelled(
        broker: RedisMessageBroker, queue: str) -> None:
    """Event-loop teardown cancels leftover tasks; the fetcher must end even when redis-py
    swallows a cancel that lands while a command is being sent."""
    for i in range(8):
        consumer = broker.consume(queue, max_unacked_messages=1)
        await consumer.start()
        fetcher = consumer._fetcher  # type: ignore[attr-defined]
        assert fetcher is not None
        await asyncio.sleep(0.0005 * i)  # cancel at different points of TAKE / BLPOP
        fetcher.cancel()
        done, _ = await asyncio.wait({fetcher}, timeout=2.5)
        assert done, "the fetcher ignored its cancellation"
        await consumer.finish()


async def _kill_clients(raw: Redis, name: str) -> int:
    killed = 0
    for client in await raw.client_list():
        if client.get("name") == name:
            killed += int(await raw.client_kill_filter(_id=client["id"], skipme=True))
    return killed


@contextlib.asynccontextmanager
async def named_broker(redis_dsn: str,
                       name: str) -> AsyncIterator[tuple[RedisMessageBroker, str]]:
    """A connected broker whose connections are named `name` (to find and kill them in
    `CLIENT LIST`), and a declared queue; both removed at the end."""
    broker = RedisMessageBroker(redis_dsn, client_name=name)
    await broker.connect()
    queue = _name("q")
    await broker.queue_declare(queue)
    try:
        yield broker, queue
    finally:
        await broker.connect()  # a test may have disconnected it
        await broker.queue_delete(queue)
        await broker.disconnect()


async def test_consumer_resumes_after_connections_are_killed(redis_dsn: str, raw: Redis) -> None:
    name = _name("repid-kill")
    async with named_broker(redis_dsn, name) as (broker, queue):
        async with consuming(broker, queue) as consumer:
            await assert_nothing(consumer, 0.3)  # blocked in BLPOP
            assert await _kill_clients(raw, name) >= 1
            await assert_nothing(consumer, 0.3)
            sent = message(queue)
            await broker.enqueue(*sent)
            got, _, _ = await take(consumer, 3.0)
            assert got == sent[0]
            assert await _kill_clients(raw, name) >= 1
            await broker.ack(got)
        assert (await broker.queue_stats(queue))["in_flight"] == 0


async def test_enqueue_retries_when_its_held_connection_was_killed(
        redis_dsn: str, raw: Redis) -> None:
    """Enqueues keep one connection out of the pool; Redis dropping it costs a retry, not
    the message, and a retried enqueue is stored once."""
    name = _name("repid-held")
    async with named_broker(redis_dsn, name) as (broker, queue):
        await broker.enqueue(*message(queue))
        assert await _kill_clients(raw, name) >= 1
        await asyncio.wait_for(broker.enqueue(*message(queue)), 5)
        assert (await broker.queue_stats(queue))["ready"] == 2


async def test_concurrent_enqueues_on_many_queues_all_land(redis_dsn: str) -> None:
    """While the held connection waits for a reply, other enqueues go through the pool."""
    broker = RedisMessageBroker(redis_dsn)
    await broker.connect()
    queues = [_name("q") for _ in range(3)]
    for q in queues:
        await broker.queue_declare(q)
    try:
        sent = [message(queues[i % 3]) for i in range(300)]
        await asyncio.wait_for(asyncio.gather(*(broker.enqueue(*m) for m in sent)), 10)
        for q in queues:
            assert (await broker.queue_stats(q))["ready"] == 100
    finally:
        for q in queues:
            await broker.queue_delete(q)
        await broker.disconnect()


async def test_disconnect_closes_every_connection(redis_dsn: str, raw: Redis) -> None:
    name = _name("repid-close")
    async with named_broker(redis_dsn, name) as (broker, queue):
        await broker.enqueue(*message(queue))
        assert any(c.get("name") == name for c in await raw.client_list())
        await broker.disconnect()
        assert not [c for c in await raw.client_list() if c.get("name") == name]


async def test_scripts_are_loaded_again_after_redis_forgets_them(
        broker: RedisMessageBroker, queue: str, raw: Redis) -> None:
    """A restarted Redis has no scripts cached: NOSCRIPT makes the broker load them again."""
    await broker.enqueue(*message(queue))
    await raw.script_flush()
    sent = message(queue)
    await broker.enqueue(*sent)
    async with consuming(broker, queue) as consumer:
        got = [(await take(consumer))[0] for _ in range(2)]
        await raw.script_flush()
        for key in got:
            await broker.ack(key)
    assert got[1] == sent[0]
    assert (await broker.queue_stats(queue))["in_flight"] == 0


class _Proxy:
    """A TCP proxy to Redis that the test can cut and restore, like a network drop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_enqueue_raises_while_redis_unreachable_and_recovers(redis_dsn: str) -> None:
    from urllib.parse import urlsplit
    target = urlsplit(redis_dsn).port or 6379
    proxy = _Proxy(target)
    await proxy.start()
    dsn = f"redis://127.0.0.1:{proxy.port}/0"
    broker = RedisMessageBroker(dsn, retries=2, socket_timeout=1.0,
                                socket_connect_timeout=0.5)
    await broker.connect()
    queue = _name("q")
    await broker.queue_declare(queue)
    try:
        async with consuming(broker, queue) as consumer:
            await broker.enqueue(*message(queue))
            first, _, _ = await take(consumer)
            await proxy.cut()
            started = time.monotonic()
            with pytest.raises(EnqueueNotConfirmedError):
                await broker.enqueue(*message(queue))
            assert time.monotonic() - started < 10
            with pytest.raises(BrokerConnectionError):
                await broker.ack(first)
            await proxy.start()  # the network comes back on the same port
            sent = message(queue)
            await broker.enqueue(*sent)
            got, _, _ = await take(consumer, 5.0)
            assert got == sent[0]
            await broker.ack(got)
    finally:
        await broker.queue_delete(queue)
        await broker.disconnect()
        if proxy.server is not None:
            await proxy.cut()


async def test_connect_to_closed_port_raises() -> None:
    broker = RedisMessageBroker("redis://127.0.0.1:1/0", retries=1, socket_connect_timeout=0.5)
    with pytest.raises(BrokerConnectionError):
        await asyncio.wait_for(broker.connect(), 10)
    with pytest.raises(ConnectionError):
        await broker.enqueue(*message("default"))


async def test_flush_keeps_declaration_and_delete_removes_it(broker: RedisMessageBroker) -> None:
    queue = _name("q")
    await broker.queue_declare(queue)
    await broker.queue_declare(queue)  # idempotent
    await broker.enqueue(*message(queue))
    await broker.enqueue(*message(queue, ready_at_in=60))
    async with consuming(broker, queue) as consumer:
        key, _, _ = await take(consumer)
        await broker.nack(key)
    await broker.enqueue(*message(queue))
    assert await broker.queue_stats(queue) == {"ready": 1, "delayed": 1, "in_flight": 0,
                                               "dead": 1}
    await broker.queue_flush(queue)
    assert await broker.queue_stats(queue) == {"ready": 0, "delayed": 0, "in_flight": 0,
                                               "dead": 0}
    await broker.enqueue(*message(queue))
    await broker.queue_delete(queue)
    with pytest.raises(QueueNotDeclaredError):  # stats of a deleted queue: not declared
        await broker.queue_stats(queue)
    with pytest.raises(QueueNotDeclaredError):  # no longer declared
        await drain(broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True))
    await broker.enqueue(*message(queue))  # declares it again, as in repid 1.x
    assert (await broker.queue_stats(queue))["ready"] == 1
    await broker.queue_delete(queue)


async def test_several_queues_consumed_at_once(broker: RedisMessageBroker) -> None:
    queues = [_name("q") for _ in range(3)]
    for q in queues:
        await broker.queue_declare(q)
    try:
        consumers = [broker.consume(q, max_unacked_messages=5) for q in queues]
        for c in consumers:
            await c.start()
        for q in reversed(queues):
            await broker.enqueue(*message(q))
        for q, c in zip(queues, consumers, strict=True):
            key, _, _ = await take(c)
            assert key.queue == q
            await broker.ack(key)
        for c in consumers:
            await c.finish()
    finally:
        for q in queues:
            await broker.queue_delete(q)


async def test_dsn_password_masked_in_repr(redis_dsn: str) -> None:
    broker = RedisMessageBroker("redis://user:s3cr3t@127.0.0.1:6379/0")
    assert "s3cr3t" not in repr(broker)
    assert "***" in repr(broker)
    assert broker.system == "redis"


def test_rediss_dsn_makes_a_tls_client() -> None:
    """`rediss://` goes through redis-py's from_url untouched: a TLS connection class."""
    from redis.asyncio.connection import SSLConnection

    from repid.brokers.redis._client import make_client

    client = make_client("rediss://user:pw@redis.example:6380/2", retries=1,
                         socket_timeout=1.0, socket_connect_timeout=1.0,
                         client_name="x", extra={"ssl_cert_reqs": "none"})
    pool = client.connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    assert pool.connection_kwargs["port"] == 6380
    assert pool.connection_kwargs["db"] == 2
    assert "pw" not in repr(RedisMessageBroker("rediss://user:pw@redis.example:6380/2"))


def test_one_join_packing_sends_the_same_bytes_as_redis_py() -> None:
    """The faster command packer of the brokers' connections changes no byte on the wire."""
    from redis.asyncio.connection import Connection, UnixDomainSocketConnection

    from repid.brokers.redis._client import with_one_join_packing

    cases: list[tuple[Any, ...]] = [
        ("EVALSHA", "a" * 40, 7, "k", "é✓", b"\x00\xff", 1.5, 0, -3, memoryview(b"mv"),
         "x" * 10000),
        ("CONFIG GET", "maxmemory"), (b"CLIENT KILL", b"ID", 5), ("PING",), ("SET", "k", ""),
    ]
    for base in (Connection, UnixDomainSocketConnection):
        fast = with_one_join_packing(base)
        assert with_one_join_packing(base) is fast  # one subclass per class
        ours: Any = fast()
        theirs: Any = base()
        for case in cases:
            assert (b"".join(ours.pack_command(*case))
                    == b"".join(theirs.pack_command(*case))), case


def test_a_command_head_packed_once_sends_the_same_bytes_as_redis_py() -> None:
    """The producer's script calls start with a head packed once per queue: head and tail
    together are byte for byte the command redis-py would pack, in UTF-8 and (packed
    whole by the connection then) in any other encoding."""
    from redis.asyncio.connection import Connection

    from repid.brokers.redis._client import CommandHead, HeldConnection

    head = CommandHead("EVALSHA", "a" * 40, 3, "repid:{q}:msgs", "repid:{é}:x", "k3", "q")
    tails: list[list[Any]] = [[], ["id", "1|600000|{}", ""], ["é✓", b"\x00\xff", 7, 1.5],
                              ["x" * 10000] * 3]
    for encoding in ("utf-8", "UTF8", "latin-1"):
        conn: Any = Connection(encoding=encoding)
        for tail in tails:
            if encoding == "latin-1" and any(isinstance(a, str) and "✓" in a for a in tail):
                continue  # not encodable there: redis-py refuses it too
            assert (b"".join(HeldConnection._pack(conn, head, tail))
                    == b"".join(conn.pack_command(*head.args, *tail))), (encoding, tail)


async def test_idle_consumer_blocks_and_wakes_without_errors(
        broker: RedisMessageBroker, queue: str, caplog: pytest.LogCaptureFixture) -> None:
    """An idle consumer waits on Redis (no error, no polling back-off) and a message
    enqueued meanwhile reaches it at once."""
    with caplog.at_level(logging.WARNING, logger="repid.brokers.redis"):
        async with consuming(broker, queue) as consumer:
            await assert_nothing(consumer, within=1.5)  # blocks through at least one wait
            key, payload, params = message(queue)
            started = time.monotonic()
            await broker.enqueue(key, payload, params)
            got_key, _, _ = await take(consumer, within=1.0)
            assert got_key == key
            assert time.monotonic() - started < 0.5
            await broker.ack(got_key)
    assert [r.getMessage() for r in caplog.records] == []
