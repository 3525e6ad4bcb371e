"""Fixtures of the Redis tests: private Redis servers a test may kill, restart or wipe."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from repid import RedisMessageBroker
from tests.servers.redis_server import PrivateRedis, available, free_port

MakeRedis = Callable[..., PrivateRedis]


@pytest.fixture
def private_redis() -> Iterator[MakeRedis]:
    """`private_redis(appendonly=False)`: start a Redis of this test's own on a free loopback
    port and a temporary data directory; every one started is stopped at the end, even when
    the test fails."""
    why_not = available()
    if why_not is not None:
        pytest.skip(f"{why_not}; install Redis to run this test")
    servers: list[PrivateRedis] = []

    def start(appendonly: bool = False) -> PrivateRedis:
        server = PrivateRedis(free_port(), appendonly=appendonly)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def queue(broker: RedisMessageBroker) -> AsyncIterator[str]:
    """A fresh queue declared on the test module's `broker`, deleted afterwards."""
    name = f"q-{uuid.uuid4().hex[:12]}"
    await broker.queue_declare(name)
    yield name
    await broker.queue_delete(name)
