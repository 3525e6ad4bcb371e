"""Delays on the delay-level topology: to the second, never early, no head-of-line blocking."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aio_pika
import pytest
from rabbit_helpers import broker, drain, key, nothing_within, params, queue, take

from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq import _codec as codec
from repid.data import MessageCategory, utcnow

pytestmark = pytest.mark.integration
__all__ = ["broker", "queue"]

#: how late a delayed message may arrive (the promise is "within about a second")
LATE = timedelta(seconds=1.3)


async def test_requeue_with_delay_arrives_on_time_not_before(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    await broker.enqueue(key(queue, "retry-me"), "body", params(headers={"trace": "t-1"}))
    c = broker.consume(queue, max_unacked_messages=5)
    k, body, p = await take(c)
    retry = p.with_retry(timedelta(seconds=2.5))
    due = retry.ready_at
    assert due is not None
    await broker.requeue(k, body, retry)
    assert (await broker.queue_stats(queue))["ready"] == 0
    k2, body2, p2 = await take(c, 6)
    arrived = utcnow()
    assert due <= arrived <= due + LATE
    assert (k2.id_, body2, p2.headers) == ("retry-me", "body", {"trace": "t-1"})
    assert p2.retries.already_tried == 1
    # headers survive the dead-letter queue after a delayed retry, too
    await broker.nack(k2)
    await c.finish()
    dead = await drain(broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True))
    assert [(m[0].id_, m[2].headers, m[2].retries.already_tried) for m in dead] == [
        ("retry-me", {"trace": "t-1"}, 1)]
    await broker.ack(dead[0][0])


async def test_short_delay_is_not_held_back_by_a_long_one(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    long_p = params(delay=5.2)  # 6 s: waits in levels 2 and 1
    await broker.enqueue(key(queue, "long"), "long", long_p)
    await broker.enqueue(key(queue, "hour"), "hour", params(delay=3600))
    short_p = params(delay=1.5)  # 2 s: level 1 only, queued after the long ones
    await broker.enqueue(key(queue, "short"), "short", short_p)
    c = broker.consume(queue)
    k, _, p = await take(c, 5)
    assert k.id_ == "short"
    assert p.ready_at is not None and p.ready_at <= utcnow() <= p.ready_at + LATE
    await broker.ack(k)
    k, _, p = await take(c, 7)
    assert k.id_ == "long"
    assert p.ready_at is not None and p.ready_at <= utcnow() <= p.ready_at + LATE
    await broker.ack(k)
    assert await nothing_within(c, 0.5)  # the hour-long one is still waiting
    await c.finish()
    delayed = await drain(broker.consume(queue, category=MessageCategory.DELAYED,
                                         stop_when_empty=True))
    assert [m[0].id_ for m in delayed] == ["hour"]
    await broker.ack(delayed[0][0])


async def test_many_delays_arrive_in_due_order(broker: RabbitMessageBroker, queue: str) -> None:
    delays = [3.0, 1.0, 2.5, 0.5, 2.0, 1.5]
    for d in delays:
        await broker.enqueue(key(queue, str(d)), str(d), params(delay=d))
    c = broker.consume(queue, max_unacked_messages=10)
    got = []
    for _ in delays:
        k, _, p = await take(c, 6)
        assert p.ready_at is not None and p.ready_at <= utcnow() <= p.ready_at + LATE
        got.append(float(k.id_))
        await broker.ack(k)
    await c.finish()
    # whole-second rounding may swap two due within the same second, never more
    assert all(abs(a - b) <= 1.0 for a, b in zip(got, sorted(delays), strict=True))


async def test_delayed_consumer_reads_and_requeue_makes_ready(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    await broker.enqueue(key(queue, "d1"), "one", params(delay=600, headers={"a": "b"}))
    await broker.enqueue(key(queue, "d2"), "two", params(delay=900))
    delayed = broker.consume(queue, category=MessageCategory.DELAYED, stop_when_empty=True)
    first = await take(delayed)
    second = await take(delayed)
    assert {first[0].id_, second[0].id_} == {"d1", "d2"}
    one = first if first[0].id_ == "d1" else second
    two = second if one is first else first
    assert one[2].headers == {"a": "b"}
    await broker.requeue(one[0], one[1], one[2].with_delay(None))  # run it now
    await broker.nack(two[0])  # straight to the dead-letter queue
    with pytest.raises(StopAsyncIteration):
        await take(delayed)
    stats = await broker.queue_stats(queue)
    assert (stats["ready"], stats["dead"]) == (1, 1)
    assert await drain(broker.consume(queue, category=MessageCategory.DELAYED,
                                      stop_when_empty=True)) == []


async def test_early_message_is_delayed_again(
    amqp_dsn: str, broker: RabbitMessageBroker, queue: str,
) -> None:
    # A message published straight into the queue before its time must still wait.
    p = params(delay=2.5)
    connection = await aio_pika.connect(amqp_dsn)
    try:
        channel = await connection.channel()
        body, properties = codec.encode(key(queue, "early"), "x", p)
        underlay = await channel.get_underlay_channel()
        await underlay.basic_publish(body, routing_key=queue, properties=properties)
    finally:
        await connection.close()
    c = broker.consume(queue)
    k, _, got = await take(c, 6)
    assert k.id_ == "early"
    assert got.ready_at is not None and got.ready_at <= utcnow() <= got.ready_at + LATE
    await broker.ack(k)
    await c.finish()


async def test_reject_of_delayed_message_leaves_it_waiting(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    await broker.enqueue(key(queue, "w"), "x", params(delay=2.2))
    delayed = broker.consume(queue, category=MessageCategory.DELAYED, stop_when_empty=True)
    k, _, _ = await take(delayed)
    await broker.reject(k)
    with pytest.raises(StopAsyncIteration):
        await take(delayed)
    c = broker.consume(queue)
    k2, _, p = await take(c, 6)
    assert k2.id_ == "w" and p.ready_at is not None and utcnow() >= p.ready_at
    await broker.ack(k2)
    await c.finish()
    await asyncio.sleep(0)
