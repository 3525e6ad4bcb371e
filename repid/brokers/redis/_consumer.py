"""The consumer of the Redis broker's NORMAL messages: `RedisConsumer` takes them under
leases (the DEAD and DELAYED parts are read by `part_reader.RedisPartReader`).

They reach the broker only through the `QueueOps` it gives them. Promises of
`repid.brokers.base` kept here (the numbers are those of `_broker.py`'s list):

2. At-least-once: the consumer extends the leases of all it holds every third of a lease
   (`RedisConsumer._heartbeat_loop`) until each is settled, so a long job keeps its
   message while its worker lives; a message leaves the extended set when its settle is
   attempted, so a settle that failed leaves it to run out its lease and come back.
3. Delays: an idle consumer blocks no longer than until the next ready time (at most a
   second, `queue_ops.block_time`), so neither a long delay nor an idle queue holds it.
7. Poison: TAKE's reply is read undecoded and each message decoded on its own
   (`_decode_entry`); one that fails, for any reason, is dead-lettered alone with the
   reason logged and stored, through the `repid_nack` hook (`Consumer.poison_nack`), the
   others are handed out, and the consumer goes on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from repid.brokers.base import Consumer, MessageBroker
from repid.brokers.delivery import Delivery
from repid.brokers.redis._background import cancel_requested, loop_closed
from repid.brokers.redis._batcher import Op
from repid.brokers.redis._client import CONNECTION_ERRORS
from repid.brokers.redis._codec import decode_stored, short_reason
from repid.brokers.redis._handle import RedisHandle
from repid.brokers.redis._queue_ops import QueueOps
from repid.data import MessageCategory
from repid.errors import PayloadDecodeError, QueueNotDeclaredError

logger = logging.getLogger("repid.brokers.redis")

#: most messages one TAKE moves at once
_MAX_TAKE = 500
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


class RedisConsumer(Consumer):
    """Takes messages of one queue in batches into a local buffer and hands them out.

    A background fetcher leases up to the consumer's free capacity (`max_unacked_messages`
    minus what it holds and buffers) in one TAKE; with no limit it takes only what waiting
    `__anext__` calls ask for. When nothing is ready it blocks on the queue's wake list,
    which enqueues push to, so a new message arrives at once.
    `__anext__` only waits for the buffer, so cancelling it never loses a message, and
    `finish()` puts the buffered messages back at the front of the queue in one script run.

    A second background task (`_heartbeat_loop`) extends, every third of the broker's
    `lease_time`, the leases of every message the consumer took and has not settled
    (`_leased`: buffered or handed out), in one script call. A message leaves `_leased`
    when its settle is attempted (`RedisHandle.release`), whatever the settle's outcome,
    so a settle that failed leaves the message to run out its lease and come back. The
    heartbeat outlives `finish()` while handed-out messages are still unsettled.
    """

    def __init__(self, broker: MessageBroker, ops: QueueOps,
                 max_unacked_messages: int | None) -> None:
        super().__init__(broker, ops.queue, MessageCategory.NORMAL)
        self._ops = ops
        self._limit = max_unacked_messages if max_unacked_messages else None
        self._buffer: deque[Delivery] = deque()
        self._held = 0
        self._leased: set[RedisHandle] = set()
        self._waiting = 0  # __anext__ calls waiting for the buffer
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._fetcher: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._finished = False
        self._paused = False  # see `pause`
        self._idle = asyncio.Event()  # no take in flight
        self._idle.set()
        self._interruptible = False
        #: raised by `__anext__` while the queue is not declared (the fetcher keeps checking)
        self._error: QueueNotDeclaredError | None = None

    async def start(self) -> None:
        """Start the background fetcher and the lease extender."""
        if self._fetcher is None and not self._finished:
            ops = self._ops
            ops.ensure_connected()
            ops.tasks.add_consumer(self)
            self._fetcher = asyncio.create_task(self._fetch_loop(),
                                                name=f"repid-redis-consumer-{self.queue_name}")
            if self._heartbeat is None:
                self._heartbeat = asyncio.create_task(
                    self._heartbeat_loop(), name=f"repid-redis-heartbeat-{self.queue_name}")
                ops.tasks.keep_heartbeat(self._heartbeat)

    async def finish(self) -> None:
        """Stop fetching; give the messages taken but not handed out back to the queue."""
        if self._finished and self._fetcher is None and not self._buffer:
            return
        self._finished = True
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            # cancel only while it blocks or sleeps: a TAKE interrupted mid-reply would
            # strand its messages until their leases end
            if self._interruptible:
                # redis-py may swallow a cancel that lands while BLPOP is being sent
                # (asyncio.wait_for on Python < 3.12), so cancel again while it blocks
                for _ in range(20):
                    fetcher.cancel()
                    await asyncio.wait({fetcher}, timeout=0.01)
                    if fetcher.done() or not self._interruptible:
                        break
                if not fetcher.done():
                    # it ends by itself after its current BLPOP (≤ 1 s), having taken
                    # nothing; the broker awaits it at disconnect
                    self._ops.tasks.keep_straggler(fetcher)
            else:
                await asyncio.wait({fetcher})
        self._ready.set()
        self._ops.tasks.discard_consumer(self)
        await self._give_back(len(self._buffer))

    async def pause(self) -> None:
        """Take nothing more, wait for a take in flight, and give the buffered messages
        back: once it returns, this consumer holds only what it handed out."""
        self._paused = True
        await self._idle.wait()
        await self._give_back(len(self._buffer))

    async def resume(self) -> None:
        """Take up to the free capacity again."""
        self._paused = False
        self._room.set()

    async def _give_back(self, count: int) -> None:
        """Return the last `count` buffered messages to the front of the queue, in their
        order, in one script run (a release: not counted as a delivery)."""
        ops: list[Op] = []
        for _ in range(min(count, len(self._buffer))):
            handle: RedisHandle = self._buffer.pop().handle
            handle.released = True
            self._leased.discard(handle)
            ops.append(("release", "inflight", handle.id_, handle.token))
        if not ops:
            return
        try:
            await self._ops.settle(ops)
        except CONNECTION_ERRORS as exc:
            logger.warning("could not return %d buffered messages to queue %r (%s); they "
                           "come back when their leases end", len(ops), self.queue_name, exc)

    def on_settled(self, handle: RedisHandle) -> None:
        """Called once by `handle.release()` when the message's settle is attempted."""
        self._leased.discard(handle)
        self._held = max(0, self._held - 1)
        self._room.set()

    def _free(self) -> int:
        """How many messages to take now: up to the free capacity, or, with no limit, as
        many as callers are waiting for (nothing is leased that nobody asked for)."""
        if self._paused:
            return 0
        if self._limit is None:
            return min(_MAX_TAKE, self._waiting - len(self._buffer))
        return min(_MAX_TAKE, self._limit - self._held - len(self._buffer))

    async def _next(self) -> Delivery:
        if self._fetcher is None and not self._finished:
            await self.start()
        while True:
            if self._buffer:
                message = self._buffer.popleft()
                self._held += 1
                return message
            if self._finished:
                raise StopAsyncIteration
            if self._error is not None:
                # reported once per failed take; the next call waits for the next take
                error, self._error = self._error, None
                raise error
            self._ready.clear()
            self._waiting += 1
            if self._limit is None:
                self._room.set()
            try:
                await self._ready.wait()
            finally:
                self._waiting -= 1

    async def _fetch_loop(self) -> None:
        """Keep the buffer filled up to the free capacity; survive connection loss and lost
        state, reporting through `report_problem` while no take works."""
        ops = self._ops
        backoff = _BACKOFF_MIN
        while not self._finished:
            if cancel_requested():
                raise asyncio.CancelledError
            try:
                free = self._free()
                if free <= 0:
                    self._room.clear()
                    await self._interruptibly(self._room.wait())
                    continue
                self._idle.clear()  # a take in flight: `pause` waits for its messages
                try:
                    next_due, now, taken = await ops.take(free)
                except QueueNotDeclaredError as exc:
                    # like the other brokers, consuming an undeclared queue raises; keep
                    # checking so a later declaration (the worker's, after Redis lost its
                    # data) is picked up
                    self.report_problem(
                        f"queue {self.queue_name!r} is not declared in Redis (never declared, "
                        "or Redis lost its data): declare it again")
                    self._error = exc
                    self._ready.set()
                    next_due, now, taken = -1, 0, []
                else:
                    self._error = None
                    self.report_problem(None)
                backoff = _BACKOFF_MIN
                if taken:
                    try:
                        await self._accept(taken)
                    finally:
                        self._idle.set()
                    continue
                self._idle.set()
                await self._interruptibly(ops.wait_for_work(next_due, now))
            except asyncio.CancelledError:
                self._idle.set()
                raise
            except Exception as exc:
                self._idle.set()
                if loop_closed():
                    return
                if isinstance(exc, CONNECTION_ERRORS):
                    self.report_problem(f"Redis unreachable: {exc}")
                    logger.warning("consumer of queue %r: Redis unreachable (%s); retrying "
                                   "in %.2f s", self.queue_name, exc, backoff)
                else:
                    self.report_problem(f"taking messages from Redis fails: {exc!r}")
                    logger.exception("consumer of queue %r failed; retrying in %.2f s",
                                     self.queue_name, backoff)
                await self._interruptibly(asyncio.sleep(backoff))
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _heartbeat_loop(self) -> None:
        """Every third of a lease, extend the leases of all messages taken and not settled;
        ends once the consumer is finished and holds nothing."""
        ops = self._ops
        interval = ops.heartbeat_interval
        failing = False
        while not (self._finished and not self._leased) and not cancel_requested():
            await asyncio.sleep(interval)
            if not self._leased:
                continue
            try:
                await ops.extend(list(self._leased))
                if failing:
                    logger.info("leases of queue %r are extended again", self.queue_name)
                failing = False
            except Exception as exc:
                if loop_closed():
                    return
                if not failing:
                    logger.warning("could not extend the leases of %d messages of queue %r "
                                   "(%r); trying again in %.1f s", len(self._leased),
                                   self.queue_name, exc, interval)
                failing = True

    async def _interruptibly(self, awaitable: Awaitable[Any]) -> None:
        """Await something `finish()` may cancel (nothing is taken while it runs)."""
        if self._finished:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            return
        self._interruptible = True
        try:
            await awaitable
        finally:
            self._interruptible = False

    async def _accept(self, taken: list[bytes]) -> None:
        """Buffer the decodable messages at once; then dead-letter the others, each with
        its reason logged and stored, through the `repid_nack` hook (any exception while
        decoding one makes it poison)."""
        poison: list[Poison] = []
        for entry in taken:
            message, failure = _decode_entry(entry, self)
            if message is not None:
                self._leased.add(message.handle)
                self._buffer.append(message)
            elif failure is not None:
                poison.append(failure)
        if self._buffer:
            self._ready.set()
        for id_, reason, op in poison:
            await self.poison_nack(id_, reason, functools.partial(self._settle_poison, op))
        if self._paused:  # taken while the worker paused this consumer: hold nothing
            await self._give_back(len(self._buffer))

    async def _settle_poison(self, op: Op) -> None:
        await self._ops.settle([op])


