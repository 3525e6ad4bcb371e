"""RedisMessageBroker: durable queues in Redis, each state change of a message one Lua script.

How each promise of `repid.brokers.base` is kept (the design is in docs/brokers/redis.md):

1. Confirmed enqueue: `_enqueue` returns only after the ENQUEUE script replied; a lost
   connection raises `EnqueueNotConfirmedError`, an undeclared queue (checked inside the
   script) `QueueNotDeclaredError`.
2. At-least-once: TAKE puts each message under a short lease (`lease_time`) in the queue's
   in-flight set; the consumer extends the leases of all it holds every third of a lease
   (`RedisConsumer._heartbeat_loop`) until each is settled, so a long job keeps its
   message while its worker lives. A settle removes it only if the lease is still the
   consumer's. Every live broker returns expired leases to the queue once a second
   (`_maintain_loop`), so a killed worker's messages run again within about a lease.
3. Delays: a delayed message waits in a sorted set scored by its ready time; TAKE and the
   maintenance loop promote it when due, and idle consumers block no longer than until the
   next ready time (at most a second), so neither a long delay nor an idle queue holds it.
4. Priorities: one ready list per priority; TAKE serves the highest, with the
   anti-starvation rule written at `scripts.TAKE`.
5. Headers: the parameters are stored whole in the message body, and replaced whole by
   `requeue`; nothing else rewrites them.
6. Dead letters: `nack` moves the id to the queue's dead list and its reason to the
   `reasons` hash; a DEAD consumer reads both (the reason in `DEAD_REASON_HEADER`), and
   `requeue` / `ack` of what it read moves it back / deletes it.
7. Poison: TAKE's reply is read undecoded and each message decoded on its own
   (`_decode_entry`); one that fails, for any reason, is dead-lettered alone with the
   reason logged and stored, the others are handed out, and the consumer goes on.
8. Deliveries counted: the scripts count per message the leases that ran out
   (`deliveries` hash); TAKE returns that count, and `delivery_count` is one more.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis

from repid.brokers.base import (
    DEAD_REASON_HEADER,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_SIZE,
    Consumer,
    Message,
    MessageBroker,
)
from repid.brokers.dsn import mask_dsn
from repid.brokers.redis import scripts
from repid.brokers.redis._client import CONNECTION_ERRORS, ClientSettings, HeldConnection
from repid.brokers.redis.codec import (
    decode_stored,
    encode_body,
    list_priority,
    ready_ms,
    short_reason,
)
from repid.data import MessageCategory, Parameters, RoutingKey
from repid.errors import (
    BrokerConnectionError,
    EnqueueNotConfirmedError,
    PayloadDecodeError,
    QueueNotDeclaredError,
)

logger = logging.getLogger("repid.brokers.redis")

_ENQUEUE = scripts.Script("enqueue", scripts.ENQUEUE)
_TAKE = scripts.Script("take", scripts.TAKE)
_SETTLE = scripts.Script("settle", scripts.SETTLE)
_MAINTAIN = scripts.Script("maintain", scripts.MAINTAIN)
_STATS = scripts.Script("stats", scripts.STATS)
_EXTEND = scripts.Script("extend", scripts.EXTEND)

# indexes into the key list of a queue (see scripts.QUEUE_KEY_NAMES)
(_MSGS, _READY0, _READY1, _READY2, _DELAYED, _WAKE, _QUEUES, _INFLIGHT, _LEASES, _DEAD,
 _STATE, _REASONS, _DELIVERIES) = range(13)

#: most messages one TAKE moves at once
_MAX_TAKE = 500
#: most settle operations one script call carries (a single submission is never split)
_MAX_OPS = 2000
#: most messages, and characters of their bodies, one ENQUEUE call carries, so that one
#: script run never holds Redis for more than a few milliseconds (a single submission is
#: never split; `enqueue_many` submits in chunks of this size)
_MAX_ENQUEUE_OPS = 500
_MAX_ENQUEUE_CHARS = 1 << 20
#: how long an idle consumer blocks at most, so delays and leases are checked each second
_MAX_BLOCK = 1.0
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0

#: an operation of the ENQUEUE script (id, body, ready ms) or of SETTLE (action,
#: where, id, token, and for a nack the reason, for a requeue body, priority, ready ms);
#: an id that is not UTF-8 stays bytes
Op = tuple[str | bytes, ...]


@dataclass(slots=True, eq=False)
class RedisHandle:
    """The broker's reference to a message it delivered: where it is held, under which lease."""

    queue: str
    id_: str
    #: "inflight" (taken by a NORMAL consumer), "dead" or "delayed" (read by a snapshot)
    where: str
    #: the lease token TAKE issued; a settle with a stale token is refused ("" = no lease)
    token: str
    consumer: RedisConsumer | None = None
    #: how many of the message's leases ran out before this delivery
    returns: int = 0
    released: bool = False

    def release(self) -> None:
        """Give the consumer its capacity back and stop extending the lease, once, whatever
        the settle's outcome."""
        if not self.released:
            self.released = True
            if self.consumer is not None:
                self.consumer._on_settled(self)

    def __repr__(self) -> str:
        return f"RedisHandle({self.queue!r}, {self.id_!r}, {self.where})"


