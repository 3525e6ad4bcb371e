"""The `Delivery` a consumer yields, on each broker (in memory, the real Redis and the real
RabbitMQ): the one owner of its settle, repid 1.x's `(key, payload, params)` triple, and
the plugins' stash."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
from broker_kinds import message_broker

from repid import (
    Connection,
    Delivery,
    MessageCategory,
    Parameters,
    RoutingKey,
    StashKey,
    hookimpl,
)
from repid.brokers.base import MessageBroker
from repid.brokers.delivery import DeliveredKey
from repid.errors import AlreadySettledError

TIMEOUT = 10


class Settles:
    """Records each settle hook's key, stash and the stash's mark."""

    MARK = StashKey[str]()

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    @hookimpl(wrapper=True)
    def repid_ack(self, key: RoutingKey, stash: Any) -> Generator[None, None, None]:
        self.seen.append(("ack", key.id_, stash.get(self.MARK, None)))
        yield

    @hookimpl(wrapper=True)
    def repid_nack(self, key: RoutingKey, stash: Any,
                   reason: str | None) -> Generator[None, None, None]:
        self.seen.append(("nack", key.id_, stash.get(self.MARK, None)))
        yield


@pytest.fixture(params=["in_memory", "redis", "rabbitmq"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Connection, str, Settles]]:
    settles = Settles()
    connection = Connection(message_broker(request.param, request), plugins=[settles])
    await asyncio.wait_for(connection.connect(), TIMEOUT)
    queue = f"delivery-{uuid.uuid4().hex[:8]}"
    await connection.message_broker.queue_declare(queue)
    try:
        yield connection, queue, settles
    finally:
        await connection.message_broker.queue_delete(queue)
        await connection.disconnect()


async def _put(broker: MessageBroker, queue: str, *ids: str) -> None:
    for id_ in ids:
        await broker.enqueue(RoutingKey(id_, "t", queue), f'{{"n": "{id_}"}}', Parameters())


async def _take(consumer: Any) -> Delivery:
    delivery: Delivery = await asyncio.wait_for(consumer.__anext__(), TIMEOUT)
    return delivery


async def test_a_delivery_is_settled_once_and_carries_its_message(
        env: tuple[Connection, str, Settles]) -> None:
    connection, queue, settles = env
    broker = connection.message_broker
    await _put(broker, queue, "m1")
    consumer = broker.consume(queue)
    try:
        delivery = await _take(consumer)
        assert isinstance(delivery, Delivery)
        assert (delivery.key.id_, delivery.payload, delivery.category) == (
            "m1", '{"n": "m1"}', MessageCategory.NORMAL)
        assert delivery.delivery_count == 1 and not delivery.is_settled
        # the stash is the delivery's, and the key reads it through
        delivery.stash[Settles.MARK] = "mine"
        assert delivery.key.stash is delivery.stash
        await asyncio.wait_for(delivery.ack(), TIMEOUT)
        assert delivery.is_settled and delivery.settled_by == "ack"
        # a second settle of any kind is refused before it reaches the broker or a hook
        for second in (delivery.ack, delivery.reject, lambda: delivery.nack("late"),
                       lambda: delivery.requeue(Parameters())):
            with pytest.raises(AlreadySettledError, match="already acked"):
                await second()
        assert settles.seen == [("ack", "m1", "mine")]
    finally:
        await consumer.finish()
    assert (await broker.queue_stats(queue))["in_flight"] in (0, -1)


async def test_repid_1x_triple_and_broker_settle_by_its_key(
        env: tuple[Connection, str, Settles]) -> None:
    """repid 1.x code unpacks what a consumer yields and settles through the broker with
    the key: that settles the delivery the key came from, once."""
    connection, queue, settles = env
    broker = connection.message_broker
    await _put(broker, queue, "a", "b")
    consumer = broker.consume(queue)
    try:
        taken = {}
        for _ in range(2):
            key, payload, params = await _take(consumer)
            taken[key.id_] = key
            assert payload == f'{{"n": "{key.id_}"}}' and isinstance(params, Parameters)
            assert isinstance(key, DeliveredKey)
            # equal to, and hashed as, the plain key: dict lookups by a plain key work
            assert key == RoutingKey(key.id_, "t", queue)
            assert {RoutingKey(key.id_, "t", queue): 1}[key] == 1
        taken["a"].delivery.stash[Settles.MARK] = "a's"
        await asyncio.wait_for(broker.ack(taken["a"]), TIMEOUT)
        await asyncio.wait_for(broker.nack(taken["b"], "bad"), TIMEOUT)
        with pytest.raises(AlreadySettledError):
            await broker.ack(taken["b"])
        assert settles.seen == [("ack", "a", "a's"), ("nack", "b", None)]
    finally:
        await consumer.finish()
    dead = broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True)
    found = [d async for d in dead]
    assert [d.key.id_ for d in found] == ["b"]
    assert found[0].category is MessageCategory.DEAD
    await asyncio.wait_for(found[0].ack(), TIMEOUT)  # deletes the dead letter
    assert (await broker.queue_stats(queue))["dead"] == 0


async def test_requeue_through_the_delivery_sends_a_new_message(
        env: tuple[Connection, str, Settles]) -> None:
    connection, queue, _ = env
    broker = connection.message_broker
    await _put(broker, queue, "r")
    consumer = broker.consume(queue)
    try:
        first = await _take(consumer)
        params = Parameters()
        params.headers["again"] = "yes"
        await asyncio.wait_for(first.requeue(params, "retry", payload='{"n": "second"}'),
                               TIMEOUT)
        second = await _take(consumer)
        assert second is not first and not second.is_settled
        assert second.key == first.key and second.payload == '{"n": "second"}'
        assert second.params.headers["again"] == "yes"
        assert second.stash is not first.stash  # a new delivery, a new stash
        await asyncio.wait_for(second.ack(), TIMEOUT)
    finally:
        await consumer.finish()


async def test_each_delivery_of_a_message_has_its_own_key_and_stash(
        env: tuple[Connection, str, Settles]) -> None:
    """A message rejected and delivered again: the first delivery's key still names the
    first delivery (settled), so 1.x code acking with a stale key cannot settle the new
    delivery."""
    connection, queue, _ = env
    broker = connection.message_broker
    await _put(broker, queue, "again")
    consumer = broker.consume(queue)
    try:
        first = await _take(consumer)
        first.stash[Settles.MARK] = "first"
        await asyncio.wait_for(first.reject(), TIMEOUT)
        second = await _take(consumer)
        assert second.key == first.key and second.key is not first.key
        assert first.key.delivery is first and second.key.delivery is second
        assert Settles.MARK not in second.stash and first.key.stash[Settles.MARK] == "first"
        with pytest.raises(AlreadySettledError):
            await broker.ack(first.key)  # the stale key: its delivery was rejected
        assert not second.is_settled
        await asyncio.wait_for(broker.ack(second.key), TIMEOUT)
        assert second.settled_by == "ack"
    finally:
        await consumer.finish()
