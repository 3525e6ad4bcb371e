"""Connection drops: the robust connection brings producers and consumers back."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator

import pytest
from rabbit_helpers import drop_connections, key, params, take, unique

from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.errors import EnqueueNotConfirmedError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None,
                       reason="needs rabbitmqctl to drop connections"),
]




@pytest.fixture
async def named(amqp_dsn: str) -> AsyncIterator[tuple[RabbitMessageBroker, str]]:
    """A broker with a connection name of its own, and a declared queue."""
    name = unique("conn")
    b = RabbitMessageBroker(amqp_dsn, connection_name=name, publish_timeout=5.0,
                            operation_timeout=5.0, reconnect_interval=0.5)
    await b.connect()
    q = unique()
    await b.queue_declare(q)
    yield b, q
    await b.queue_delete(q)
    await b.disconnect()


async def enqueue_until_confirmed(b: RabbitMessageBroker, q: str, id_: str,
                                  deadline: float = 15.0) -> list[str]:
    """Enqueue, retrying on a clear ConnectionError; the errors seen, in order."""
    errors: list[str] = []
    stop = time.monotonic() + deadline
    while True:
        try:
            await asyncio.wait_for(b.enqueue(key(q, id_), id_, params()), 10)
            return errors
        except ConnectionError as exc:
            assert isinstance(exc, EnqueueNotConfirmedError)
            assert "RabbitMQ" in str(exc)
            errors.append(str(exc))
            if time.monotonic() > stop:
                raise
            await asyncio.sleep(0.2)


async def test_producer_and_consumer_carry_on_after_a_drop(
    named: tuple[RabbitMessageBroker, str],
) -> None:
    b, q = named
    c = b.consume(q, max_unacked_messages=10)
    await c.start()
    await b.enqueue(key(q, "before"), "before", params())
    k, _, _ = await take(c)
    await b.ack(k)

    assert drop_connections(b.connection_name) == 1
    errors = await enqueue_until_confirmed(b, q, "after")
    print("errors while reconnecting:", errors)
    assert len(errors) <= 50
    k, payload, _ = await take(c, 15)  # the consumer resumed by itself
    assert (k.id_, payload) == ("after", "after")
    await b.ack(k)
    await b.enqueue(key(q, "later"), "later", params())  # and keeps working
    k, _, _ = await take(c, 5)
    assert k.id_ == "later"
    await b.ack(k)
    await c.finish()


async def test_unsettled_message_is_redelivered_after_a_drop(
    named: tuple[RabbitMessageBroker, str],
) -> None:
    b, q = named
    c = b.consume(q, max_unacked_messages=10)
    await b.enqueue(key(q, "in-flight"), "x", params(headers={"k": "v"}))
    held, _, _ = await take(c)
    assert drop_connections(b.connection_name) == 1
    await asyncio.sleep(0.2)
    with pytest.raises(ConnectionError, match="delivers it again"):
        await b.ack(held)
    k, _, p = await take(c, 15)  # at-least-once: the same message comes back
    assert (k.id_, p.headers) == ("in-flight", {"k": "v"})
    await b.ack(k)
    await c.finish()
    assert (await b.queue_stats(q))["ready"] == 0


async def test_consumer_survives_its_queue_being_deleted_and_declared_again(
    named: tuple[RabbitMessageBroker, str], caplog: pytest.LogCaptureFixture,
) -> None:
    b, q = named
    c = b.consume(q, max_unacked_messages=10)
    await c.start()
    await b.queue_delete(q)  # RabbitMQ cancels the subscription
    await asyncio.sleep(1.5)
    await b.queue_declare(q)
    await b.enqueue(key(q, "again"), "x", params())
    k, _, _ = await take(c, 10)
    assert k.id_ == "again"
    await b.ack(k)
    await c.finish()
    assert any("cancelled the consumer" in r.getMessage() for r in caplog.records)


async def test_a_quorum_pause_across_a_drop_ends_and_consuming_resumes(amqp_dsn: str) -> None:
    """A worker pauses (a suspect runs alone) just as its connection drops: the pause's
    cancel finds the channel gone and ends, the held message's ack says it comes again,
    and after `resume()` the consumer is back and hands the message out again."""
    name = unique("conn")
    b = RabbitMessageBroker(amqp_dsn, connection_name=name, queue_type="quorum",
                            publish_timeout=5.0, operation_timeout=5.0, reconnect_interval=0.5)
    await b.connect()
    q = unique()
    await b.queue_declare(q)
    try:
        c = b.consume(q, max_unacked_messages=4)
        await b.enqueue(key(q, "held"), "x", params())
        held, _, _ = await take(c)
        assert await asyncio.to_thread(drop_connections, name) == 1
        await asyncio.wait_for(c.pause(), 10)
        with pytest.raises(ConnectionError, match="delivers it again"):
            await asyncio.wait_for(b.ack(held), 10)
        await c.resume()
        k, _, _ = await take(c, 15)  # at-least-once: back on the restored connection
        assert k.id_ == "held"
        await b.ack(k)
        await enqueue_until_confirmed(b, q, "after")
        k, _, _ = await take(c, 15)
        assert k.id_ == "after"
        await b.ack(k)
        await c.finish()
    finally:
        await b.queue_delete(q)
        await b.disconnect()
