"""Shared helpers of the unit tests: in-memory connections, a worker runner, queue peeks.

Every helper is a fixture (test modules do not import this file), so the module name
`conftest` never clashes with tests/conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Message,
    MessageCategory,
    Queue,
    Repid,
    Worker,
)
from repid.worker._runner import Runner

#: every await on the system under test is bounded by this many seconds
TIMEOUT = 5


@pytest.fixture(autouse=True)
def _unbind_magic() -> Iterator[None]:
    """`Repid` keeps the bound connection in a class-level thread-local: start and end
    every test with nothing bound, so tests cannot leak into each other."""
    Repid.bind(None)
    yield
    Repid.bind(None)


MakeConn = Callable[..., Awaitable[Connection]]


@pytest.fixture
def make_conn() -> MakeConn:
    """`await make_conn(queues=("default",), args=False, results=True, plugins=())`: an
    open in-memory Connection with those queues declared. Nothing is bound by magic."""

    async def make(
        queues: tuple[str, ...] = ("default",),
        *,
        args: bool = False,
        results: bool = True,
        plugins: tuple[object, ...] = (),
    ) -> Connection:
        conn = Connection(
            InMemoryMessageBroker(),
            args_bucket_broker=InMemoryBucketBroker() if args else None,
            results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True)
            if results else None,
            plugins=plugins,
        )
        await conn.connect()
        for name in queues:
            await Queue(name, _connection=conn).declare()
        return conn

    return make


@pytest.fixture
async def conn(make_conn: MakeConn) -> Connection:
    """An open in-memory Connection (message broker + results bucket), queue `default`
    declared."""
    return await make_conn()


RunWorker = Callable[..., Awaitable[Runner]]


@pytest.fixture
def run_worker() -> RunWorker:
    """`await run_worker(conn, router, messages_limit=1, **worker_kwargs)`: run a real
    Worker until it has processed `messages_limit` messages, bounded by TIMEOUT."""

    async def run(conn: Connection, *routers: Any, timeout: float = TIMEOUT,
                  **kwargs: Any) -> Runner:
        kwargs.setdefault("messages_limit", 1)
        worker = Worker(routers=list(routers), _connection=conn, **kwargs)
        return await asyncio.wait_for(worker.run(), timeout)

    return run


GetMessages = Callable[..., Awaitable[list[Message]]]


@pytest.fixture
def messages_of() -> GetMessages:
    """`await messages_of(conn, "default", MessageCategory.DEAD)`: the DEAD or DELAYED
    messages of a queue right now (read through the public Queue API)."""

    async def get(conn: Connection, queue: str = "default",
                  category: MessageCategory = MessageCategory.DEAD) -> list[Message]:
        assert category is not MessageCategory.NORMAL, "NORMAL waits for new messages"

        async def collect() -> list[Message]:
            return [m async for m in Queue(queue, _connection=conn).get_messages(
                category=category, stop_when_empty=True)]

        return await asyncio.wait_for(collect(), TIMEOUT)

    return get


@pytest.fixture
def stats() -> Callable[..., Awaitable[dict[str, int]]]:
    """`await stats(conn, "default")`: ready/delayed/in_flight/dead counts of a queue."""

    async def get(conn: Connection, queue: str = "default") -> dict[str, int]:
        return await Queue(queue, _connection=conn).stats()

    return get
