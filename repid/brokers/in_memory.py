"""In-memory brokers: every promise of the base, inside one process.

They hold Python objects (nothing is encoded), so producer and worker must share the
process. Delays are timers on the event loop, one per message, so a long delay never holds
back a short one. The in-flight set keeps every taken message until it is settled; the
worker returns what it still holds on shutdown (a crash of the process loses everything,
as nothing outlives it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from repid.brokers.base import (
    DEAD_REASON_HEADER,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_SIZE,
    BucketBroker,
    Consumer,
    ConsumeRequest,
    MessageBroker,
)
from repid.brokers.delivery import DeliveredKey, Delivery
from repid.data import BucketT, MessageCategory, Parameters, RoutingKey, utcnow
from repid.errors import QueueNotDeclaredError

logger = logging.getLogger("repid.brokers.in_memory")

_seq = itertools.count()
#: priority of the entry that tells consumers of a deleted queue it is gone (before any)
_GONE = float("-inf")


@dataclass(eq=False, slots=True)
class StoredMessage:
    """One message as the broker keeps it; the object itself is the handle of its
    deliveries (a requeue stores a new one)."""

    #: a NORMAL delivery hands it out itself (a stored message is delivered to one NORMAL
    #: consumer at a time; a reject gives it a new one for its next delivery), a part
    #: reader a copy
    key: DeliveredKey
    payload: str
    params: Parameters
    timer: asyncio.TimerHandle | None = None


class _ReadyQueue(asyncio.PriorityQueue):  # type: ignore[type-arg]
    """Ready messages, highest priority first, first-in first-out within a priority."""

    def items(self) -> Iterator[StoredMessage]:
        """The ready messages, in no particular order (for inspection)."""
        return (entry[2] for entry in self._queue)  # type: ignore[attr-defined]


@dataclass
class InMemoryQueue:
    """One queue: `simple` holds ready messages (`simple.qsize()` counts them), `delayed`
    those waiting for their time, `dead` the dead letters, `processing` those taken."""

    name: str
    simple: _ReadyQueue = field(default_factory=_ReadyQueue)
    delayed: dict[int, StoredMessage] = field(default_factory=dict)
    dead: list[StoredMessage] = field(default_factory=list)
    processing: dict[int, StoredMessage] = field(default_factory=dict)


class InMemoryMessageBroker(MessageBroker):
    """Queues in this process's memory. No extra dependencies; made for examples and tests.

    An enqueue declares its queue, as on Redis (so the pytest plugin's in-memory app takes
    the jobs of repid 1.x's testing guide without a declaration);
    `require_declared_queues=True` makes it refuse a queue nobody declared
    (`QueueNotDeclaredError`) instead.
    """

    system = "in_memory"

    def __init__(self, *, max_deliveries: int = DEFAULT_MAX_DELIVERIES,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 require_declared_queues: bool = False) -> None:
        self.queues: dict[str, InMemoryQueue] = {}
        self.set_limits(max_deliveries, max_message_size)
        self.require_declared_queues = require_declared_queues

    def __repr__(self) -> str:
        return f"InMemoryMessageBroker(queues={sorted(self.queues)})"

    async def connect(self) -> None:
        """Nothing to connect to."""

    async def disconnect(self) -> None:
        """Nothing to disconnect from; queues stay as they are."""

    def _queue(self, name: str) -> InMemoryQueue:
        try:
            return self.queues[name]
        except KeyError:
            raise QueueNotDeclaredError(name) from None

    def _store(self, queue: InMemoryQueue, message: StoredMessage) -> None:
        """Ready now, or a timer that makes it ready at its own time (promise 3)."""
        ready_at = message.params.delay.next_execution_time
        if ready_at is not None:
            delay = (ready_at - utcnow()).total_seconds()
            if delay > 0:
                token = id(message)
                queue.delayed[token] = message
                message.timer = asyncio.get_running_loop().call_later(
                    delay, self._wake, queue, token)
                return
        queue.simple.put_nowait((-message.key.priority, next(_seq), message))

    def _wake(self, queue: InMemoryQueue, token: int) -> None:
        message = queue.delayed.pop(token, None)
        if message is not None:
            message.timer = None
            queue.simple.put_nowait((-message.key.priority, next(_seq), message))

    def _new(self, key: RoutingKey, payload: str, params: Parameters) -> StoredMessage:
        return StoredMessage(DeliveredKey(key.id_, key.topic, key.queue, key.priority),
                             payload, params)

    async def _enqueue(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        queue = self.queues.get(key.queue)
        if queue is None:
            if self.require_declared_queues:
                raise QueueNotDeclaredError(key.queue)
            queue = self.queues[key.queue] = InMemoryQueue(key.queue)
        self._store(queue, self._new(key, payload, params))

    def _take_back(self, key: RoutingKey,
                   handle: Any) -> tuple[InMemoryQueue, StoredMessage | None]:
        """Remove a settled message from wherever it is: in flight, dead, or delayed
        (`handle` is the `StoredMessage` a consumer delivered; None finds nothing)."""
        queue = self._queue(key.queue)
        if handle is None:
            return queue, None
        message = queue.processing.pop(id(handle), None)
        if message is not None:
            return queue, message
        for i, dead in enumerate(queue.dead):
            if dead is handle:
                return queue, queue.dead.pop(i)
        for token, delayed in list(queue.delayed.items()):
            if delayed is handle:
                if delayed.timer is not None:
                    delayed.timer.cancel()
                return queue, queue.delayed.pop(token)
        return queue, None

    async def _ack(self, key: RoutingKey, handle: Any) -> None:
        self._take_back(key, handle)

    async def _nack(self, key: RoutingKey, handle: Any, reason: str | None = None) -> None:
        queue, message = self._take_back(key, handle)
        if message is not None:
            if reason is not None:
                message.params = replace(message.params, headers={
                    **message.params.headers, DEAD_REASON_HEADER: reason})
            queue.dead.append(message)

    async def _reject(self, key: RoutingKey, handle: Any) -> None:
        queue, message = self._take_back(key, handle)
        if message is not None:
            # its next delivery gets a key of its own: the old one still names this one
            old = message.key
            message.key = DeliveredKey(old.id_, old.topic, old.queue, old.priority)
            queue.simple.put_nowait((-message.key.priority, next(_seq), message))

    async def _requeue(self, key: RoutingKey, handle: Any, payload: str, params: Parameters,
                       reason: str | None = None) -> None:
        queue, held = self._take_back(key, handle)
        if held is None:
            # flushed (or settled) since it was taken: like ack and nack, no effect
            logger.warning("requeue of message %r in queue %r had no effect: the queue no "
                           "longer holds it (flushed?)", key.id_, key.queue)
            return
        self._store(queue, self._new(key, payload, params))

    async def _queue_declare(self, queue_name: str) -> None:
        self.queues.setdefault(queue_name, InMemoryQueue(queue_name))

    async def _queue_flush(self, queue_name: str) -> None:
        queue = self._queue(queue_name)
        for message in queue.delayed.values():
            if message.timer is not None:
                message.timer.cancel()
        # emptied in place, not replaced: a consumer waiting on the queue keeps receiving
        queue.delayed.clear()
        queue.dead.clear()
        queue.processing.clear()
        while not queue.simple.empty():
            queue.simple.get_nowait()

    async def _queue_delete(self, queue_name: str) -> None:
        if queue_name in self.queues:
            await self._queue_flush(queue_name)
            queue = self.queues.pop(queue_name)
            # wake a consumer waiting on the deleted queue: it raises QueueNotDeclaredError
            # and, declared again, waits on the new one
            queue.simple.put_nowait((_GONE, next(_seq), None))

    def _consumer(self, request: ConsumeRequest) -> Consumer:
        if request.category is MessageCategory.NORMAL:
            return _ReadyConsumer(self, request.queue_name, request.category)
        return _PartReader(self, request.queue_name, request.category,
                           request.stop_when_empty)

    async def queue_names(self) -> list[str] | None:
        return sorted(self.queues)

    async def queue_stats(self, queue_name: str) -> dict[str, int]:
        q = self._queue(queue_name)
        return {"ready": q.simple.qsize(), "delayed": len(q.delayed),
                "in_flight": len(q.processing), "dead": len(q.dead)}


class _ReadyConsumer(Consumer):
    """Takes ready messages as they come; holds none of its own, so `finish` has nothing
    to return (a cancelled wait loses nothing)."""

    broker: InMemoryMessageBroker

    def __init__(self, broker: InMemoryMessageBroker, queue_name: str,
                 category: MessageCategory) -> None:
        super().__init__(broker, queue_name, category)
        self._finished = False

    async def finish(self) -> None:
        self._finished = True

    async def _next(self) -> Delivery:
        if self._finished:
            raise StopAsyncIteration
        queue = self.broker._queue(self.queue_name)
        message: StoredMessage | None = (await queue.simple.get())[2]
        if message is None:  # the queue was deleted while this consumer waited
            queue.simple.put_nowait((_GONE, next(_seq), None))  # for any other waiter
            raise QueueNotDeclaredError(self.queue_name)
        queue.processing[id(message)] = message
        return Delivery(self.broker, message.key, message.payload, message.params,
                        MessageCategory.NORMAL, message)


class _PartReader(Consumer):
    """Reads the delayed or dead messages of a queue, leaving them in place until the
    reader acks (deletes) or requeues (sends back) them.

    `stop_when_empty`: the messages there are at the first take, then the end. Otherwise
    (repid 1.x's behaviour) it looks again every `POLL_INTERVAL` for messages it has not
    yielded yet and waits until the caller stops iterating. Nothing is taken out of the
    queue, so a cancelled wait loses nothing. A message is known by its handle, which a
    requeue replaces: one sent back and dead-lettered again is yielded again.
    """

    broker: InMemoryMessageBroker

    #: seconds between two looks at a part with nothing new
    POLL_INTERVAL = 0.05

    def __init__(self, broker: InMemoryMessageBroker, queue_name: str,
                 category: MessageCategory, stop_when_empty: bool) -> None:
        super().__init__(broker, queue_name, category)
        self._stop_when_empty = stop_when_empty
        self._items: list[StoredMessage] | None = None
        self._seen: set[StoredMessage] = set()  # the messages yielded
        self._finished = False

    async def finish(self) -> None:
        self._finished = True

    def _part(self) -> list[StoredMessage]:
        queue = self.broker._queue(self.queue_name)
        return list(queue.dead if self.category is MessageCategory.DEAD
                    else queue.delayed.values())

    async def _next(self) -> Delivery:
        if self._items is None:
            self._items = self._part()
        while not self._finished:
            if self._items:
                message = self._items.pop(0)
                self._seen.add(message)
                key = message.key  # a copy: another reader may hand out the same message
                return Delivery(self.broker,
                                DeliveredKey(key.id_, key.topic, key.queue, key.priority),
                                message.payload, message.params, self.category, message)
            if self._stop_when_empty:
                break
            await asyncio.sleep(self.POLL_INTERVAL)
            part = self._part()
            # forget what left the part, so the set holds no more than the part does
            self._seen.intersection_update(part)
            self._items = [m for m in part if m not in self._seen]
        raise StopAsyncIteration



class InMemoryBucketBroker(BucketBroker):
    """Buckets in a dict, each dropped once its `ttl` has passed."""

    system = "in_memory"

    def __init__(self, use_result_bucket: bool = False) -> None:
        super().__init__(use_result_bucket)
        self.buckets: dict[str, tuple[BucketT, float | None]] = {}

    def __repr__(self) -> str:
        return f"InMemoryBucketBroker(use_result_bucket={self.use_result_bucket})"

    async def connect(self) -> None:
        """Nothing to connect to."""

    async def disconnect(self) -> None:
        """Nothing to disconnect from."""

    async def _get_bucket(self, id_: str) -> BucketT | None:
        entry = self.buckets.get(id_)
        if entry is None:
            return None
        bucket, expires = entry
        if expires is not None and time.monotonic() >= expires:
            del self.buckets[id_]
            return None
        return bucket

    async def _store_bucket(self, id_: str, payload: BucketT) -> None:
        ttl = payload.ttl
        self.buckets[id_] = (payload, None if ttl is None else time.monotonic()
                             + ttl.total_seconds())

    async def _delete_bucket(self, id_: str) -> None:
        self.buckets.pop(id_, None)
