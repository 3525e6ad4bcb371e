"""RabbitMessageBroker(queue_type="quorum") on the real RabbitMQ (3.10): quorum queues for
work, priority levels, delay levels and dead letters; RabbitMQ's x-delivery-limit backing
max_deliveries; a queue of the other type refused with the way to migrate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import pytest
from pamqp.commands import Basic
from rabbit_helpers import drain, key, nothing_within, params, take, unique
from test_rabbit_broker import test_priorities_high_first as test_priorities_high_first

from repid import MessageCategory, QueueDeclareError
from repid.brokers.base import DEAD_REASON_HEADER
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq import _layout as layout
from repid.brokers.rabbitmq import _topology as topology
from repid.brokers.rabbitmq._levels import STARVATION_LIMIT

pytestmark = pytest.mark.integration


def quorum_broker(dsn: str, **kwargs: Any) -> RabbitMessageBroker:
    return RabbitMessageBroker(dsn, queue_type="quorum", publish_timeout=10.0,
                               operation_timeout=10.0, **kwargs)


@pytest.fixture
async def broker(amqp_dsn: str) -> AsyncIterator[RabbitMessageBroker]:
    b = quorum_broker(amqp_dsn)
    await b.connect()
    yield b
    await b.disconnect()


@pytest.fixture
async def queue(broker: RabbitMessageBroker) -> AsyncIterator[str]:
    """A declared queue of quorum queues, deleted (all its parts) afterwards."""
    name = unique("quorum")
    await broker.queue_declare(name)
    yield name
    if broker._connection is None:
        await broker.connect()
    await broker.queue_delete(name)


async def raw_channel(dsn: str) -> tuple[aiormq.abc.AbstractConnection, Any]:
    connection = await aiormq.connect(dsn)
    return connection, await connection.channel()


async def redeclare_ok(dsn: str, name: str, arguments: dict[str, Any] | None) -> str | None:
    """None when declaring `name` with `arguments` is a no-op (the queue has exactly
    them), else RabbitMQ's refusal."""
    connection, channel = await raw_channel(dsn)
    try:
        await channel.queue_declare(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelClosed as exc:
        return str(exc)
    finally:
        await connection.close()
    return None


async def until(predicate: Callable[[], Awaitable[bool]], what: str,
                timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_queue_type_is_checked() -> None:
    with pytest.raises(ValueError, match="queue_type is 'mirrored'; give one of 'classic', "
                                         "'quorum'"):
        RabbitMessageBroker("amqp://guest:guest@127.0.0.1:5672/", queue_type="mirrored")
    assert RabbitMessageBroker("amqp://guest:guest@127.0.0.1:5672/").queue_type == "classic"


async def test_declare_makes_quorum_queues(amqp_dsn: str, broker: RabbitMessageBroker,
                                           queue: str) -> None:
    """Every part is a durable quorum queue with at-least-once dead-lettering (declaring
    the same arguments again is a no-op; a classic declaration is refused)."""
    quorum = layout.QuorumLayout(broker.max_deliveries)
    for name in (f"{queue}:high", queue, f"{queue}:low"):
        assert await redeclare_ok(amqp_dsn, name, quorum.work_arguments(queue)) is None
        assert quorum.work_arguments(queue)["x-dead-letter-strategy"] == "at-least-once"
        assert quorum.work_arguments(queue)["x-delivery-limit"] == broker.max_deliveries
    assert await redeclare_ok(amqp_dsn, f"{queue}:dead", quorum.dead_arguments()) is None
    for level in (0, topology.LEVELS - 1):
        assert await redeclare_ok(amqp_dsn, topology.level_queue(level, quorum=True),
                                  quorum.level_arguments(level)) is None
    refusal = await redeclare_ok(amqp_dsn, queue, {"x-queue-type": "classic"})
    assert refusal is not None and "inequivalent arg" in refusal


async def test_enqueue_consume_ack_and_stats(broker: RabbitMessageBroker, queue: str) -> None:
    for prio in (0, 1, 2):
        await broker.enqueue(key(queue, f"job-{prio}", priority=prio), "x",
                             params(headers={"h": "1"}))
    assert (await broker.queue_stats(queue))["ready"] == 3  # over the three levels
    c = broker.consume(queue, max_unacked_messages=10)
    got = [await take(c) for _ in range(3)]
    assert [k.id_ for k, _, _ in got] == ["job-2", "job-1", "job-0"]
    assert all(p.headers == {"h": "1"} for _, _, p in got)
    for k, _, _ in got:
        assert broker.delivery_count(k) == 1
        await broker.ack(k)
    await c.finish()
    assert (await broker.queue_stats(queue))["ready"] == 0
    assert await broker.queue_names() is None  # no management_url


async def test_lower_priorities_are_not_starved(broker: RabbitMessageBroker,
                                                queue: str) -> None:
    """With HIGH messages always waiting, a LOW one goes after STARVATION_LIMIT of them."""
    highs = STARVATION_LIMIT + 5
    for i in range(highs):
        await broker.enqueue(key(queue, f"h{i}", priority=2), "h", params())
    await broker.enqueue(key(queue, "low", priority=0), "l", params())
    c = broker.consume(queue, max_unacked_messages=highs)
    await c.start()

    async def all_received() -> bool:
        return (await broker.queue_stats(queue))["ready"] == 0

    await until(all_received, "every message in the consumer's buffer")
    order = []
    for _ in range(highs + 1):
        k, payload, _ = await take(c)
        order.append(payload)
        await broker.ack(k)
    await c.finish()
    assert order.index("l") == STARVATION_LIMIT


async def test_delays_without_head_of_line_blocking(broker: RabbitMessageBroker,
                                                    queue: str) -> None:
    await broker.enqueue(key(queue, "late", priority=2), "late", params(delay=60))
    await broker.enqueue(key(queue, "soon", priority=2), "soon", params(delay=2))
    delayed = await drain(broker.consume(queue, category=MessageCategory.DELAYED,
                                         stop_when_empty=True))
    assert sorted(k.id_ for k, _, _ in delayed) == ["late", "soon"]
    for k, _, _ in delayed:
        await broker.reject(k)  # left where they are, waiting their time
    c = broker.consume(queue)
    started = time.monotonic()
    assert await nothing_within(c, 1.0)
    k, _, _ = await take(c, timeout=6)
    waited = time.monotonic() - started
    assert (k.id_, k.priority) == ("soon", 2)
    assert 1.5 <= waited <= 5.0, waited
    await broker.ack(k)
    await c.finish()
    await broker.queue_flush(queue)  # drops the 60 s one from the quorum delay levels
    assert await drain(broker.consume(queue, category=MessageCategory.DELAYED,
                                      stop_when_empty=True)) == []


async def test_nack_with_reason_and_requeue_from_dead(broker: RabbitMessageBroker,
                                                      queue: str) -> None:
    await broker.enqueue(key(queue, "d-1", priority=0), "p", params(headers={"t": "1"}))
    await broker.enqueue(key(queue, "d-2", priority=2), "p", params())
    c = broker.consume(queue)
    taken = {k.id_: k for k, _, _ in (await take(c), await take(c))}
    await broker.nack(taken["d-1"], "bad input")  # a copy with the reason
    await broker.nack(taken["d-2"])  # through the queue's dead-letter exchange
    await c.finish()
    await asyncio.sleep(0.3)  # at-least-once dead-lettering confirms in the background
    assert (await broker.queue_stats(queue))["dead"] == 2
    dead = {k.id_: (k, p, pa) for k, p, pa in await drain(
        broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True))}
    assert dead["d-2"][2].headers == {}
    k, payload, p = dead["d-1"]
    assert p.headers == {"t": "1", DEAD_REASON_HEADER: "bad input"}
    await broker.requeue(k, payload, p)
    await broker.ack(dead["d-2"][0])
    c2 = broker.consume(queue)
    k2, _, _ = await take(c2)
    assert (k2.id_, k2.priority) == ("d-1", 0)
    await broker.ack(k2)
    await c2.finish()
    assert (await broker.queue_stats(queue))["dead"] == 0


async def crash_with(dsn: str, queue: str, **kwargs: Any) -> int:
    """Take one message on a connection of its own and drop the connection without
    settling it, as a worker that dies does; the delivery count it was handed out with."""
    b = quorum_broker(dsn, **kwargs)
    await b.connect()
    try:
        k, _, _ = await take(b.consume(queue, max_unacked_messages=1))
        return b.delivery_count(k)
    finally:
        await b.disconnect()


async def test_rabbitmq_counts_deliveries_and_reject_does_not(
        amqp_dsn: str, broker: RabbitMessageBroker, queue: str) -> None:
    await broker.enqueue(key(queue, "c-1", priority=2), "x", params())
    assert [await crash_with(amqp_dsn, queue) for _ in range(2)] == [1, 2]
    c = broker.consume(queue, max_unacked_messages=1)
    k, _, _ = await take(c)
    assert broker.delivery_count(k) == 3  # RabbitMQ's x-delivery-count of 2, plus this one
    await broker.reject(k)  # back, uncounted: a copy carrying the 2 counted deliveries
    k, _, _ = await take(c)
    assert (k.id_, broker.delivery_count(k)) == ("c-1", 3)
    await broker.ack(k)
    await c.finish()


async def test_a_pause_while_messages_are_acked_counts_no_delivery(
        broker: RabbitMessageBroker, queue: str) -> None:
    """A consumer pauses (its worker runs a suspect alone) just after taking messages,
    which are acked as it pauses. RabbitMQ 3.10 takes back, counted (`x-delivery-count`),
    a message it sent to a subscription being cancelled though no client received it:
    what the prefetch still allowed, and what an ack's freed prefetch let through. Enough
    such counts dead-letter a good job. The pause lets nothing be on its way when it
    cancels, so every message here comes as a first delivery."""
    total = 120
    await broker.enqueue_many((key(queue, f"m{n}"), "x", params()) for n in range(total))
    c = broker.consume(queue, max_unacked_messages=4)
    counts: dict[str, int] = {}
    try:
        while len(counts) < total:
            taken = [await take(c) for _ in range(min(3, total - len(counts)))]
            for k, _, _ in taken:
                counts[k.id_] = max(counts.get(k.id_, 0), broker.delivery_count(k))
            acks = [asyncio.ensure_future(broker.ack(k)) for k, _, _ in taken]
            await c.pause()  # races the acks, as a suspect's pause races its neighbours'
            await asyncio.gather(*acks)
            await c.resume()
    finally:
        await c.finish()
    assert len(counts) == total
    assert {n: count for n, count in counts.items() if count != 1} == {}
    assert (await broker.queue_stats(queue))["ready"] == 0


async def test_a_pause_stopped_before_its_cancel_leaves_the_consumer_going(
        broker: RabbitMessageBroker, queue: str) -> None:
    """A worker stopped while a pause waits for quiet: the settle waiting for that cancel
    goes on, and the consumer, still subscribed, keeps handing out messages."""
    await broker.enqueue(key(queue, "held"), "x", params())
    c = broker.consume(queue, max_unacked_messages=4)
    try:
        held, _, _ = await take(c)
        pausing = asyncio.ensure_future(c.pause())
        await asyncio.sleep(0.02)  # in the quiet wait, before any cancel
        ack = asyncio.ensure_future(broker.ack(held))
        await asyncio.sleep(0.02)
        assert not ack.done()  # waits for the cancel
        pausing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pausing
        await asyncio.wait_for(ack, 5)
        await broker.enqueue(key(queue, "next"), "x", params())
        k, _, _ = await take(c)
        assert k.id_ == "next"
        await broker.ack(k)
    finally:
        await c.finish()
    assert (await broker.queue_stats(queue))["ready"] == 0


async def test_delivery_limit_dead_letters_by_rabbitmq_itself(amqp_dsn: str) -> None:
    """A message whose deliveries all end unsettled, even the last one the worker would
    dead-letter, is dead-lettered by RabbitMQ after max_deliveries + 1 deliveries, alone
    and with a reason; the message beside it is untouched."""
    b = quorum_broker(amqp_dsn, max_deliveries=2)
    await b.connect()
    name = unique("quorum-limit")
    await b.queue_declare(name)
    try:
        await b.enqueue(key(name, "crash", priority=2), "x", params())
        await b.enqueue(key(name, "fine", priority=0), "y", params())
        counts = [await crash_with(amqp_dsn, name, max_deliveries=2) for _ in range(3)]
        assert counts == [1, 2, 3]

        async def dead_lettered() -> bool:
            return (await b.queue_stats(name))["dead"] == 1

        await until(dead_lettered, "RabbitMQ to dead-letter the message")
        assert await b.queue_stats(name) == {"ready": 1, "delayed": -1, "in_flight": -1,
                                              "dead": 1}
        [(k, _, p)] = await drain(b.consume(name, category=MessageCategory.DEAD,
                                            stop_when_empty=True))
        assert k.id_ == "crash"
        assert "x-delivery-limit of quorum queue" in p.headers[DEAD_REASON_HEADER]
        assert "dead-lettered by RabbitMQ" in p.headers[DEAD_REASON_HEADER]
    finally:
        await b.queue_delete(name)
        await b.disconnect()


async def test_poison_is_dead_lettered_alone(amqp_dsn: str, broker: RabbitMessageBroker,
                                             queue: str) -> None:
    connection, channel = await raw_channel(amqp_dsn)
    try:
        await channel.basic_publish(b"\xff\xfe not a repid message", routing_key=queue,
                                    properties=Basic.Properties(correlation_id="poison-1",
                                                                delivery_mode=2))
    finally:
        await connection.close()
    await broker.enqueue(key(queue, "good"), "ok", params())
    c = broker.consume(queue)
    k, payload, _ = await take(c)
    assert (k.id_, payload) == ("good", "ok")
    await broker.ack(k)
    await c.finish()
    [(dk, _, dp)] = await drain(broker.consume(queue, category=MessageCategory.DEAD,
                                               stop_when_empty=True))
    assert dk.id_ == "poison-1"
    assert "cannot be decoded" in dp.headers[DEAD_REASON_HEADER]


async def test_a_queue_of_the_other_type_is_refused_with_the_way_to_migrate(
        amqp_dsn: str) -> None:
    classic = RabbitMessageBroker(amqp_dsn)
    quorum = quorum_broker(amqp_dsn)
    await classic.connect()
    await quorum.connect()
    first, second = unique("was-classic"), unique("was-quorum")
    try:
        await classic.queue_declare(first)
        await classic.enqueue(key(first, "kept"), "x", params())
        with pytest.raises(QueueDeclareError) as refused:
            await quorum.queue_declare(first)
        text = str(refused.value)
        assert f"queue '{first}' already exists on RabbitMQ as a classic queue" in text
        assert "queue_type='quorum'" in text and "docs/scaling/rabbitmq-quorum.md" in text
        # never redeclared: still the classic queue, with its message
        assert await redeclare_ok(amqp_dsn, first,
                                  layout.ClassicLayout().work_arguments(first)) is None
        assert (await classic.queue_stats(first))["ready"] == 1

        await quorum.queue_declare(second)
        with pytest.raises(QueueDeclareError,
                           match=f"queue '{second}' already exists on RabbitMQ as a quorum "
                                 "queue"):
            await classic.queue_declare(second)

        other_limit = quorum_broker(amqp_dsn, max_deliveries=9)
        await other_limit.connect()
        try:
            with pytest.raises(QueueDeclareError, match="exists with x-delivery-limit 5, and "
                                                        "this broker's max_deliveries is 9"):
                await other_limit.queue_declare(second)
        finally:
            await other_limit.disconnect()
    finally:
        await classic.queue_delete(first)
        await quorum.queue_delete(second)
        await classic.disconnect()
        await quorum.disconnect()