class _Batcher:
    """Coalesces concurrent calls of one script into one round trip per queue (group commit).

    A call made while no other is in flight is sent at once, on its own. Calls made while
    one is in flight wait and then go together, one script run per queue, of at most
    `max_ops` operations and `max_chars` characters of arguments (a single call is never
    split). Each caller still waits for Redis's reply to its own operations, so nothing is
    confirmed early, and every waiting caller gets a result or an exception, even when
    the drain itself fails.
    """

    __slots__ = ("_busy", "_max_chars", "_max_ops", "_pending", "_run", "_task")

    def __init__(self, run: Callable[[str, list[Op]], Awaitable[list[bool]]], *,
                 max_ops: int, max_chars: int | None = None) -> None:
        self._run = run
        self._max_ops = max_ops
        self._max_chars = max_chars
        self._pending: list[tuple[str, list[Op], asyncio.Future[list[bool]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def submit(self, queue: str, ops: list[Op]) -> list[bool]:
        """Run `ops` (kept together in one script call) and return their results."""
        if not self._busy:
            self._busy = True
            try:
                return await self._run(queue, ops)
            finally:
                self._busy = False
                if self._pending:
                    self._start_drain()
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((queue, ops, future))
        return await future

    async def idle(self) -> None:
        """Wait until every submitted operation has been sent and answered."""
        while self._task is not None:
            await asyncio.wait({self._task})

    def _start_drain(self) -> None:
        self._busy = True
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        batch: list[tuple[str, list[Op], asyncio.Future[list[bool]]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                groups: dict[str, list[tuple[str, list[Op], asyncio.Future[list[bool]]]]] = {}
                for item in batch:
                    groups.setdefault(item[0], []).append(item)
                await asyncio.gather(*(self._flush(q, items) for q, items in groups.items()))
        except BaseException as exc:
            # nobody may wait for ever: fail whatever this drain still owed an answer
            for _, _, future in [*batch, *self._pending]:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            self._pending = []
            raise
        finally:
            self._task = None
            self._busy = False

    async def _flush(self, queue: str,
                     items: list[tuple[str, list[Op], asyncio.Future[list[bool]]]]) -> None:
        chunk: list[tuple[str, list[Op], asyncio.Future[list[bool]]]] = []
        size = chars = 0
        max_chars = self._max_chars
        for item in items:
            item_chars = 0 if max_chars is None else sum(len(f) for op in item[1] for f in op)
            if chunk and (size + len(item[1]) > self._max_ops
                          or (max_chars is not None and chars + item_chars > max_chars)):
                await self._send(queue, chunk)
                chunk, size, chars = [], 0, 0
            chunk.append(item)
            size += len(item[1])
            chars += item_chars
        if chunk:
            await self._send(queue, chunk)

    async def _send(self, queue: str,
                    chunk: list[tuple[str, list[Op], asyncio.Future[list[bool]]]]) -> None:
        try:
            results = await self._run(queue, [op for _, ops, _ in chunk for op in ops])
        except Exception as exc:
            for _, _, future in chunk:
                if not future.done():
                    future.set_exception(exc)
            return
        pos = 0
        for _, ops, future in chunk:
            if not future.done():
                future.set_result(results[pos:pos + len(ops)])
            pos += len(ops)


class RedisMessageBroker(MessageBroker):
    """Queues in Redis (redis-py asyncio): leases, delays, priorities, dead letters.

    `lease_time` is how long a taken message stays leased without news from its consumer,
    which extends the lease every third of it while the message is held: a worker that dies
    mid-job has its messages delivered again within about `lease_time` (plus up to a
    second), and a live one keeps them however long its jobs run (the extender runs on the
    event loop: an async actor that blocks the loop for longer than a lease loses its
    message to another worker; sync actors run in threads and do not).

    `max_deliveries` is read by the worker (see `MessageBroker.max_deliveries`);
    `max_message_size` bounds a payload (see `MessageBroker.max_message_size`).
    `starvation_limit` is K of the anti-starvation rule (see `scripts.TAKE`). `retries`,
    `socket_timeout` and `socket_connect_timeout` tune redis-py's reconnects;
    `max_connections` (default 256) and `pool_timeout` (default 30 s) size the connection
    pool commands wait on (see `_client.make_client`); any other keyword goes to redis-py's
    connection pool.
    """

    system = "redis"

    def __init__(
        self,
        dsn: str,
        *,
        prefix: str = "repid",
        lease_time: timedelta = timedelta(seconds=20),
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        starvation_limit: int = 10,
        maintenance_interval: float = 1.0,
        retries: int = 5,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 5.0,
        client_name: str | None = "repid",
        **redis_options: Any,
    ) -> None:
        self._dsn = dsn
        self.prefix = prefix
        if lease_time.total_seconds() < 0.03:
            raise ValueError(f"lease_time is {lease_time}; give at least 30 ms (the default, "
                             "20 s, suits most workers)")
        self.lease_time = lease_time
        self._lease_ms = int(lease_time.total_seconds() * 1000)
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries is {max_deliveries}; give 1 or more")
        self.max_deliveries = max_deliveries
        self.max_message_size = max_message_size
        self.starvation_limit = max(1, starvation_limit)
        self.maintenance_interval = maintenance_interval
        self._settings = ClientSettings(dsn, retries, socket_timeout, socket_connect_timeout,
                                        client_name, redis_options)
        self._client: Redis | None = None
        #: the connection enqueues go through (see HeldConnection)
        self._producer: HeldConnection | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._enqueuer = _Batcher(self._run_enqueue, max_ops=_MAX_ENQUEUE_OPS,
                                  max_chars=_MAX_ENQUEUE_CHARS)
        self._settler = _Batcher(self._run_settle, max_ops=_MAX_OPS)
        self._queue_keys: dict[str, list[str]] = {}
        self._queues_key = f"{prefix}:queues"
        self._consumers: weakref.WeakSet[RedisConsumer] = weakref.WeakSet()
        #: fetchers of finished consumers still ending their last BLPOP
        self._stragglers: set[asyncio.Task[None]] = set()
        #: lease extenders of consumers (they outlive `finish` while jobs still run)
        self._heartbeats: set[asyncio.Task[None]] = set()
        self._stopping = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dsn={mask_dsn(self._dsn)!r})"

    # --- connection ---

    async def connect(self) -> None:
        """Open the client, check Redis answers, start returning expired leases."""
        if self._client is not None:
            return
        self._client = await self._settings.open()
        self._producer = HeldConnection(self._client)
        self._stopping = False
        self._maintainer = asyncio.create_task(self._maintain_loop(),
                                               name="repid-redis-maintenance")

    async def disconnect(self) -> None:
        """Finish live consumers (their unhanded messages go back), then close the client."""
        if self._client is None:
            return
        for consumer in list(self._consumers):
            await consumer.finish()
        self._stopping = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.wait({self._maintainer})
            self._maintainer = None
        if self._stragglers:
            await asyncio.wait(set(self._stragglers))
        for heartbeat in list(self._heartbeats):
            heartbeat.cancel()
        if self._heartbeats:
            await asyncio.wait(set(self._heartbeats), timeout=5)
        await self._enqueuer.idle()
        await self._settler.idle()
        client, self._client = self._client, None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.release()
        await client.aclose()

    def _redis(self) -> Redis:
        if self._client is None:
            raise self._not_connected()
        return self._client

    def _not_connected(self) -> BrokerConnectionError:
        return BrokerConnectionError(
            f"{self!r} is not connected; call `await connection.connect()` first")

    def _keys(self, queue: str) -> list[str]:
        """The keys of a queue in the order the scripts expect (the declared set included)."""
        keys = self._queue_keys.get(queue)
        if keys is None:
            # the hash tag keeps one queue's keys in one cluster slot
            base = f"{self.prefix}:{{{queue}}}:"
            keys = [self._queues_key if name == "queues" else base + name
                    for name in scripts.QUEUE_KEY_NAMES]
            self._queue_keys[queue] = keys
        return keys

    def _own_keys(self, queue: str) -> list[str]:
        """The keys holding the queue's messages (all but the global declared set)."""
        return [k for i, k in enumerate(self._keys(queue)) if i != _QUEUES]

    # --- the scripts ---

    async def _run_enqueue(self, queue: str, ops: list[Op]) -> list[bool]:
        args: list[str | bytes] = [queue]
        for op in ops:
            args.extend(op)
        producer = self._producer
        if producer is None:
            raise self._not_connected()
        result = await _ENQUEUE(producer, self._keys(queue)[:scripts.ENQUEUE_KEYS], args)
        if result == -1:
            raise QueueNotDeclaredError(queue)
        return [c == "1" for c in result]

    async def _run_settle(self, queue: str, ops: list[Op]) -> list[bool]:
        args: list[str | bytes] = []
        for op in ops:
            args.extend(op)
        result = await _SETTLE(self._redis(), self._keys(queue), args)
        return [c == "1" for c in result]

    async def _extend(self, queue: str, handles: list[RedisHandle]) -> int:
        """Move the leases of `handles` (still held under their tokens) to now + lease_time;
        how many were extended."""
        extended = 0
        for start in range(0, len(handles), _MAX_OPS):
            args: list[str | int] = [self._lease_ms]
            for handle in handles[start:start + _MAX_OPS]:
                args.append(handle.id_)
                args.append(handle.token)
            extended += int(await _EXTEND(self._redis(), self._keys(queue), args))
        return extended

    async def _take(self, queue: str, count: int) -> tuple[int, int, list[bytes]]:
        """Lease up to `count` ready messages: (next delayed time ms, server now ms,
        [`token LF returns LF id LF body` per message, undecoded]); QueueNotDeclaredError if
        it is not declared."""
        result = await _TAKE(self._redis(), self._keys(queue), [
            queue, count, self._lease_ms, self.starvation_limit], raw=True)
        if not result[3]:
            raise QueueNotDeclaredError(queue)
        if result[2]:
            logger.error("%d messages of queue %r have ids with a line break, which repid "
                         "never writes; moved to the dead-letter list", result[2], queue)
        return int(result[0]), int(result[1]), result[4:]

    async def _settle_ops(self, queue: str, ops: list[Op]) -> list[bool]:
        """Settle operations of one queue, in one atomic script run."""
        return await self._settler.submit(queue, ops)

    # --- the broker calls ---

    async def _enqueue(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        op = (key.id_, encode_body(key, payload, params), ready_ms(params))
        try:
            stored = await self._enqueuer.submit(key.queue, [op])
        except CONNECTION_ERRORS as exc:
            raise EnqueueNotConfirmedError(
                f"Redis did not confirm the message {key.id_!r} for queue {key.queue!r}: "
                f"{exc}") from exc
        if not stored[0]:
            logger.debug("message %r is already in queue %r; not enqueued again",
                         key.id_, key.queue)

    async def enqueue_many(self, messages: Iterable[Message]) -> None:
        """Store many messages; with no plugin around enqueue, in script runs of at most
        `_MAX_ENQUEUE_OPS` messages and `_MAX_ENQUEUE_CHARS` characters of bodies each
        (so none holds Redis for long), all sent at once."""
        if self.is_hooked("enqueue"):
            await super().enqueue_many(messages)
            return
        chunks: list[tuple[str, list[Op]]] = []
        open_chunks: dict[str, tuple[list[Op], list[int]]] = {}
        limit = self.max_message_size
        for key, payload, params in messages:
            if len(payload) > limit >> 2:  # a character is 1 to 4 bytes
                self.check_size(key, payload)
            body = encode_body(key, payload, params)
            ops, chars = open_chunks.get(key.queue) or ([], [0])
            if ops and (len(ops) >= _MAX_ENQUEUE_OPS
                        or chars[0] + len(body) > _MAX_ENQUEUE_CHARS):
                ops, chars = [], [0]
            if not ops:
                open_chunks[key.queue] = (ops, chars)
                chunks.append((key.queue, ops))
            ops.append((key.id_, body, ready_ms(params)))
            chars[0] += len(body)
        try:
            await asyncio.gather(*(self._enqueuer.submit(q, ops) for q, ops in chunks))
        except CONNECTION_ERRORS as exc:
            raise EnqueueNotConfirmedError(
                f"Redis did not confirm a batch of messages: {exc}") from exc

    async def _settle(self, action: str, key: RoutingKey,
                      extra: Callable[[], Op] | None = None) -> None:
        """Run one settle action on a consumed message (`extra()` gives the arguments that
        follow the lease token) and free its consumer's capacity whatever happens: the
        release is in a `finally`, so a settle that fails in any way, even while its
        arguments are built, never leaves the consumer short of room."""
        handle = key.handle if isinstance(key.handle, RedisHandle) else None
        try:
            op: Op
            if handle is None:
                # a key that was not consumed here: act on the message by id, whatever lease
                queue, op = key.queue, (action, "inflight", key.id_, "")
            else:
                queue = handle.queue
                op = (action, handle.where, handle.id_, handle.token)
            if extra is not None:
                op += extra()
            try:
                done = await self._settler.submit(queue, [op])
            except CONNECTION_ERRORS as exc:
                raise BrokerConnectionError(
                    f"Redis did not confirm {action} of message {key.id_!r} in queue "
                    f"{queue!r} (an unsettled message is delivered again once its lease "
                    f"ends): {exc}",
                ) from exc
        finally:
            if handle is not None:
                handle.release()
        if not done[0]:
            logger.warning(
                "%s of message %r in queue %r had no effect: it is no longer held by this "
                "consumer (its lease ran out and it went back to the queue, or the queue was "
                "flushed)", action, key.id_, queue)

    async def _ack(self, key: RoutingKey) -> None:
        await self._settle("ack", key)

    async def _nack(self, key: RoutingKey, reason: str | None = None) -> None:
        await self._settle("nack", key, lambda: (reason or "",))

    async def _reject(self, key: RoutingKey) -> None:
        await self._settle("reject", key)

    async def _requeue(self, key: RoutingKey, payload: str, params: Parameters,
                       reason: str | None = None) -> None:
        await self._settle("requeue", key, lambda: (
            encode_body(key, payload, params), str(list_priority(key.priority)),
            ready_ms(params)))

    def delivery_count(self, key: RoutingKey) -> int:
        """How many times the message was delivered, this time included: one more than the
        number of its leases that ran out (returned by TAKE with the message)."""
        handle = key.handle
        return handle.returns + 1 if isinstance(handle, RedisHandle) else 1

    async def _queue_declare(self, queue_name: str) -> None:
        try:
            await self._redis().sadd(self._queues_key, queue_name)
        except CONNECTION_ERRORS as exc:
            raise BrokerConnectionError(f"cannot declare queue {queue_name!r}: {exc}") from exc

    async def _queue_flush(self, queue_name: str) -> None:
        try:
            # UNLINK frees the memory in the background: a big queue never blocks Redis
            await self._redis().unlink(*self._own_keys(queue_name))
        except CONNECTION_ERRORS as exc:
            raise BrokerConnectionError(f"cannot flush queue {queue_name!r}: {exc}") from exc

    async def _queue_delete(self, queue_name: str) -> None:
        try:
            async with self._redis().pipeline(transaction=True) as pipe:
                pipe.unlink(*self._own_keys(queue_name))
                pipe.srem(self._queues_key, queue_name)
                await pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise BrokerConnectionError(f"cannot delete queue {queue_name!r}: {exc}") from exc
        self._queue_keys.pop(queue_name, None)

    def _consumer(
        self,
        queue_name: str,
        topics: frozenset[str] | None,
        max_unacked_messages: int | None,
        category: MessageCategory,
    ) -> Consumer:
        if category is MessageCategory.NORMAL:
            return RedisConsumer(self, queue_name, max_unacked_messages)
        return RedisSnapshotConsumer(self, queue_name, category)

    async def queue_stats(self, queue_name: str) -> dict[str, int]:
        """Counts of the queue's messages: ready, delayed, in_flight (leased), dead; a due
        delayed message or an expired lease is counted as ready."""
        try:
            ready, delayed, in_flight, dead = await _STATS(self._redis(),
                                                           self._keys(queue_name), [])
        except CONNECTION_ERRORS as exc:
            raise BrokerConnectionError(
                f"cannot read the counts of queue {queue_name!r}: {exc}") from exc
        return {"ready": ready, "delayed": delayed, "in_flight": in_flight, "dead": dead}

    # --- background work ---

    async def _maintain_loop(self) -> None:
        """Every second, promote due delayed messages and return expired leases of every
        declared queue (promise 2 holds even when no consumer of the queue is idle)."""
        failing = False
        while not self._stopping and not _cancel_requested():
            await asyncio.sleep(self.maintenance_interval * random.uniform(0.8, 1.0))
            try:
                client = self._redis()
                for queue in await client.smembers(self._queues_key):
                    moved = await _MAINTAIN(client, self._keys(_text(queue)), [])
                    if moved:
                        logger.debug("queue %r: %d delayed or expired messages made ready",
                                     queue, moved)
                if failing:
                    logger.info("Redis maintenance of %r resumed", self)
                failing = False
            except Exception as exc:
                if _loop_closed():
                    return
                if not isinstance(exc, CONNECTION_ERRORS):
                    logger.exception("Redis maintenance of %r failed; trying again", self)
                elif not failing:
                    logger.warning("Redis maintenance of %r paused, Redis unreachable: %s",
                                   self, exc)
                    failing = True


def _cancel_requested() -> bool:
    """True when the current task was asked to cancel: redis-py can swallow a cancellation
    that lands while it sends a command (asyncio.wait_for on Python < 3.12), so the
    background loops check before each round instead of relying on it alone."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is not None and cancelling() > 0


def _loop_closed() -> bool:
    """True when the event loop is gone: a background task being torn down with it (its
    broker was never disconnected) must end quietly instead of retrying."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def _text(value: Any) -> str:
    """A reply as text (the client decodes replies; this only narrows the type)."""
    return value if isinstance(value, str) else bytes(value).decode()


def _block_time(next_due: int, now: int, socket_timeout: float | None) -> float:
    """How long an idle consumer blocks: until the next delayed message is due, at most 1 s."""
    wait = _MAX_BLOCK if next_due < 0 else min(_MAX_BLOCK, (next_due - now) / 1000)
    if socket_timeout:
        wait = min(wait, socket_timeout / 2)
    return max(0.01, wait)


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

    def __init__(self, broker: RedisMessageBroker, queue_name: str,
                 max_unacked_messages: int | None) -> None:
        super().__init__(broker, queue_name, MessageCategory.NORMAL)
        self._broker = broker
        self._limit = max_unacked_messages if max_unacked_messages else None
        self._buffer: deque[Message] = deque()
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
            broker = self._broker
            broker._redis()
            broker._consumers.add(self)
            self._fetcher = asyncio.create_task(self._fetch_loop(),
                                                name=f"repid-redis-consumer-{self.queue_name}")
            if self._heartbeat is None:
                self._heartbeat = asyncio.create_task(
                    self._heartbeat_loop(), name=f"repid-redis-heartbeat-{self.queue_name}")
                broker._heartbeats.add(self._heartbeat)
                self._heartbeat.add_done_callback(broker._heartbeats.discard)

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
                    self._broker._stragglers.add(fetcher)
                    fetcher.add_done_callback(self._broker._stragglers.discard)
            else:
                await asyncio.wait({fetcher})
        self._ready.set()
        self._broker._consumers.discard(self)
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
            key = self._buffer.pop()
            handle = key[0].handle
            assert isinstance(handle, RedisHandle)
            handle.released = True
            self._leased.discard(handle)
            ops.append(("release", "inflight", handle.id_, handle.token))
        if not ops:
            return
        try:
            await self._broker._settle_ops(self.queue_name, ops)
        except CONNECTION_ERRORS as exc:
            logger.warning("could not return %d buffered messages to queue %r (%s); they "
                           "come back when their leases end", len(ops), self.queue_name, exc)

    def _on_settled(self, handle: RedisHandle) -> None:
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

    async def _next(self) -> Message:
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
        broker = self._broker
        wake_key = broker._keys(self.queue_name)[_WAKE]
        backoff = _BACKOFF_MIN
        while not self._finished:
            if _cancel_requested():
                raise asyncio.CancelledError
            try:
                free = self._free()
                if free <= 0:
                    self._room.clear()
                    await self._interruptibly(self._room.wait())
                    continue
                self._idle.clear()  # a take in flight: `pause` waits for its messages
                try:
                    next_due, now, taken = await broker._take(self.queue_name, free)
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
                wait = _block_time(next_due, now, broker._settings.socket_timeout)
                await self._interruptibly(broker._redis().blpop([wake_key], timeout=wait))
            except asyncio.CancelledError:
                self._idle.set()
                raise
            except Exception as exc:
                self._idle.set()
                if _loop_closed():
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
        broker = self._broker
        interval = broker.lease_time.total_seconds() / 3
        failing = False
        while not (self._finished and not self._leased) and not _cancel_requested():
            await asyncio.sleep(interval)
            if not self._leased:
                continue
            try:
                await broker._extend(self.queue_name, list(self._leased))
                if failing:
                    logger.info("leases of queue %r are extended again", self.queue_name)
                failing = False
            except Exception as exc:
                if _loop_closed():
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
        its reason logged and stored (any exception while decoding one makes it poison)."""
        poison: list[Op] = []
        for entry in taken:
            message, failure = _decode_entry(entry, self)
            if message is not None:
                handle = message[0].handle
                assert isinstance(handle, RedisHandle)
                self._leased.add(handle)
                self._buffer.append(message)
            elif failure is not None:
                poison.append(failure)
        if self._buffer:
            self._ready.set()
        if poison:
            await self._broker._settle_ops(self.queue_name, poison)
        if self._paused:  # taken while the worker paused this consumer: hold nothing
            await self._give_back(len(self._buffer))


def _decode_entry(entry: bytes, consumer: RedisConsumer) -> tuple[Message | None, Op | None]:
    """One message of TAKE's reply (`token LF returns LF id LF body`): the message, or the
    nack that dead-letters it with the reason when it cannot be decoded."""
    token_b, returns_b, id_b, body = entry.split(b"\n", 3)
    token = token_b.decode()
    queue = consumer.queue_name
    try:
        id_ = id_b.decode()
    except UnicodeDecodeError as exc:
        reason = f"the message id is not UTF-8: {short_reason(exc)}"
        logger.error("message %r in queue %r cannot be decoded (%s); moved to the dead-letter "
                     "list", id_b, queue, reason)
        return None, ("nack", "inflight", id_b, token, reason)
    handle = RedisHandle(queue, id_, "inflight", token, consumer, int(returns_b))
    try:
        return decode_stored(body, handle), None
    except PayloadDecodeError as exc:
        reason = f"the stored message cannot be decoded: {exc}"
        logger.error("message %r in queue %r cannot be decoded (%s); moved to the dead-letter "
                     "list", id_, queue, reason)
        return None, ("nack", "inflight", id_, token, reason)


class RedisSnapshotConsumer(Consumer):
    """Reads the dead or delayed messages of a queue as they were at the first take, then ends.

    What it yields stays where it is until settled: `ack` deletes it, `requeue` moves it to
    the queue (ready at the new parameters' time), `nack` (of a delayed message) dead-letters
    it, `reject` leaves it. A dead message carries the reason it was dead-lettered, if one
    was given, in `params.headers[DEAD_REASON_HEADER]`. Everything is read undecoded and
    decoded per message: a dead message that cannot be decoded is skipped with an error
    logged (it stays in the dead list), a delayed one is dead-lettered with the reason.
    """

    _CHUNK = 100

    def __init__(self, broker: RedisMessageBroker, queue_name: str,
                 category: MessageCategory) -> None:
        super().__init__(broker, queue_name, category)
        self._broker = broker
        self._where = "dead" if category is MessageCategory.DEAD else "delayed"
        self._ids: deque[bytes] | None = None
        self._messages: deque[Message] = deque()

    async def finish(self) -> None:
        """Stop reading."""
        self._ids = deque()
        self._messages.clear()

    async def _next(self) -> Message:
        try:
            return await self._read()
        except CONNECTION_ERRORS as exc:
            raise BrokerConnectionError(
                f"cannot read the {self._where} messages of queue {self.queue_name!r}: {exc}",
            ) from exc

    async def _read(self) -> Message:
        client = self._broker._redis()
        keys = self._broker._keys(self.queue_name)
        if self._ids is None:
            if not await client.sismember(self._broker._queues_key, self.queue_name):
                raise QueueNotDeclaredError(self.queue_name)
            ids: list[bytes]
            if self._where == "dead":
                ids = await client.execute_command(  # type: ignore[no-untyped-call]
                    "LRANGE", keys[_DEAD], 0, -1, **scripts.UNDECODED)
            else:
                ids = await client.execute_command(  # type: ignore[no-untyped-call]
                    "ZRANGE", keys[_DELAYED], 0, -1, **scripts.UNDECODED)
            self._ids = deque(ids)
        while not self._messages:
            if not self._ids:
                raise StopAsyncIteration
            chunk = [self._ids.popleft() for _ in range(min(self._CHUNK, len(self._ids)))]
            bodies = await client.execute_command(  # type: ignore[no-untyped-call]
                "HMGET", keys[_MSGS], *chunk, **scripts.UNDECODED)
            reasons: list[bytes | None] = [None] * len(chunk)
            if self._where == "dead":
                reasons = await client.execute_command(  # type: ignore[no-untyped-call]
                    "HMGET", keys[_REASONS], *chunk, **scripts.UNDECODED)
            poison: list[Op] = []
            for id_b, body, reason in zip(chunk, bodies, reasons, strict=True):
                if body is None:
                    continue  # settled since the snapshot was taken
                try:
                    id_ = id_b.decode()
                    handle = RedisHandle(self.queue_name, id_, self._where, "")
                    message = decode_stored(body, handle)
                    if reason is not None:
                        message[2].headers[DEAD_REASON_HEADER] = reason.decode(errors="replace")
                except Exception as exc:
                    why = ("the stored message cannot be decoded: "
                           f"{exc if isinstance(exc, PayloadDecodeError) else short_reason(exc)}")
                    if self._where == "dead":
                        logger.error("dead message %r in queue %r cannot be decoded (%s); "
                                     "skipped, it stays in the dead-letter list", id_b,
                                     self.queue_name, why)
                    else:
                        logger.error("delayed message %r in queue %r cannot be decoded (%s); "
                                     "moved to the dead-letter list", id_b, self.queue_name,
                                     why)
                        poison.append(("nack", "delayed", id_b, "", why))
                    continue
                self._messages.append(message)
            if poison:
                await self._broker._settle_ops(self.queue_name, poison)
        return self._messages.popleft()
