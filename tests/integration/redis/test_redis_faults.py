"""RedisMessageBroker and RedisBucketBroker under faults, against real Redis servers: a pool
under a thousand concurrent calls, poison bodies, dead reasons, delivery counts, short
leases kept alive by the consumer, lost state, bounded script calls, failed settles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis.asyncio import Redis

from repid.brokers.base import DEAD_REASON_HEADER, Consumer, RawMessage
from repid.brokers.redis import RedisBucketBroker, RedisMessageBroker
from repid.brokers.redis._client import DEFAULT_MAX_CONNECTIONS
from repid.brokers.redis._codec import encode_body
from repid.data import MessageCategory, Parameters, ResultBucket, RoutingKey
from repid.errors import BrokerConnectionError, MessageTooLargeError, QueueNotDeclaredError
from tests.servers.redis_server import PrivateRedis

MakeRedis = Callable[..., PrivateRedis]

pytestmark = pytest.mark.integration

# indexes into RedisMessageBroker._keys(queue) (see keys.QueueKey)
MSGS, READY1, DELAYED, DEAD, REASONS, DELIVERIES = 0, 2, 4, 9, 11, 12


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


def message(queue: str, *, id_: str | None = None, payload: str = '{"x": 1}',
            timeout: float = 30.0) -> RawMessage:
    params = Parameters(execution_timeout=timedelta(seconds=timeout))
    return RoutingKey(id_=id_ or uuid.uuid4().hex, topic="t", queue=queue, priority=1), \
        payload, params


async def take(consumer: Consumer, within: float = 3.0) -> RawMessage:
    return await asyncio.wait_for(consumer.__anext__(), within)


async def assert_nothing(consumer: Consumer, within: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(consumer.__anext__(), within)


async def until(predicate: Any, timeout: float, what: str) -> None:
    stop = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > stop:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def connected(broker: RedisMessageBroker) -> AsyncIterator[RedisMessageBroker]:
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.disconnect()


@pytest.fixture
async def raw(redis_dsn: str) -> AsyncIterator[Redis]:
    """A client that neither decodes nor encodes for us: bytes in, bytes out."""
    client = Redis.from_url(redis_dsn)
    yield client
    await client.aclose()


@pytest.fixture
async def broker(redis_dsn: str) -> AsyncIterator[RedisMessageBroker]:
    async with connected(RedisMessageBroker(
            redis_dsn, lease_time=timedelta(milliseconds=600),
            client_name=_name("repid-test"))) as b:
        yield b


# --- 1. a pool that serves a worker's concurrency ---

async def test_1200_concurrent_bucket_calls_all_succeed(redis_dsn: str, raw: Redis) -> None:
    name = _name("repid-test-buckets")
    buckets = RedisBucketBroker(redis_dsn, use_result_bucket=True, client_name=name)
    await buckets.connect()
    ids = [f"bucket-{uuid.uuid4().hex}" for _ in range(1200)]
    now = datetime.now(timezone.utc)
    try:
        await asyncio.gather(*(
            buckets.store_bucket(id_, ResultBucket(
                data=i, success=True, started_when=now, finished_when=now,
                ttl=timedelta(minutes=1)))
            for i, id_ in enumerate(ids)))
        got = await asyncio.gather(*(buckets.get_bucket(id_) for id_ in ids))
        assert [g.data if isinstance(g, ResultBucket) else None for g in got] == list(range(1200))
        # callers waited for connections instead of opening one each
        clients = [c for c in await raw.client_list() if c.get("name") == name]
        assert 1 <= len(clients) <= DEFAULT_MAX_CONNECTIONS
    finally:
        await asyncio.gather(*(buckets.delete_bucket(id_) for id_ in ids))
        await buckets.disconnect()


async def test_1200_concurrent_enqueues_and_acks_all_succeed(broker: RedisMessageBroker,
                                                            queue: str) -> None:
    messages = [message(queue) for _ in range(1200)]
    await asyncio.gather(*(broker.enqueue(*m) for m in messages))
    assert (await broker.queue_stats(queue))["ready"] == 1200
    consumer = broker.consume(queue, max_unacked_messages=1200)
    taken = [await take(consumer) for _ in range(1200)]
    assert {k.id_ for k, _, _ in taken} == {k.id_ for k, _, _ in messages}
    await asyncio.gather(*(broker.ack(k) for k, _, _ in taken))
    await consumer.finish()
    assert await broker.queue_stats(queue) == {"ready": 0, "delayed": 0, "in_flight": 0,
                                               "dead": 0}


# --- 2, 3. poison bodies and dead reasons ---

def _body_with(queue: str, id_: str, change: Any) -> bytes:
    key, payload, params = message(queue, id_=id_)
    prefix, _, body = encode_body(key, payload, params).partition("{")
    data = json.loads("{" + body)
    change(data)
    return (prefix + json.dumps(data)).encode()


async def test_poison_bodies_are_dead_lettered_alone_with_reasons(
        broker: RedisMessageBroker, queue: str, raw: Redis) -> None:
    keys = broker._keys(queue)
    bad: dict[bytes, bytes] = {
        b"not-utf8": b'1|1000|{"k":"\xff\xfe"}',
        b"not-json": b"1|1000|{not json",
        b"wrong-types": _body_with(queue, "wrong-types", lambda d: d.update(p=5)),
        b"huge-ttl": _body_with(queue, "huge-ttl", lambda d: d["a"].update(ttl=1e300)),
        b"far-ttl": _body_with(queue, "far-ttl", lambda d: d["a"].update(ttl=8e13)),
        b"deep": b'1|1000|{"k":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"id-\xff\xfe": b'1|1000|{"k":{}}',
    }
    good = [message(queue) for _ in range(4)]
    await broker.enqueue(*good[0])
    await raw.hset(keys[MSGS], mapping=bad)  # type: ignore[arg-type]
    await raw.rpush(keys[READY1], *bad)
    for m in good[1:]:
        await broker.enqueue(*m)
    consumer = broker.consume(queue, max_unacked_messages=50)
    started = time.monotonic()
    got = [await take(consumer, 2.0) for _ in good]
    # all in the first take: nothing waited for a lease to run out
    assert time.monotonic() - started < 1.5
    assert [k.id_ for k, _, _ in got] == [k.id_ for k, _, _ in good]
    await asyncio.gather(*(broker.ack(k) for k, _, _ in got))
    await assert_nothing(consumer, 0.3)
    await consumer.finish()

    assert sorted(await raw.lrange(keys[DEAD], 0, -1)) == sorted(bad)
    reasons = await raw.hgetall(keys[REASONS])
    assert set(reasons) == set(bad)
    assert b"UnicodeDecodeError" in reasons[b"not-utf8"]
    assert b"not JSON" in reasons[b"not-json"]
    assert b"payload must be a string" in reasons[b"wrong-types"]
    assert b"Overflow" in reasons[b"huge-ttl"]
    assert b"Overflow" in reasons[b"far-ttl"]
    assert b"Recursion" in reasons[b"deep"]
    assert b"not UTF-8" in reasons[b"id-\xff\xfe"]
    assert await broker.queue_stats(queue) == {"ready": 0, "delayed": 0, "in_flight": 0,
                                               "dead": len(bad)}
    # the DEAD consumer hands each out as poison (its stored reason, its body as text),
    # and never raises
    dead = broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True)
    read = {k.id_: (k.topic, payload, params.headers) async for k, payload, params in dead}
    assert sorted(read) == sorted(id_.decode(errors="backslashreplace") for id_ in bad)
    for id_, body in bad.items():
        topic, payload, headers = read[id_.decode(errors="backslashreplace")]
        assert (topic, payload) == ("", body.decode(errors="backslashreplace"))
        assert headers == {DEAD_REASON_HEADER: reasons[id_].decode()}
    # a flush takes the reasons with the messages
    await broker.queue_flush(queue)
    assert await raw.exists(keys[REASONS], keys[MSGS], keys[DEAD]) == 0


async def test_poison_delayed_body_is_dead_lettered_by_the_delayed_reader(
        broker: RedisMessageBroker, queue: str, raw: Redis) -> None:
    keys = broker._keys(queue)
    await raw.hset(keys[MSGS], b"late", b"1|1000|\xff")
    await raw.zadd(keys[DELAYED], {b"late": time.time() * 1000 + 600_000})
    reader = broker.consume(queue, category=MessageCategory.DELAYED, stop_when_empty=True)
    assert [m async for m in reader] == []
    assert await raw.lrange(keys[DEAD], 0, -1) == [b"late"]
    assert b"UnicodeDecodeError" in await raw.hget(keys[REASONS], b"late")


async def test_nack_reason_reaches_the_dead_reader_and_is_cleared(
        broker: RedisMessageBroker, queue: str, raw: Redis) -> None:
    keys = broker._keys(queue)
    key, payload, params = message(queue, payload='{"n": 7}')
    params.headers["mine"] = "kept"
    await broker.enqueue(key, payload, params)
    consumer = broker.consume(queue, max_unacked_messages=1)
    got, _, _ = await take(consumer)
    await broker.nack(got, reason="ValueError: bad input")

    dead = [m async for m in broker.consume(queue, category=MessageCategory.DEAD,
                                            stop_when_empty=True)]
    assert len(dead) == 1
    dead_key, dead_payload, dead_params = dead[0]
    assert dead_payload == '{"n": 7}'
    assert dead_params.headers == {"mine": "kept", DEAD_REASON_HEADER: "ValueError: bad input"}
    # requeued from the dead list: back in the queue, the reason gone
    await broker.requeue(dead_key, dead_payload, params)
    assert await raw.hlen(keys[REASONS]) == 0
    again, _, again_params = await take(consumer)
    assert DEAD_REASON_HEADER not in again_params.headers
    # nacked without a reason: dead, with no reason header
    await broker.nack(again)
    dead = [m async for m in broker.consume(queue, category=MessageCategory.DEAD,
                                            stop_when_empty=True)]
    assert DEAD_REASON_HEADER not in dead[0][2].headers
    # nacked with a reason again, then acked from the dead list: everything gone
    await broker.requeue(dead[0][0], dead[0][1], params)
    third, _, _ = await take(consumer)
    await broker.nack(third, reason="twice")
    dead = [m async for m in broker.consume(queue, category=MessageCategory.DEAD,
                                            stop_when_empty=True)]
    assert dead[0][2].headers[DEAD_REASON_HEADER] == "twice"
    await broker.ack(dead[0][0])
    await consumer.finish()
    assert await raw.exists(keys[REASONS], keys[MSGS]) == 0


# --- 4. delivery count ---

async def _silence(consumer: Consumer) -> None:
    """Stop the consumer's lease extender, as if its process had died."""
    heartbeat = consumer._heartbeat  # type: ignore[attr-defined]
    heartbeat.cancel()
    await asyncio.wait({heartbeat})


