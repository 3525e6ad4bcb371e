"""A poison message (stored in a form that cannot be decoded) is dead-lettered through the
`repid_nack` hook on the real Redis and RabbitMQ, like every other dead-lettering: the
metrics plugin counts it and a plugin sees its reason."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Generator
from typing import Any

import aio_pika
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from repid import (
    Connection,
    MessageCategory,
    Parameters,
    RabbitMessageBroker,
    RedisMessageBroker,
    RoutingKey,
    hookimpl,
)
from repid.brokers.base import MessageBroker
from repid.brokers.rabbitmq._codec import HEADER_PARAMS
from repid.brokers.redis._keys import QueueKey, queue_keys
from repid_plugins.prometheus import MetricsPlugin

pytestmark = pytest.mark.integration

TIMEOUT = 10


class SeesNacks:
    """Records every dead-lettering its `repid_nack` wrapper saw go through."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str | None, bool]] = []

    @hookimpl(wrapper=True)
    def repid_nack(self, queue: str, key: RoutingKey, reason: str | None,
                   stash: Any) -> Generator[None, None, None]:
        result = yield
        self.seen.append((queue, key.id_, key.topic, reason, stash is key.stash))
        return result


@pytest.fixture(params=["redis", "rabbitmq"])
async def env(request: pytest.FixtureRequest
              ) -> AsyncIterator[tuple[Connection, str, SeesNacks, CollectorRegistry]]:
    """A connected Connection on one real broker with the metrics plugin and a recorder,
    and a fresh declared queue, deleted afterwards."""
    broker: MessageBroker
    if request.param == "redis":
        broker = RedisMessageBroker(dsn=request.getfixturevalue("redis_dsn"))
    else:
        broker = RabbitMessageBroker(dsn=request.getfixturevalue("amqp_dsn"))
    registry = CollectorRegistry()
    recorder = SeesNacks()
    connection = Connection(broker, plugins=[MetricsPlugin(registry=registry), recorder])
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    queue = f"poison-{uuid.uuid4().hex[:10]}"
    await broker.queue_declare(queue)
    try:
        yield connection, queue, recorder, registry
    finally:
        await broker.queue_delete(queue)
        await connection.disconnect()


async def write_poison(connection: Connection, queue: str, request: pytest.FixtureRequest,
                       id_: str) -> None:
    """Store, with the broker's own client, a message under `id_` that cannot be decoded."""
    broker = connection.message_broker
    if isinstance(broker, RedisMessageBroker):
        keys = queue_keys(broker.prefix, queue)
        raw = Redis.from_url(request.getfixturevalue("redis_dsn"))
        try:
            await raw.hset(keys[QueueKey.MSGS], id_, "\x00not a message at all{")
            await raw.rpush(keys[QueueKey.READY1], id_)
        finally:
            await raw.aclose()
        return
    amqp = await aio_pika.connect(request.getfixturevalue("amqp_dsn"))
    try:
        channel = await amqp.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"garbage", headers={HEADER_PARAMS: "{not json"},
                             correlation_id=id_, type="t"),
            routing_key=queue)
    finally:
        await amqp.close()


async def test_a_poison_message_fires_the_nack_hook_with_its_reason(
        env: tuple[Connection, str, SeesNacks, CollectorRegistry],
        request: pytest.FixtureRequest) -> None:
    connection, queue, recorder, registry = env
    broker = connection.message_broker
    await write_poison(connection, queue, request, "poison-1")
    good = RoutingKey(uuid.uuid4().hex, "job", queue)
    await broker.enqueue(good, "{}", Parameters())
    consumer = broker.consume(queue)
    try:
        got, _, _ = await asyncio.wait_for(consumer.__anext__(), TIMEOUT)
        assert got == good  # the poison is not handed out
        await broker.ack(got)
        for _ in range(100):
            if recorder.seen:
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.finish()

    [(where, id_, topic, reason, own_stash)] = recorder.seen
    assert (where, id_, topic, own_stash) == (queue, "poison-1", "", True)
    assert reason is not None and "cannot be decoded" in reason
    dead = registry.get_sample_value("repid_messages_processed_total",
                                     {"queue": queue, "actor": "", "outcome": "dead"})
    assert dead == 1
    assert registry.get_sample_value("repid_messages_processed_total",
                                     {"queue": queue, "actor": "job", "outcome": "success"}) == 1
    assert (await broker.queue_stats(queue))["dead"] == 1


async def test_a_poison_delayed_message_fires_the_nack_hook_on_redis(
        redis_dsn: str) -> None:
    recorder = SeesNacks()
    registry = CollectorRegistry()
    broker = RedisMessageBroker(dsn=redis_dsn)
    connection = Connection(broker, plugins=[MetricsPlugin(registry=registry), recorder])
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    queue = f"poison-{uuid.uuid4().hex[:10]}"
    await broker.queue_declare(queue)
    raw = Redis.from_url(redis_dsn)
    try:
        keys = queue_keys(broker.prefix, queue)
        await raw.hset(keys[QueueKey.MSGS], b"late", b"1|1000|\xff")
        await raw.zadd(keys[QueueKey.DELAYED], {b"late": time.time() * 1000 + 600_000})
        reader = broker.consume(queue, category=MessageCategory.DELAYED, stop_when_empty=True)
        assert [m async for m in reader] == []
        [(where, id_, topic, reason, _)] = recorder.seen
        assert (where, id_, topic) == (queue, "late", "")
        assert reason == (await raw.hget(keys[QueueKey.REASONS], b"late")).decode()
        assert registry.get_sample_value("repid_messages_processed_total",
                                         {"queue": queue, "actor": "", "outcome": "dead"}) == 1
    finally:
        await raw.aclose()
        await broker.queue_delete(queue)
        await connection.disconnect()
