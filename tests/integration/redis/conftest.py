"""Fixtures of the Redis tests: private Redis servers a test may kill, restart or wipe."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

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