async def test_delivery_count_counts_expired_leases_only(broker: RedisMessageBroker,
                                                         queue: str, raw: Redis) -> None:
    keys = broker._keys(queue)
    key, payload, params = message(queue)
    await broker.enqueue(key, payload, params)
    expiries = 3
    for n in range(expiries):
        consumer = broker.consume(queue, max_unacked_messages=1)
        got, _, _ = await take(consumer, 4.0)
        assert got.id_ == key.id_
        assert broker.delivery_count(got) == n + 1
        await _silence(consumer)  # its lease runs out (0.6 s) and the message comes back
    consumer = broker.consume(queue, max_unacked_messages=1)
    got, _, _ = await take(consumer, 4.0)
    assert broker.delivery_count(got) == expiries + 1
    # returned on purpose: not counted
    await broker.reject(got)
    got, _, _ = await take(consumer)
    assert broker.delivery_count(got) == expiries + 1
    await consumer.finish()  # the message was handed out: finish leaves it held
    # a message given back by finish() before it was handed out is not counted either
    await broker.enqueue(*message(queue, id_="second"))
    await broker.enqueue(*message(queue, id_="third"))
    other = broker.consume(queue, max_unacked_messages=3)
    second, _, _ = await take(other)  # "third" came in the same take, buffered
    assert second.id_ == "second"
    await other.finish()  # gives "third" back
    last = broker.consume(queue, max_unacked_messages=3)
    third, _, _ = await take(last)
    assert third.id_ == "third"
    assert broker.delivery_count(third) == 1
    # settled: the count is gone from Redis
    await broker.ack(got)
    assert await raw.hexists(keys[DELIVERIES], key.id_) == 0
    await broker.ack(second)
    await broker.ack(third)
    await last.finish()


