"""Shared helpers and fixtures of the RabbitMQ integration tests (test modules import the
fixtures `broker` and `queue` from here)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from repid.brokers.base import Consumer, RawMessage
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.data import DelayProperties, Parameters, RoutingKey, utcnow

TAKE_TIMEOUT = 5.0


def unique(prefix: str = "rabbit-test") -> str:
    """A queue name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def key(queue: str, id_: str | None = None, topic: str = "job", priority: int = 1) -> RoutingKey:
    return RoutingKey(id_=id_ or uuid.uuid4().hex, topic=topic, queue=queue, priority=priority)


def params(delay: float | None = None, headers: dict[str, str] | None = None) -> Parameters:
    """Parameters ready now, or `delay` seconds from now."""
    when = None if delay is None else utcnow() + timedelta(seconds=delay)
    return Parameters(delay=DelayProperties(next_execution_time=when), headers=headers or {})


async def take(consumer: Consumer, timeout: float = TAKE_TIMEOUT) -> RawMessage:
    """The consumer's next message, failing the test if none comes within `timeout`."""
    return await asyncio.wait_for(consumer.__anext__(), timeout)


async def nothing_within(consumer: Consumer, seconds: float) -> bool:
    """True when the consumer hands out nothing for `seconds` (the take is cancelled,
    which must not lose a message)."""
    try:
        await asyncio.wait_for(consumer.__anext__(), seconds)
    except asyncio.TimeoutError:
        return True
    return False


async def drain(consumer: Consumer, timeout: float = TAKE_TIMEOUT) -> list[RawMessage]:
    """Everything a DELAYED or DEAD consumer reads before it ends."""
    out: list[RawMessage] = []
    while True:
        try:
            out.append(await asyncio.wait_for(consumer.__anext__(), timeout))
        except StopAsyncIteration:
            return out


@pytest.fixture
async def broker(amqp_dsn: str) -> AsyncIterator[RabbitMessageBroker]:
    """A connected RabbitMessageBroker."""
    b = RabbitMessageBroker(amqp_dsn, publish_timeout=10.0, operation_timeout=10.0)
    await b.connect()
    yield b
    await b.disconnect()


@pytest.fixture
async def queue(broker: RabbitMessageBroker) -> AsyncIterator[str]:
    """A declared queue with a unique name, deleted (with its DLQ) afterwards."""
    name = unique()
    await broker.queue_declare(name)
    yield name
    if broker._connection is None:
        await broker.connect()
    await broker.queue_delete(name)


def drop_connections(name: str) -> int:
    """Close (server side) every RabbitMQ connection whose connection_name is `name`."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "--no-table-headers",
         "pid", "client_properties"],
        capture_output=True, text=True, timeout=20, check=True).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines()
            if f'{{"connection_name","{name}"}}' in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "test"],
                       capture_output=True, timeout=20, check=True)
    return len(pids)
