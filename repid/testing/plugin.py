"""The pytest plugin (entry point `repid`): an in-memory app per test, with fixtures.

Mark a test (or a module with `pytestmark`) with
`@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True,
autoconnection=True)`. With routers, every job enqueued during the test that is ready at
once runs right away, inside the `await job.enqueue()`, through mocks of the actors, so
the test can assert on them. Jobs for a later time stay in the in-memory queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from repid.brokers.in_memory import InMemoryBucketBroker, InMemoryMessageBroker, InMemoryQueue
from repid.connection import Connection
from repid.main import Repid
from repid.processor import Processor
from repid.router import Actor, Router
from repid.testing.event_log import EventLogPlugin
from repid.testing.types import EventLog, GetEventLogT, GetInMemoryQueueT, GetMockedActorT


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "repid: give the test an in-memory repid app; with_args(routers=[...], "
        "declare_all_known_queues=True, autoconnection=True)",
    )


class _TestApp:
    """The app of one test: its connection, mocked actors and event log."""

    def __init__(self, routers: list[Router], declare: bool, autoconnect: bool) -> None:
        self.events = EventLogPlugin()
        self.broker = InMemoryMessageBroker()
        self.connection = Connection(self.broker, InMemoryBucketBroker(),
                                     InMemoryBucketBroker(use_result_bucket=True),
                                     plugins=[self.events])
        self.app = Repid(self.connection)
        self.actors: dict[str, Actor] = {}
        self.mocks: dict[str, MagicMock] = {}
        for router in routers:
            for actor in router.actors.values():
                self._mock(actor)
        self._pool: ThreadPoolExecutor | None = None
        self.processor = Processor(self.connection, self.actors, self._executor)
        if declare:
            for actor in self.actors.values():
                self.broker.queues.setdefault(actor.queue, InMemoryQueue(actor.queue))
        if autoconnect:
            self.connection.is_open = True  # in-memory brokers have nothing to connect
            Repid._set(self.connection)
        if self.actors:
            self.connection.middleware.add_subscriber(self.after_enqueue)

    def _mock(self, actor: Actor) -> None:
        copy = Actor(actor.fn, actor.name, actor.queue, actor.retry_policy, False,
                     actor.converter_class)
        mock: MagicMock = AsyncMock(side_effect=actor.fn) if copy.is_async else MagicMock(
            side_effect=actor.fn)
        copy.call = mock
        self.actors[actor.name] = copy
        self.mocks[actor.name] = mock

    def _executor(self) -> Executor:  # process pools cannot run mocks: use threads
        if self._pool is None:
            self._pool = ThreadPoolExecutor()
        return self._pool

    async def after_enqueue(self, key: Any) -> None:
        """Run every ready message of the queue now, nested enqueues included (in any
        queue: a nested enqueue marks its queue, the outermost call drains them all)."""
        if key.queue not in self.broker.queues:
            return
        pending: set[str] = self.__dict__.setdefault("_pending", set())
        pending.add(key.queue)
        if getattr(self, "_draining", False):
            return
        self._draining = True
        try:
            while pending:
                name = pending.pop()
                queue = self.broker.queues.get(name)
                consumer = self.broker.consume(name)
                while queue is not None and queue.simple.qsize():
                    k, payload, params = await consumer.__anext__()
                    await self.processor.process(k, payload, params)
                    queue = self.broker.queues.get(name)
        finally:
            self._draining = False

    def close(self) -> None:
        if Repid.get_magic_connection() is self.connection:
            Repid._set(None)
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _marker_args(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("repid")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    unknown = set(kwargs) - {"routers", "declare_all_known_queues", "autoconnection"}
    if unknown:
        raise TypeError(f"repid marker got unknown arguments {sorted(unknown)}; it takes "
                        "routers, declare_all_known_queues, autoconnection")
    return kwargs


@pytest.fixture
def _repid_test_app(request: pytest.FixtureRequest) -> Iterator[_TestApp]:
    kwargs = _marker_args(request)
    test_app = _TestApp(list(kwargs.get("routers", [])),
                        kwargs.get("declare_all_known_queues", True),
                        kwargs.get("autoconnection", True))
    yield test_app
    test_app.close()


@pytest.fixture
def repid_app(_repid_test_app: _TestApp) -> Repid:
    """A Repid app on in-memory brokers (message, args and results), bound for the test."""
    return _repid_test_app.app


@pytest.fixture
def repid_connection(_repid_test_app: _TestApp) -> Connection:
    """The Connection of `repid_app`."""
    return _repid_test_app.connection


@pytest.fixture
def repid_get_mocked_actor(_repid_test_app: _TestApp) -> GetMockedActorT:
    """`get(name)`: the mock standing in for that actor (it still runs the real function)."""

    def get(name: str) -> MagicMock:
        try:
            return _repid_test_app.mocks[name]
        except KeyError:
            raise KeyError(f"no actor named {name!r} in the marker's routers; known: "
                           f"{sorted(_repid_test_app.mocks)}") from None

    return get


@pytest.fixture
def repid_get_event_log(_repid_test_app: _TestApp) -> GetEventLogT:
    """`get()`: every broker call and actor run so far, in call order."""

    def get() -> list[EventLog]:
        return list(_repid_test_app.events.events)

    return get


@pytest.fixture
def repid_get_in_memory_queue(_repid_test_app: _TestApp) -> GetInMemoryQueueT:
    """`get(name)`: the in-memory queue (`simple.qsize()` counts waiting messages), or None
    before it is declared."""

    def get(name: str) -> InMemoryQueue | None:
        return _repid_test_app.broker.queues.get(name)

    return get