async def test_max_deliveries_is_stored_and_checked(redis_dsn: str) -> None:
    assert RedisMessageBroker(redis_dsn).max_deliveries == 5
    assert RedisMessageBroker(redis_dsn, max_deliveries=2).max_deliveries == 2
    with pytest.raises(ValueError, match="max_deliveries"):
        RedisMessageBroker(redis_dsn, max_deliveries=0)
    with pytest.raises(ValueError, match="lease_time"):
        RedisMessageBroker(redis_dsn, lease_time=timedelta(0))


# --- 5. short leases kept alive by the consumer ---

async def test_a_held_message_outlives_its_lease_and_a_silent_one_does_not(
        broker: RedisMessageBroker, queue: str, redis_dsn: str) -> None:
    await broker.enqueue(*message(queue, timeout=60))
    holder = broker.consume(queue, max_unacked_messages=1)
    key, _, _ = await take(holder)
    async with connected(RedisMessageBroker(redis_dsn, lease_time=timedelta(seconds=5))) as other:
        rival = other.consume(queue, max_unacked_messages=1)
        # three leases (0.6 s each) pass: the holder keeps extending, nobody else gets it
        await assert_nothing(rival, 1.8)
        assert (await broker.queue_stats(queue))["in_flight"] == 1
        await _silence(holder)
        again, _, _ = await take(rival, 3.0)
        assert again.id_ == key.id_
        await other.ack(again)
        await rival.finish()


