"""Every enqueue path refuses a payload over `max_message_size`, on every broker, with and
without a plugin around enqueue: `enqueue`, the broker's `enqueue_many` (each broker has
its own batched path when nothing is hooked) and `repid.enqueue_many`. A batch with one
message too large stores none of its messages, and a payload of exactly the limit is
stored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from broker_kinds import message_broker

from repid import (
    Connection,
    Job,
    MessageTooLargeError,
    Queue,
    enqueue_many,
    hookimpl,
)
from repid.brokers.base import RawMessage
from repid.data import Parameters, RoutingKey
from repid.serializer import to_json

pytestmark = pytest.mark.integration

LIMIT = 1024
TIMEOUT = 10


class SeesEnqueues:
    """A plugin around enqueue that records the ids it saw go through."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    @hookimpl(wrapper=True)
    def repid_enqueue(self, key):  # type: ignore[no-untyped-def]
        self.ids.append(key.id_)
        return (yield)


def _message(queue: str, payload: str) -> RawMessage:
    key = RoutingKey(id_=uuid.uuid4().hex, topic="work", queue=queue, priority=1)
    return key, payload, Parameters(execution_timeout=timedelta(seconds=30))


def _json_of_bytes(size: int, char: str = "x") -> str:
    """A JSON string of exactly `size` UTF-8 bytes (quotes included) made of `char`."""
    width = len(char.encode())
    assert (size - 2) % width == 0, f"{size - 2} bytes are no whole number of {char!r}"
    return '"' + char * ((size - 2) // width) + '"'


@pytest.fixture
async def setup(request: pytest.FixtureRequest,
                ) -> AsyncIterator[tuple[Connection, SeesEnqueues | None, str]]:
    kind, hooked = request.param
    plugin = SeesEnqueues() if hooked else None
    conn = Connection(message_broker(kind, request, max_message_size=LIMIT),
                      plugins=() if plugin is None else (plugin,))
    await asyncio.wait_for(conn.connect(), TIMEOUT)
    queue = Queue(f"size-{uuid.uuid4().hex[:10]}", _connection=conn)
    await queue.declare()
    try:
        assert conn.message_broker.is_hooked("enqueue") is hooked  # both paths are tested
        yield conn, plugin, queue.name
    finally:
        await queue.delete()
        await conn.disconnect()


CASES = [(kind, hooked) for kind in ("in_memory", "redis", "rabbitmq")
         for hooked in (False, True)]
IDS = [f"{kind}-{'plugin' if hooked else 'no_plugin'}" for kind, hooked in CASES]


async def _ready(conn: Connection, queue: str) -> int:
    return (await conn.message_broker.queue_stats(queue))["ready"]


@pytest.mark.parametrize("setup", CASES, ids=IDS, indirect=True)
@pytest.mark.parametrize("char", ["x", "é"], ids=["ascii", "two_byte"])
async def test_enqueue_many_refuses_a_batch_with_a_payload_just_over_the_limit(
        setup: tuple[Connection, SeesEnqueues | None, str], char: str) -> None:
    conn, plugin, queue = setup
    broker = conn.message_broker
    # just over: one byte (ASCII), or two (a two-byte character, under LIMIT characters)
    over = _json_of_bytes(LIMIT + len(char.encode()), char)
    small = _message(queue, '{"n": 1}')
    too_large = _message(queue, over)
    with pytest.raises(MessageTooLargeError) as info:
        await asyncio.wait_for(broker.enqueue_many([small, too_large, _message(queue, "{}")]),
                               TIMEOUT)
    assert info.value.key is too_large[0]
    assert info.value.size == len(over.encode()) > LIMIT == info.value.limit
    assert await _ready(conn, queue) == 0  # nothing of the batch stored
    if plugin is not None:
        assert plugin.ids == []  # nor sent on through the plugin
    # a payload of exactly the limit is stored
    at_limit = _message(queue, _json_of_bytes(LIMIT))
    await asyncio.wait_for(broker.enqueue_many([at_limit]), TIMEOUT)
    assert await _ready(conn, queue) == 1
    if plugin is not None:
        assert plugin.ids == [at_limit[0].id_]


@pytest.mark.parametrize("setup", CASES, ids=IDS, indirect=True)
async def test_enqueue_and_repid_enqueue_many_refuse_a_payload_over_the_limit(
        setup: tuple[Connection, SeesEnqueues | None, str]) -> None:
    conn, plugin, queue = setup
    text = "x" * (LIMIT - len(to_json({"text": ""})) + 1)  # a payload of LIMIT + 1 bytes
    with pytest.raises(MessageTooLargeError) as info:
        await asyncio.wait_for(enqueue_many([
            Job("work", queue=queue, args={"text": "small"}, _connection=conn),
            Job("work", queue=queue, args={"text": text}, _connection=conn)]), TIMEOUT)
    assert info.value.size == LIMIT + 1
    with pytest.raises(MessageTooLargeError):
        await Job("work", queue=queue, args={"text": text}, _connection=conn).enqueue()
    assert await _ready(conn, queue) == 0
    if plugin is not None:
        assert plugin.ids == []
    await asyncio.wait_for(enqueue_many([
        Job("work", queue=queue, args={"text": text[1:]}, _connection=conn)]), TIMEOUT)
    assert await _ready(conn, queue) == 1


@pytest.mark.parametrize("setup", CASES, ids=IDS, indirect=True)
async def test_requeue_with_a_new_payload_over_the_limit_leaves_the_message_unsettled(
        setup: tuple[Connection, SeesEnqueues | None, str]) -> None:
    conn, _, queue = setup
    broker = conn.message_broker
    await asyncio.wait_for(broker.enqueue(*_message(queue, '{"n": 1}')), TIMEOUT)
    consumer = broker.consume(queue)
    delivery = await asyncio.wait_for(consumer.__anext__(), TIMEOUT)
    try:
        with pytest.raises(MessageTooLargeError):
            await delivery.requeue(delivery.params, "retry", _json_of_bytes(LIMIT + 1))
        assert not delivery.is_settled  # refused before the claim: it can still settle
        await asyncio.wait_for(delivery.requeue(delivery.params, "retry",
                                                _json_of_bytes(LIMIT)), TIMEOUT)
        assert delivery.settled_by == "requeue"
    finally:
        await consumer.finish()
    consumer = broker.consume(queue)
    try:
        again = await asyncio.wait_for(consumer.__anext__(), TIMEOUT)
        assert again.payload == _json_of_bytes(LIMIT)  # the new payload, at the limit
        await again.ack()
    finally:
        await consumer.finish()