#: a message that cannot be decoded: its id (as text), why, and the nack that dead-letters it
Poison = tuple[str, str, Op]


def _decode_entry(entry: bytes,
                  consumer: RedisConsumer) -> tuple[Delivery | None, Poison | None]:
    """One message of TAKE's reply (`token LF returns LF id LF body`): its delivery, or
    what dead-letters it with the reason when it cannot be decoded."""
    token_b, returns_b, id_b, body = entry.split(b"\n", 3)
    token = token_b.decode()
    queue = consumer.queue_name
    try:
        id_ = id_b.decode()
    except UnicodeDecodeError as exc:
        reason = f"the message id is not UTF-8: {short_reason(exc)}"
        logger.error("message %r in queue %r cannot be decoded (%s); moved to the dead-letter "
                     "list", id_b, queue, reason)
        return None, (id_b.decode(errors="replace"), reason,
                      ("nack", "inflight", id_b, token, reason))
    try:
        key, payload, params = decode_stored(body)
        # delivered once more than its leases that ran out (TAKE returns how many did)
        returns = int(returns_b)
        handle = RedisHandle(queue, id_, "inflight", token, consumer, returns)
        return Delivery(consumer.broker, key, payload, params, MessageCategory.NORMAL,
                        handle, returns + 1), None
    except PayloadDecodeError as exc:
        reason = f"the stored message cannot be decoded: {exc}"
        logger.error("message %r in queue %r cannot be decoded (%s); moved to the dead-letter "
                     "list", id_, queue, reason)
        return None, (id_, reason, ("nack", "inflight", id_, token, reason))