async def test_settled_messages_are_no_longer_extended(broker: RedisMessageBroker,
                                                       queue: str) -> None:
    await broker.enqueue(*message(queue))
    consumer = broker.consume(queue, max_unacked_messages=5)
    key, _, _ = await take(consumer)
    assert consumer._leased  # type: ignore[attr-defined]
    await broker.ack(key)
    assert not consumer._leased  # type: ignore[attr-defined]
    await consumer.finish()


# --- 6. lost state ---

async def test_consumer_reports_outage_and_lost_queue_then_resumes(
        private_redis: MakeRedis) -> None:
    server = private_redis()
    async with connected(RedisMessageBroker(server.dsn, lease_time=timedelta(seconds=1),
                                            retries=1, socket_timeout=1.0,
                                            socket_connect_timeout=1.0)) as b:
        queue = _name("q")
        await b.queue_declare(queue)
        consumer = b.consume(queue, max_unacked_messages=5)
        await b.enqueue(*message(queue, id_="before"))
        assert (await take(consumer))[0].id_ == "before"
        assert consumer.problem is None

        server.kill()
        await until(lambda: _async(consumer.problem is not None), 10, "a reported problem")
        assert consumer.problem is not None
        assert "Redis unreachable" in consumer.problem[0]

        server.restart(wipe=True)  # back, empty
        with pytest.raises(QueueNotDeclaredError):
            await take(consumer, 10.0)
        assert consumer.problem is not None  # still one (the first reason is kept)
        await b.queue_declare(queue)
        await b.enqueue(*message(queue, id_="after"))
        got, _, _ = await take(consumer, 5.0)
        assert got.id_ == "after"
        assert consumer.problem is None
        await b.ack(got)
        # the maintenance loop lived through it: it alone returns a silent taker's message
        maintainer = b._maintainer
        assert maintainer is not None and not maintainer.done()
        silent = b.consume(queue, max_unacked_messages=1)
        await b.enqueue(*message(queue, id_="lost"))
        await consumer.finish()
        assert (await take(silent))[0].id_ == "lost"
        await _silence(silent)
        ready_key = b._keys(queue)[READY1]
        watcher = Redis.from_url(server.dsn)
        try:
            await until(lambda: _llen_is(watcher, ready_key, 1), 5, "the lease to come back")
        finally:
            await watcher.aclose()


async def _async(value: bool) -> bool:
    return value


async def _llen_is(client: Redis, key: str, n: int) -> bool:
    return int(await client.llen(key)) == n


