"""Dead messages that cannot be decoded (poison) are read by `get_messages(DEAD)` on the
real Redis and RabbitMQ: listed with their id, reason and raw body, deletable with `ack`,
and never sent back (`reschedule` and the retries refuse), beside a normal dead message
that is listed and rescheduled as before. Both the finite and the waiting scan."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

import aio_pika
import pytest
from redis.asyncio import Redis

from repid import Connection, MessageCategory, Parameters, Queue, RoutingKey
from repid.brokers._poison import PoisonMessageError
from repid.brokers.base import DEAD_REASON_HEADER, MessageBroker
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq._codec import HEADER_PARAMS
from repid.brokers.redis import RedisMessageBroker
from repid.brokers.redis._keys import QueueKey, queue_keys
from repid.message import Message

pytestmark = pytest.mark.integration

TIMEOUT = 10
#: the ids of the three kinds of poison each test writes
POISON_IDS = ("bad-json", "bad-params", "not-utf8")


def redis_poison(queue: str) -> dict[str, tuple[bytes, str]]:
    """id -> (stored body, the raw_payload a DEAD reader shows for it)."""
    bad_params = "1|1000|" + json.dumps({
        "k": {"id": "bad-params", "topic": "t", "queue": queue, "priority": 1},
        "p": "{}", "a": {"timeout": "soon"}})
    return {
        "bad-json": (b"1|1000|{not json", "1|1000|{not json"),
        "bad-params": (bad_params.encode(), bad_params),
        "not-utf8": (b'1|1000|{"k":"\xff\xfe"}', '1|1000|{"k":"\\xff\\xfe"}'),
    }


def rabbit_poison() -> dict[str, tuple[bytes, dict[str, str], str]]:
    """id -> (AMQP body, AMQP headers, the raw_payload a DEAD reader shows for it)."""
    return {
        "bad-json": (b"garbage", {HEADER_PARAMS: "{not json"}, "garbage"),
        "bad-params": (b"{}", {HEADER_PARAMS: '{"timeout": "soon"}'}, "{}"),
        "not-utf8": (b"\xff\xfeok", {HEADER_PARAMS: Parameters().encode()}, "\\xff\\xfeok"),
    }


async def write_poison(broker: MessageBroker, queue: str,
                       request: pytest.FixtureRequest) -> dict[str, str]:
    """Store the three kinds of poison in `queue`'s ready part with a client of the
    broker's own; returns id -> the raw_payload expected for it."""
    if isinstance(broker, RedisMessageBroker):
        keys = queue_keys(broker.prefix, queue)
        raw = Redis.from_url(request.getfixturevalue("redis_dsn"))
        try:
            for id_, (body, _) in redis_poison(queue).items():
                await raw.hset(keys[QueueKey.MSGS], id_, body)
                await raw.rpush(keys[QueueKey.READY1], id_)
        finally:
            await raw.aclose()
        return {id_: shown for id_, (_, shown) in redis_poison(queue).items()}
    amqp = await aio_pika.connect(request.getfixturevalue("amqp_dsn"))
    try:
        channel = await amqp.channel()
        for id_, (body, headers, _) in rabbit_poison().items():
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers=headers,  # type: ignore[arg-type]
                                 correlation_id=id_, type="t"),
                routing_key=queue)
    finally:
        await amqp.close()
    return {id_: shown for id_, (_, _, shown) in rabbit_poison().items()}


