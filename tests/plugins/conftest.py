"""Fixtures of the plugin tests: a connection factory over each broker, a worker runner.

`make_conn` is parametrized over in_memory / redis / rabbitmq (the tests that use it run on
each); the server-backed ones skip when the server is unreachable (tests/conftest.py) or the
broker module is not there yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from repid import Connection, InMemoryBucketBroker, InMemoryMessageBroker, Repid, Router, Worker

MakeConn = Callable[..., Awaitable[Connection]]

#: every wait on a worker is bounded by this many seconds
TIMEOUT = 15


RunWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test (or concurrent run) uses."""
    return f"plug-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _broker(request: pytest.FixtureRequest, kind: str) -> Any:
    """A new message broker of `kind`, or a skip saying why there is none."""
    if kind == "in_memory":
        return InMemoryMessageBroker()
    module_name, class_name, dsn_fixture = {
        "redis": ("repid.brokers.redis", "RedisMessageBroker", "redis_dsn"),
        "rabbitmq": ("repid.brokers.rabbitmq", "RabbitMessageBroker", "amqp_dsn"),
    }[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pytest.skip("broker not implemented yet")
    dsn = request.getfixturevalue(dsn_fixture)
    return getattr(module, class_name)(dsn)


@pytest.fixture(autouse=True)
def _unbind_magic() -> Any:
    """Nothing bound through `Repid` before or after a test."""
    Repid.bind(None)
    yield
    Repid.bind(None)


@pytest.fixture(params=["in_memory", "redis", "rabbitmq"])
async def make_conn(request: pytest.FixtureRequest) -> AsyncIterator[MakeConn]:
    """`await make_conn(queue, plugins=[...], results=False)`: an open Connection on this
    param's broker with `queue` declared; queues are deleted and it is closed at the end."""
    made: list[tuple[Connection, list[str]]] = []

    async def make(*queues: str, plugins: list[object] | None = None,
                   results: bool = False) -> Connection:
        conn = Connection(_broker(request, request.param),
                          results_bucket_broker=InMemoryBucketBroker() if results else None,
                          plugins=plugins or [])
        await conn.connect()
        made.append((conn, list(queues)))
        for queue in queues:
            await conn.message_broker.queue_declare(queue)
        return conn

    yield make
    for conn, queues in made:
        for queue in queues:
            with contextlib.suppress(Exception):  # cleanup must not hide a test's failure
                await conn.message_broker.queue_delete(queue)
        await conn.disconnect()


@pytest.fixture
def broker_kind(make_conn: MakeConn, request: pytest.FixtureRequest) -> str:
    """The name of the broker this test runs on."""
    return str(request.node.callspec.params["make_conn"])


@pytest.fixture
def run_worker() -> RunWorker:
    """`await run_worker(conn, router, messages, **worker_kwargs)`: run a worker until it
    handled `messages` messages (bounded by TIMEOUT); returns the Worker."""

    async def run(conn: Connection, router: Router, messages: int, **kwargs: Any) -> Worker:
        worker = Worker(routers=[router], messages_limit=messages, _connection=conn,
                        graceful_shutdown_time=1.0, handle_signals=[], **kwargs)
        await asyncio.wait_for(worker.run(), TIMEOUT)
        return worker

    return run