# --- 7. bounded script calls, UNLINK ---

async def _command_calls(client: Redis, command: str) -> int:
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


async def test_enqueue_many_is_sent_in_bounded_chunks_and_flush_unlinks(
        private_redis: MakeRedis) -> None:
    server = private_redis()
    watcher = Redis.from_url(server.dsn)
    try:
        # no maintenance round during the test: only enqueues run scripts
        async with connected(RedisMessageBroker(server.dsn, maintenance_interval=3600)) as b:
            queue = _name("q")
            await b.queue_declare(queue)
            await b.enqueue(*message(queue))  # loads the script
            before = await _command_calls(watcher, "evalsha")
            await b.enqueue_many([message(queue) for _ in range(1100)])  # by count: 3 calls
            assert await _command_calls(watcher, "evalsha") - before == 3
            big = "x" * 4000
            before = await _command_calls(watcher, "evalsha")
            await b.enqueue_many([message(queue, payload=json.dumps(big))
                                  for _ in range(600)])  # 2.4 MB: by size, 3 calls
            assert await _command_calls(watcher, "evalsha") - before == 3
            assert (await b.queue_stats(queue))["ready"] == 1701
            stats = (await watcher.info("commandstats"))["cmdstat_evalsha"]
            assert float(stats["usec_per_call"]) < 50_000
            unlinks = await _command_calls(watcher, "unlink")
            await b.queue_flush(queue)
            await b.queue_delete(queue)
            assert await _command_calls(watcher, "unlink") == unlinks + 2
            assert await _command_calls(watcher, "del") == 0
            assert await watcher.dbsize() == 0
    finally:
        await watcher.aclose()


async def test_enqueue_many_refuses_a_payload_over_the_size_limit(redis_dsn: str) -> None:
    async with connected(RedisMessageBroker(redis_dsn, max_message_size=1000)) as b:
        queue = _name("q")
        await b.queue_declare(queue)
        try:
            with pytest.raises(MessageTooLargeError):
                await b.enqueue_many([message(queue), message(queue, payload="é" * 600)])
            assert (await b.queue_stats(queue))["ready"] == 0  # nothing of the batch stored
            await b.enqueue_many([message(queue, payload="x" * 900)])
            assert (await b.queue_stats(queue))["ready"] == 1
        finally:
            await b.queue_delete(queue)


# --- 8. a settle that raises still frees the consumer's room ---

async def test_failed_settles_free_capacity_and_leave_redelivery(
        private_redis: MakeRedis) -> None:
    server = private_redis(appendonly=True)
    async with connected(RedisMessageBroker(server.dsn, lease_time=timedelta(seconds=1),
                                            retries=0, socket_timeout=1.0,
                                            socket_connect_timeout=1.0)) as b:
        queue = _name("q")
        await b.queue_declare(queue)
        await b.enqueue(*message(queue, id_="one"))
        await b.enqueue(*message(queue, id_="two"))
        consumer = b.consume(queue, max_unacked_messages=1)
        first, payload, params = await take(consumer)
        assert first.id_ == "one"
        # a requeue whose new parameters cannot even be encoded
        params.headers["bad"] = object()  # type: ignore[assignment]
        with pytest.raises(TypeError):
            await b.requeue(first, payload, params)
        # the room came back: the next message is taken although "one" was not settled
        second, _, _ = await take(consumer)
        assert second.id_ == "two"
        # an ack that cannot reach Redis raises, and frees the room all the same
        server.kill()
        with pytest.raises(BrokerConnectionError):
            await b.ack(second)
        server.start()
        # neither was settled: both come back once their leases, no longer extended, end
        seen = []
        for _ in range(2):
            key, _, _ = await take(consumer, 6.0)
            seen.append(key.id_)
            await b.ack(key)
        assert sorted(seen) == ["one", "two"]
        await consumer.finish()
        assert await b.queue_stats(queue) == {"ready": 0, "delayed": 0, "in_flight": 0,
                                              "dead": 0}


