"""The in-memory brokers' promises (repid/brokers/base.py) exercised directly, and
Queue's declare/flush/delete/stats."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from repid import (
    ArgsBucket,
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    MessageCategory,
    Parameters,
    Queue,
    QueueNotDeclaredError,
    Router,
    RoutingKey,
    Worker,
)
from repid.data import DelayProperties, utcnow


async def test_flush_removes_ready_delayed_and_dead(conn: Connection, stats) -> None:
    broker = conn.message_broker
    await Job("a", _connection=conn).enqueue()
    await Job("b", deferred_by=60, _connection=conn).enqueue()
    await Job("c", _connection=conn).enqueue()
    consumer = broker.consume("default")
    key, _, _ = await asyncio.wait_for(consumer.__anext__(), 5)
    await broker.nack(key)
    assert await stats(conn) == {"ready": 1, "delayed": 1, "in_flight": 0, "dead": 1}
    await Queue(_connection=conn).flush()
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_worker_keeps_consuming_a_flushed_queue(conn: Connection) -> None:
    router = Router()
    ran = []

    @router.actor
    async def work() -> None:
        ran.append(1)

    worker = Worker(routers=[router], _connection=conn, messages_limit=1)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)  # the worker is now waiting for a message
    await Queue(_connection=conn).flush()
    await Job("work", _connection=conn).enqueue()
    await asyncio.wait_for(task, 5)
    assert ran == [1]


async def test_delete_removes_the_queue(conn: Connection) -> None:
    await Job("a", _connection=conn).enqueue()
    await Queue(_connection=conn).delete()
    with pytest.raises(QueueNotDeclaredError):
        await Queue(_connection=conn).stats()
    conn.message_broker.require_declared_queues = True
    with pytest.raises(QueueNotDeclaredError):
        await Job("a", _connection=conn).enqueue()
    await Queue(_connection=conn).delete()  # deleting again is harmless
    await Queue(_connection=conn).declare()
    assert await Queue(_connection=conn).stats() == {"ready": 0, "delayed": 0,
                                                     "in_flight": 0, "dead": 0}


async def test_declare_is_idempotent(conn: Connection, stats) -> None:
    await Job("a", _connection=conn).enqueue()
    await Queue(_connection=conn).declare()
    assert (await stats(conn))["ready"] == 1


async def test_taken_message_is_in_flight_until_settled(conn: Connection, stats) -> None:
    broker = conn.message_broker
    await Job("a", _connection=conn).enqueue()
    consumer = broker.consume("default")
    key, _, _ = await asyncio.wait_for(consumer.__anext__(), 5)
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 1, "dead": 0}
    await broker.ack(key)
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_requeue_with_delay_and_reject(conn: Connection, stats) -> None:
    broker = conn.message_broker
    await broker.enqueue(RoutingKey("m", "t"), "p", Parameters())
    consumer = broker.consume("default")
    key, payload, params = await asyncio.wait_for(consumer.__anext__(), 5)
    await broker.requeue(key, payload, params.with_retry(timedelta(seconds=1)))
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    key, payload, params = await asyncio.wait_for(consumer.__anext__(), 5)  # after ~1 s
    assert params.retries.already_tried == 1 and payload == "p" and key.id_ == "m"
    await broker.reject(key)
    key, _, params = await asyncio.wait_for(consumer.__anext__(), 5)
    assert params.retries.already_tried == 1  # reject counts no try


async def test_delay_in_the_past_is_ready_at_once(conn: Connection, stats) -> None:
    await conn.message_broker.enqueue(
        RoutingKey("m", "t"), "",
        Parameters(delay=DelayProperties(next_execution_time=utcnow() - timedelta(hours=1))))
    assert (await stats(conn))["ready"] == 1


async def test_finished_consumer_stops(conn: Connection) -> None:
    consumer = conn.message_broker.consume("default")
    await consumer.finish()
    with pytest.raises(StopAsyncIteration):
        await consumer.__anext__()


async def test_get_messages_normal_yields_ready_messages(conn: Connection, stats) -> None:
    await Job("a", args={"n": 1}, _connection=conn).enqueue()

    async def first() -> None:
        async for msg in Queue(_connection=conn).get_messages():
            assert msg.category is MessageCategory.NORMAL
            assert msg.key.topic == "a" and msg.raw_payload == '{"n":1}'
            await msg.ack()
            return

    await asyncio.wait_for(first(), 5)
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_bucket_broker_stores_gets_deletes_and_expires() -> None:
    broker = InMemoryBucketBroker()
    bucket = ArgsBucket("x", ttl=timedelta(seconds=1))
    await broker.store_bucket("b", bucket)
    assert await broker.get_bucket("b") is bucket
    broker.buckets["b"] = (bucket, 0.0)  # pretend its ttl has passed
    assert await broker.get_bucket("b") is None
    await broker.store_bucket("c", ArgsBucket("y"))
    await broker.delete_bucket("c")
    assert await broker.get_bucket("c") is None
    await broker.delete_bucket("never")  # harmless
    assert "InMemoryBucketBroker" in repr(broker)


def test_repr_lists_queues() -> None:
    broker = InMemoryMessageBroker()
    assert repr(broker) == "InMemoryMessageBroker(queues=[])"