@pytest.fixture(params=["redis", "rabbitmq"])
async def env(request: pytest.FixtureRequest
              ) -> AsyncIterator[tuple[Connection, Queue, dict[str, str]]]:
    """A connected Connection on one real broker, and a fresh declared queue holding three
    poison messages and one normal message, all dead-lettered by the broker's own consumer
    (the normal one with the reason "ValueError: boom"), and id -> the raw_payload each
    poison message should show; the queue is deleted afterwards."""
    broker: MessageBroker
    if request.param == "redis":
        broker = RedisMessageBroker(dsn=request.getfixturevalue("redis_dsn"))
    else:
        broker = RabbitMessageBroker(dsn=request.getfixturevalue("amqp_dsn"))
    connection = Connection(broker)
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    queue = Queue(f"poison-visible-{uuid.uuid4().hex[:10]}", _connection=connection)
    await queue.declare()
    try:
        expected = await write_poison(broker, queue.name, request)
        await broker.enqueue(RoutingKey("normal", "job", queue.name), '{"n": 1}',
                             Parameters())
        consumer = broker.consume(queue.name, max_unacked_messages=10)
        try:
            key, _, _ = await asyncio.wait_for(consumer.__anext__(), TIMEOUT)
            assert key.id_ == "normal"  # the poison is never handed out
            await broker.nack(key, reason="ValueError: boom")
            for _ in range(100):
                if (await queue.stats())["dead"] == 4:
                    break
                await asyncio.sleep(0.05)
        finally:
            await consumer.finish()
        assert (await queue.stats())["dead"] == 4
        yield connection, queue, expected
    finally:
        await queue.delete()
        await connection.disconnect()


async def dead_now(queue: Queue) -> dict[str, Message]:
    """The DEAD messages there are now (finite scan), by id; a message taken is settled
    by the caller or left dead when the scan ends."""
    async with aclosing(queue.get_messages(category=MessageCategory.DEAD,
                                           stop_when_empty=True)) as messages:
        return {m.key.id_: m async for m in messages}


def check_listed(found: dict[str, Message], queue: Queue, expected: dict[str, str]) -> None:
    """Every poison message is listed with its id, queue, raw body and reason; the normal
    dead message as it was."""
    assert sorted(found) == sorted([*POISON_IDS, "normal"])
    for id_, shown in expected.items():
        msg = found[id_]
        assert msg.is_poison
        assert (msg.key.id_, msg.key.topic, msg.key.queue) == (id_, "", queue.name)
        assert msg.raw_payload == shown
        assert msg.category is MessageCategory.DEAD
        assert set(msg.parameters.headers) == {DEAD_REASON_HEADER}
        assert "cannot be decoded" in msg.parameters.headers[DEAD_REASON_HEADER]
    normal = found["normal"]
    assert not normal.is_poison
    assert (normal.key.topic, normal.raw_payload) == ("job", '{"n": 1}')
    assert normal.parameters.headers == {DEAD_REASON_HEADER: "ValueError: boom"}


async def test_poison_is_listed_refuses_reschedule_and_is_deleted_by_id(
        env: tuple[Connection, Queue, dict[str, str]]) -> None:
    connection, queue, expected = env
    found = await asyncio.wait_for(dead_now(queue), TIMEOUT)
    check_listed(found, queue, expected)

    # sending a poison message back is refused, and leaves it dead and unsettled
    for id_ in POISON_IDS:
        with pytest.raises(PoisonMessageError, match="cannot be decoded"):
            await found[id_].reschedule()
        with pytest.raises(PoisonMessageError, match=r"msg\.ack\(\)"):
            await found[id_].force_retry(0)
        delivery = found[id_].delivery
        with pytest.raises(PoisonMessageError):  # at the broker too
            await connection.message_broker.requeue(delivery, "{}", delivery.params)
        with pytest.raises(PoisonMessageError):
            await delivery.requeue(delivery.params, "reschedule", "{}")
        assert not found[id_].is_settled
    # delete one by id: the others stay
    await found["bad-params"].ack()
    await asyncio.sleep(0.2)  # RabbitMQ: the scans' returns land
    found = await asyncio.wait_for(dead_now(queue), TIMEOUT)
    assert sorted(found) == ["bad-json", "normal", "not-utf8"]

    # the normal one goes back to its queue; the poison ones are deleted
    await found["normal"].reschedule()
    await found["bad-json"].ack()
    await found["not-utf8"].ack()
    await asyncio.sleep(0.2)
    assert await asyncio.wait_for(dead_now(queue), TIMEOUT) == {}
    stats = await queue.stats()
    assert (stats["dead"], stats["ready"]) == (0, 1)
    consumer = connection.message_broker.consume(queue.name)
    try:
        key, payload, params = await asyncio.wait_for(consumer.__anext__(), TIMEOUT)
        assert (key.id_, payload) == ("normal", '{"n": 1}')
        assert DEAD_REASON_HEADER not in params.headers
        await connection.message_broker.ack(key)
    finally:
        await consumer.finish()