@contextlib.asynccontextmanager
async def _paused_producer(private_redis: MakeRedis, **options: Any
                           ) -> AsyncIterator[tuple[PrivateRedis, RedisMessageBroker, str]]:
    """A broker on a private Redis whose held connection is open (one message enqueued
    to the declared queue it yields), with that Redis paused (SIGSTOP) until the test
    resumes it; resumed and disconnected at the end, even on failure."""
    server = private_redis()
    broker = RedisMessageBroker(server.dsn, **options)
    await broker.connect()
    queue = _name("q")
    try:
        await broker.queue_declare(queue)
        await broker.enqueue(*message(queue))  # the held connection is open
        server.pause()
        yield server, broker, queue
    finally:
        server.resume()
        await broker.disconnect()


async def test_enqueue_to_a_redis_that_stopped_answering_fails_in_time_then_goes_on(
        private_redis: MakeRedis) -> None:
    """The producer's held connection bounds each command by the socket timeout: an
    enqueue that Redis does not answer fails with EnqueueNotConfirmedError (after its
    retries) instead of hanging, and once Redis answers again every enqueue lands."""
    from repid.errors import EnqueueNotConfirmedError

    async with _paused_producer(private_redis, socket_timeout=0.4, retries=1) as (
            server, broker, queue):
        started = time.monotonic()
        with pytest.raises(EnqueueNotConfirmedError):
            await asyncio.wait_for(broker.enqueue(*message(queue, id_="lost?")), 10)
        assert time.monotonic() - started < 4  # two tries of 0.4 s, and a backoff
        server.resume()
        later = [message(queue) for _ in range(30)]
        for sent in later:
            await asyncio.wait_for(broker.enqueue(*sent), 5)
        # the first one and the 30, plus the unanswered one if Redis read it before it
        # stopped (its client gave up on it, so it may be there or not: never twice)
        assert (await broker.queue_stats(queue))["ready"] in (31, 32)


@pytest.mark.parametrize("spin", [0.001, 0.0])  # the longest spin allowed, and none
async def test_an_enqueue_waiting_on_a_silent_redis_spins_only_briefly(
        private_redis: MakeRedis, spin: float) -> None:
    """The held connection keeps the loop polling for its reply (`reply_spin`) only for a
    moment: an enqueue that waits 0.3 s on a paused Redis leaves the loop asleep for
    almost all of it, and lands once Redis answers (with the spin off, too)."""
    async with _paused_producer(private_redis, reply_spin=spin) as (server, broker, queue):
        asyncio.get_running_loop().call_later(0.3, server.resume)
        started = time.process_time()
        await asyncio.wait_for(broker.enqueue(*message(queue, id_="late")), 5)
        spent = time.process_time() - started
        # a spin that ran until the reply would cost about the whole 0.3 s
        assert spent < 0.1, spent
        assert (await broker.queue_stats(queue))["ready"] == 2


async def test_a_cancelled_enqueue_leaves_the_loop_free_to_sleep(
        private_redis: MakeRedis) -> None:
    """An enqueue cancelled while it waits for Redis's reply stops its spin: the loop
    sleeps afterwards; and its late reply answers no later command (the one to an
    undeclared queue is still refused), so the next enqueues land as they should."""
    async with _paused_producer(private_redis, reply_spin=0.001,
                                require_declared_queues=True) as (server, broker, queue):
        waiting = asyncio.ensure_future(broker.enqueue(*message(queue)))
        await asyncio.sleep(0.0005)  # inside its spin
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        started = time.process_time()
        await asyncio.sleep(0.3)
        assert time.process_time() - started < 0.1  # a loop still spinning: about 0.3 s
        server.resume()
        with pytest.raises(QueueNotDeclaredError):
            await asyncio.wait_for(broker.enqueue(*message(_name("undeclared"))), 5)
        await asyncio.wait_for(broker.enqueue(*message(queue, id_="after")), 5)
        # the first, "after", and the cancelled one if Redis had read it before it stopped
        assert (await broker.queue_stats(queue))["ready"] in (2, 3)


@pytest.mark.parametrize("spin", [-1e-6, 0.0011, float("nan"), "50e-6"])
def test_a_reply_spin_out_of_range_is_refused(spin: Any) -> None:
    with pytest.raises(ValueError, match="reply_spin"):
        RedisMessageBroker("redis://127.0.0.1:6379/0", reply_spin=spin)
