"""The in-memory app of one test: its connection, the mocks of its actors, its event log.

Guarantees (as the repid 1.x plugin gave them):

- Eager runs: with routers, a job for one of their actors that is ready at once runs
  inside its `await job.enqueue()`, so the test can assert right after the enqueue. The
  messages of that queue that are ready then run too, and so do jobs their actors
  enqueue (in any queue) before the outer `enqueue()` returns. Jobs for a later time stay
  in the queue; messages for topics no actor in the routers handles are left in the queue
  untouched (they are taken aside while the others run and put back in order).
- Mocks: each actor runs through a `MagicMock` that wraps the real function (as in repid
  1.x), so the result is the real one until the test sets `side_effect` or
  `return_value`; an async actor's mock is also an `AsyncMock` (`assert_awaited_*`).
- Binding: `bind()` makes the connection the one `Job`, `Queue` and `Worker` find by
  magic; `close()` unbinds it (only if it is still the bound one).
"""

from __future__ import annotations

import copy
from concurrent.futures import Executor, ThreadPoolExecutor
from unittest.mock import AsyncMock, MagicMock

from repid.app import Repid
from repid.brokers.delivery import Delivery
from repid.brokers.in_memory import InMemoryBucketBroker, InMemoryMessageBroker, InMemoryQueue
from repid.connection import Connection
from repid.data import RoutingKey
from repid.router import Actor
from repid.testing.event_log import EventLogPlugin
from repid.testing.markers import MarkerSettings
from repid.worker._processor import Processor


class _AsyncActorMock(AsyncMock, MagicMock):
    """The mock of an async actor: awaited like the actor, and a `MagicMock` to the test."""


class InMemoryTestApp:
    """Everything one test's fixtures hand out."""

    def __init__(self, settings: MarkerSettings) -> None:
        self.settings = settings
        self.events = EventLogPlugin()
        self.broker = InMemoryMessageBroker()
        self.connection = Connection(self.broker, InMemoryBucketBroker(),
                                     InMemoryBucketBroker(use_result_bucket=True),
                                     plugins=[self.events])
        self.connection.is_open = True  # in-memory brokers have nothing to connect to
        self.app = Repid(self.connection)
        self.actors: dict[str, Actor] = {}
        self.mocks: dict[str, MagicMock] = {}
        for router in settings.routers:  # nearest marker first: its actor wins a name
            for name, actor in router.actors.items():
                if name not in self.actors:
                    self._mock(name, actor)
        self._pool: ThreadPoolExecutor | None = None
        # repid 1.x's order, settle then result, which 1.x tests read in the event log
        self.processor = Processor(self.connection, self.actors, self._executor,
                                   result_before_settle=False)
        self._pending: set[str] = set()
        self._draining = False
        if settings.declare_all_known_queues:
            self.declare_known_queues()
        if self.actors:
            self.connection.middleware.add_subscriber(self.after_enqueue)
        if settings.autoconnection:
            self.bind()

    def _mock(self, name: str, actor: Actor) -> None:
        mock = (_AsyncActorMock if actor.is_async else MagicMock)(wraps=actor.fn)
        mocked = copy.copy(actor)  # the router's own actor stays as it is
        mocked.call = mock
        mocked.run_in_process = False  # a mock cannot cross into another process
        self.actors[name] = mocked
        self.mocks[name] = mock

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(thread_name_prefix="repid-test")
        return self._pool

    def declare_known_queues(self) -> None:
        """Declare the queues of the routers' actors (synchronously: a sync test's
        fixtures can do it too)."""
        for actor in self.actors.values():
            self.broker.queues.setdefault(actor.queue, InMemoryQueue(actor.queue))

    def bind(self) -> None:
        Repid.bind(self.connection)

    async def after_enqueue(self, key: RoutingKey) -> None:
        """A v1 subscriber: run the ready messages of the job's queue before the enqueue
        returns. A nested enqueue only marks its queue; the outermost call drains them."""
        if key.topic not in self.actors:
            return
        self._pending.add(key.queue)
        if self._draining:
            return
        self._draining = True
        try:
            while self._pending:
                await self._drain(self._pending.pop())
        finally:
            self._draining = False

    def _has_work(self, queue_name: str) -> bool:
        queue = self.broker.queues.get(queue_name)
        return queue is not None and any(
            m is not None and m.key.topic in self.actors for m in queue.simple.items())

    async def _drain(self, queue_name: str) -> None:
        set_aside: list[Delivery] = []
        consumer = self.broker.consume(queue_name)
        try:
            while self._has_work(queue_name):
                delivery = await consumer.__anext__()
                if delivery.key.topic in self.actors:
                    await self.processor.process(delivery)
                else:
                    set_aside.append(delivery)
        finally:
            for delivery in set_aside:  # back in the order they came, as never taken
                await delivery.reject()

    def close(self) -> None:
        self.processor.close()
        if Repid.get_magic_connection() is self.connection:
            Repid.bind(None)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
