"""RabbitMessageBroker on a real RabbitMQ: the delivery promises of repid.brokers.base."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import aio_pika
import pytest
from rabbit_helpers import broker, drain, key, nothing_within, params, queue, take, unique

from repid import QueueDeclareError
from repid.brokers.base import DEAD_REASON_HEADER
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq._codec import HEADER_PARAMS
from repid.data import MessageCategory, Parameters
from repid.errors import QueueNotDeclaredError
from repid.middleware import Middleware

pytestmark = pytest.mark.integration
__all__ = ["broker", "queue"]


async def test_enqueue_consume_ack(broker: RabbitMessageBroker, queue: str) -> None:
    k = key(queue, "job-1", topic="add")
    await broker.enqueue(k, '{"a": 1}', params(headers={"trace": "abc"}))
    c = broker.consume(queue, max_unacked_messages=10)
    await c.start()
    got_key, payload, got_params = await take(c)
    assert (got_key, payload) == (k, '{"a": 1}')
    assert got_params.headers == {"trace": "abc"}
    await broker.ack(got_key)
    await c.finish()
    assert (await broker.queue_stats(queue))["ready"] == 0
    with pytest.raises(RuntimeError, match="already settled"):
        await broker.ack(got_key)


async def test_ack_is_final_after_reconnect(broker: RabbitMessageBroker, queue: str) -> None:
    await broker.enqueue(key(queue), "x", params())
    c = broker.consume(queue)
    got = await take(c)
    await broker.ack(got[0])
    await c.finish()
    await broker.disconnect()
    await broker.connect()
    assert (await broker.queue_stats(queue))["ready"] == 0


async def test_priorities_high_first(broker: RabbitMessageBroker, queue: str) -> None:
    for i, prio in enumerate([0, 1, 2, 0, 2, 1]):
        await broker.enqueue(key(queue, f"m{i}", priority=prio), str(prio), params())
    c = broker.consume(queue, max_unacked_messages=1)
    order = []
    for _ in range(6):
        k, payload, _ = await take(c)
        order.append(int(payload))
        assert k.priority == int(payload)
        await broker.ack(k)
    await c.finish()
    assert order == [2, 2, 1, 1, 0, 0]


async def test_nack_goes_to_dlq_and_requeue_brings_it_back(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    headers = {"traceparent": "00-abc-def-01", "tenant": "ü"}
    await broker.enqueue(key(queue, "dead-1"), "payload", params(headers=headers))
    c = broker.consume(queue)
    k, _, _ = await take(c)
    await broker.nack(k)
    await c.finish()
    stats = await broker.queue_stats(queue)
    assert (stats["ready"], stats["dead"]) == (0, 1)

    dead = broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True)
    dk, payload, dparams = await take(dead)
    assert (dk.id_, payload, dparams.headers) == ("dead-1", "payload", headers)
    await broker.requeue(dk, payload, dparams)
    with pytest.raises(StopAsyncIteration):
        await take(dead)

    stats = await broker.queue_stats(queue)
    assert (stats["ready"], stats["dead"]) == (1, 0)
    c2 = broker.consume(queue)
    k2, payload2, p2 = await take(c2)
    assert (k2.id_, payload2, p2.headers) == ("dead-1", "payload", headers)
    await broker.ack(k2)
    await c2.finish()


async def test_dead_consumer_ack_deletes_and_reject_keeps(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    c = broker.consume(queue)
    for i in range(2):
        await broker.enqueue(key(queue, f"d{i}"), str(i), params())
        await broker.nack((await take(c))[0])
    await c.finish()
    dead = broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True)
    first, second = await drain(dead)  # each read once, although neither is gone yet
    await broker.ack(first[0])
    await broker.reject(second[0])  # stays in the DLQ
    assert (await broker.queue_stats(queue))["dead"] == 1
    again = await drain(broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True))
    assert [m[0].id_ for m in again] == [second[0].id_]
    await broker.ack(again[0][0])
    assert (await broker.queue_stats(queue))["dead"] == 0


async def test_reject_returns_message_unchanged(broker: RabbitMessageBroker, queue: str) -> None:
    p = params(headers={"h": "1"})
    p.retries = type(p.retries)(3, 1)
    await broker.enqueue(key(queue, "r-1"), "body", p)
    c = broker.consume(queue, max_unacked_messages=1)
    k, _, _ = await take(c)
    await broker.reject(k)
    k2, body, p2 = await take(c)
    assert (k2.id_, body, p2.headers) == ("r-1", "body", {"h": "1"})
    assert (p2.retries.max_amount, p2.retries.already_tried) == (3, 1)
    await broker.ack(k2)
    await c.finish()


async def test_unroutable_enqueue_raises(broker: RabbitMessageBroker) -> None:
    missing = unique("never-declared")
    with pytest.raises(QueueNotDeclaredError) as info:
        await broker.enqueue(key(missing), "x", params())
    assert info.value.queue == missing
    assert isinstance(info.value, KeyError)
    with pytest.raises(QueueNotDeclaredError):
        await broker.enqueue(key(missing), "x", params(delay=30))
    with pytest.raises(QueueNotDeclaredError):
        await broker.consume(missing).start()
    # the publishing channel survived the refusals
    q = unique()
    await broker.queue_declare(q)
    try:
        await broker.enqueue(key(q), "x", params())
        assert (await broker.queue_stats(q))["ready"] == 1
    finally:
        await broker.queue_delete(q)


async def test_poison_messages_go_to_dlq_and_consuming_goes_on(
    amqp_dsn: str, broker: RabbitMessageBroker, queue: str, caplog: pytest.LogCaptureFixture,
) -> None:
    connection = await aio_pika.connect(amqp_dsn)
    try:
        channel = await connection.channel()
        key_props = {"correlation_id": "x", "type": "t"}
        for props, headers in (
            (key_props, {HEADER_PARAMS: "{not json"}),
            (key_props, {}),  # params header missing
            ({"type": "t"}, {HEADER_PARAMS: Parameters().encode()}),  # key id missing
        ):
            await channel.default_exchange.publish(
                aio_pika.Message(b"garbage", headers=headers, **props),  # type: ignore[arg-type]
                routing_key=queue)
    finally:
        await connection.close()
    await broker.enqueue(key(queue, "fine"), "ok", params())
    c = broker.consume(queue, max_unacked_messages=10)
    with caplog.at_level(logging.ERROR, logger="repid.brokers.rabbitmq"):
        k, body, _ = await take(c)
        assert (k.id_, body) == ("fine", "ok")
        await broker.ack(k)
        for _ in range(50):
            if (await broker.queue_stats(queue))["dead"] == 3:
                break
            await asyncio.sleep(0.1)
    await c.finish()
    assert (await broker.queue_stats(queue))["dead"] == 3
    reasons = [r.getMessage() for r in caplog.records if r.name == "repid.brokers.rabbitmq"]
    assert len(reasons) == 3
    assert any("not JSON" in r for r in reasons)
    assert any("repid-params" in r for r in reasons)
    assert any("correlation_id" in r for r in reasons)
    # the DEAD consumer hands undecodable messages out as poison (id, body as text, the
    # reason), and leaves them where they are unless acked
    dead = broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True)
    read = await drain(dead)
    assert sorted((k.id_, k.topic, body) for k, body, _ in read) == [
        ("", "", "garbage"), ("x", "", "garbage"), ("x", "", "garbage")]
    assert all("cannot be decoded" in p.headers[DEAD_REASON_HEADER] for _, _, p in read)
    for k, _, _ in read:
        await broker.reject(k)
    for _ in range(50):
        if (await broker.queue_stats(queue))["dead"] == 3:
            break
        await asyncio.sleep(0.1)
    assert (await broker.queue_stats(queue))["dead"] == 3


async def test_two_consumers_never_share_a_message(
    amqp_dsn: str, broker: RabbitMessageBroker, queue: str,
) -> None:
    other = RabbitMessageBroker(amqp_dsn)
    await other.connect()
    try:
        ids = [f"m{i}" for i in range(200)]
        await broker.enqueue_many((key(queue, i), i, params()) for i in ids)
        seen: dict[str, list[str]] = {"a": [], "b": []}

        async def run(b: RabbitMessageBroker, name: str) -> None:
            c = b.consume(queue, max_unacked_messages=5)
            await c.start()
            while True:
                try:
                    k, _, _ = await take(c, 1.0)
                except asyncio.TimeoutError:
                    break
                seen[name].append(k.id_)
                await asyncio.sleep(0.001)
                await b.ack(k)
            await c.finish()

        await asyncio.wait_for(asyncio.gather(run(broker, "a"), run(other, "b")), 30)
        assert sorted(seen["a"] + seen["b"]) == sorted(ids)
        assert not set(seen["a"]) & set(seen["b"])
        assert seen["a"] and seen["b"]
    finally:
        await other.disconnect()


async def test_finish_returns_prefetched_messages(broker: RabbitMessageBroker, queue: str) -> None:
    await broker.enqueue_many((key(queue, f"p{i}"), str(i), params()) for i in range(10))
    c = broker.consume(queue, max_unacked_messages=10)
    held, _, _ = await take(c)
    await asyncio.sleep(0.3)  # let the other nine arrive in the prefetch buffer
    await c.finish()
    with pytest.raises(StopAsyncIteration):
        await take(c)
    assert (await broker.queue_stats(queue))["ready"] == 9
    # the one handed out is still owned until it is settled, then the channel closes
    await broker.reject(held)
    assert (await broker.queue_stats(queue))["ready"] == 10
    c2 = broker.consume(queue, max_unacked_messages=100)
    ids = set()
    for _ in range(10):
        k, _, _ = await take(c2)
        ids.add(k.id_)
        await broker.ack(k)
    await c2.finish()
    assert ids == {f"p{i}" for i in range(10)}


async def test_cancelled_take_loses_nothing(broker: RabbitMessageBroker, queue: str) -> None:
    c = broker.consume(queue, max_unacked_messages=3)
    await c.start()
    assert await nothing_within(c, 0.2)  # a cancelled __anext__
    waiter = asyncio.ensure_future(c.__anext__())
    await asyncio.sleep(0.05)
    waiter.cancel()
    await broker.enqueue(key(queue, "after-cancel"), "x", params())
    k, _, _ = await take(c)
    assert k.id_ == "after-cancel"
    await broker.ack(k)
    await c.finish()


async def test_enqueue_many_runs_middleware_for_each(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    seen: list[str] = []
    middleware = Middleware()

    def before_enqueue(key: object) -> None:
        seen.append(key.id_)  # type: ignore[attr-defined]

    middleware.add_subscriber(before_enqueue)
    broker.middleware = middleware
    ids = [f"e{i}" for i in range(500)]
    await broker.enqueue_many((key(queue, i), i, params()) for i in ids)
    broker.middleware = None
    assert sorted(seen) == sorted(ids)
    assert (await broker.queue_stats(queue))["ready"] == 500
    c = broker.consume(queue, max_unacked_messages=500)
    got = set()
    for _ in range(500):
        k, payload, _ = await take(c)
        assert k.id_ == payload
        got.add(k.id_)
        await broker.ack(k)
    await c.finish()
    assert got == set(ids)


async def test_enqueue_many_raises_for_unknown_queue_but_stores_the_rest(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    missing = unique("never-declared")
    batch = [(key(queue, "a"), "a", params()), (key(missing, "b"), "b", params()),
             (key(queue, "c"), "c", params())]
    with pytest.raises(QueueNotDeclaredError):
        await broker.enqueue_many(batch)
    assert (await broker.queue_stats(queue))["ready"] == 2


async def test_flush_removes_ready_delayed_and_dead(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    other = unique()
    await broker.queue_declare(other)
    try:
        await broker.enqueue(key(queue, "ready"), "x", params())
        await broker.enqueue(key(queue, "later"), "x", params(delay=600))
        await broker.enqueue(key(other, "other-later"), "x", params(delay=600))
        c = broker.consume(queue)
        await broker.enqueue(key(queue, "dead"), "x", params())
        for _ in range(2):
            k, _, _ = await take(c)
            await (broker.nack(k) if k.id_ == "dead" else broker.reject(k))
        await c.finish()
        await broker.queue_flush(queue)
        stats = await broker.queue_stats(queue)
        assert (stats["ready"], stats["dead"]) == (0, 0)
        assert await drain(broker.consume(queue, category=MessageCategory.DELAYED,
                                          stop_when_empty=True)) == []
        others = await drain(broker.consume(other, category=MessageCategory.DELAYED,
                                            stop_when_empty=True))
        assert [m[0].id_ for m in others] == ["other-later"]  # untouched
        await broker.ack(others[0][0])
    finally:
        await broker.queue_delete(other)


async def test_long_jobs_warn_about_consumer_timeout(
    broker: RabbitMessageBroker, queue: str, caplog: pytest.LogCaptureFixture,
) -> None:
    p = params()
    p.execution_timeout = timedelta(hours=2)
    await broker.enqueue(key(queue, "long"), "x", p)
    c = broker.consume(queue)
    with caplog.at_level(logging.WARNING, logger="repid.brokers.rabbitmq"):
        k, _, _ = await take(c)
    await broker.ack(k)
    await c.finish()
    assert any("consumer_timeout" in r.getMessage() for r in caplog.records)


async def test_password_never_in_repr_or_errors() -> None:
    b = RabbitMessageBroker("amqp://user:s3cr3t-pw@127.0.0.1:1/vhost", operation_timeout=2)
    assert "s3cr3t-pw" not in repr(b)
    with pytest.raises(ConnectionError) as info:
        await b.connect()
    assert "s3cr3t-pw" not in str(info.value)
    assert "***" in str(info.value)
    tls = RabbitMessageBroker("amqps://user:s3cr3t-pw@127.0.0.1:5671/")
    assert repr(tls) == "RabbitMessageBroker(dsn='amqps://user:***@127.0.0.1:5671/')"


async def test_amqps_dsn_speaks_tls(amqp_dsn: str) -> None:
    # The plain AMQP port answers a TLS handshake with garbage: proof the amqps:// URL went
    # through to aio-pika's TLS transport intact (query options included).
    plain = aio_pika.connection.make_url(amqp_dsn)
    tls = f"amqps://{plain.user}:s3cr3t-pw@{plain.host}:{plain.port}/?no_verify_ssl=1"
    with pytest.raises(ConnectionError) as info:
        await RabbitMessageBroker(tls, operation_timeout=3).connect()
    assert "SSL" in str(info.value)
    assert "s3cr3t-pw" not in str(info.value)


async def test_declaring_over_a_foreign_queue_says_what_to_do(
    amqp_dsn: str, broker: RabbitMessageBroker,
) -> None:
    name = unique("foreign")
    connection = await aio_pika.connect(amqp_dsn)
    try:
        channel = await connection.channel()
        foreign = await channel.declare_queue(name, durable=True)
        with pytest.raises(QueueDeclareError, match="delete it first"):
            await broker.queue_declare(name)
        await foreign.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    await broker.queue_delete(name)


async def test_disconnect_ends_a_waiting_consumer(broker: RabbitMessageBroker, queue: str) -> None:
    await broker.enqueue(key(queue, "unsettled"), "x", params())
    c = broker.consume(queue, max_unacked_messages=5)
    held, _, _ = await take(c)
    waiter = asyncio.ensure_future(c.__anext__())
    await asyncio.sleep(0.1)
    await broker.disconnect()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 5)
    await broker.connect()
    # the unsettled message went back to the queue when the connection closed
    assert (await broker.queue_stats(queue))["ready"] == 1
    assert held.id_ == "unsettled"


async def test_dead_and_delayed_consumers_of_unknown_queue_raise(
    broker: RabbitMessageBroker,
) -> None:
    for category in (MessageCategory.DEAD, MessageCategory.DELAYED):
        with pytest.raises(QueueNotDeclaredError):
            await take(broker.consume(unique("never-declared"), category=category,
                                      stop_when_empty=True))