async def test_the_waiting_dead_scan_yields_poison_and_deletes_it(
        env: tuple[Connection, Queue, dict[str, str]]) -> None:
    _, queue, expected = env
    found: dict[str, Message] = {}
    async with aclosing(queue.get_messages(category=MessageCategory.DEAD)) as messages:
        for _ in range(4):
            msg = await asyncio.wait_for(anext(messages), TIMEOUT)
            found[msg.key.id_] = msg
        check_listed(found, queue, expected)
        for id_ in POISON_IDS:
            with pytest.raises(PoisonMessageError):
                await found[id_].reschedule()
            await found[id_].ack()
        # nothing more: the deleted ones are not read again
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(messages), 1.2)
        await found["normal"].reschedule()
    stats = await queue.stats()
    assert (stats["dead"], stats["ready"]) == (0, 1)


async def test_redis_poison_without_body_or_with_a_non_utf8_id_is_listed_and_deleted(
        redis_dsn: str) -> None:
    """Redis dead-letters an id with no stored body, and one that is not UTF-8, too: the
    first shows an empty body, the second its id escaped; `ack` deletes both."""
    broker = RedisMessageBroker(dsn=redis_dsn)
    connection = Connection(broker)
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    queue = Queue(f"poison-visible-{uuid.uuid4().hex[:10]}", _connection=connection)
    await queue.declare()
    keys = queue_keys(broker.prefix, queue.name)
    raw = Redis.from_url(redis_dsn)
    try:
        await raw.hset(keys[QueueKey.MSGS], b"id-\xff\xfe", b'1|1000|{"k":{}}')
        await raw.rpush(keys[QueueKey.READY1], b"no-body", b"id-\xff\xfe")
        consumer = broker.consume(queue.name)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(consumer.__anext__(), 0.5)
        finally:
            await consumer.finish()
        assert await raw.lrange(keys[QueueKey.DEAD], 0, -1) == [b"no-body", b"id-\xff\xfe"]

        found = await asyncio.wait_for(dead_now(queue), TIMEOUT)
        assert sorted(found) == ["id-\\xff\\xfe", "no-body"]
        assert found["no-body"].is_poison and found["no-body"].raw_payload == ""
        assert "no stored body" in found["no-body"].parameters.headers[DEAD_REASON_HEADER]
        odd = found["id-\\xff\\xfe"]
        assert odd.is_poison and odd.raw_payload == '1|1000|{"k":{}}'
        assert "not UTF-8" in odd.parameters.headers[DEAD_REASON_HEADER]
        await found["no-body"].ack()
        await odd.ack()
        assert await raw.exists(keys[QueueKey.DEAD], keys[QueueKey.MSGS],
                                keys[QueueKey.REASONS]) == 0
    finally:
        await raw.aclose()
        await queue.delete()
        await connection.disconnect()


async def test_dead_requeue_sends_back_what_can_run_and_names_the_poison_it_left(
        env: tuple[Connection, Queue, dict[str, str]], redis_dsn: str, amqp_dsn: str) -> None:
    """`repid dead requeue QUEUE` requeues the normal dead message, leaves the poison ones
    dead and names them; `--id` of a poison message says to delete it instead."""
    connection, queue, _ = env
    dsn = amqp_dsn if isinstance(connection.message_broker, RabbitMessageBroker) else redis_dsn
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("REPID_")}
    run_env["REPID_BROKER_DSN"] = dsn

    def repid(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "repid", "dead", *args], env=run_env,
                              capture_output=True, text=True, timeout=60)

    one = await asyncio.to_thread(repid, "requeue", queue.name, "--id", "bad-json")
    assert one.returncode != 0
    assert "cannot be decoded" in one.stderr and "repid dead delete" in one.stderr
    done = await asyncio.to_thread(repid, "requeue", queue.name)
    assert done.returncode == 0, done.stderr
    assert "requeued 1 dead message" in done.stdout
    assert "left 3 that cannot be decoded" in done.stdout
    assert all(id_ in done.stdout for id_ in POISON_IDS)
    await asyncio.sleep(0.2)
    stats = await queue.stats()
    assert (stats["dead"], stats["ready"]) == (3, 1)
