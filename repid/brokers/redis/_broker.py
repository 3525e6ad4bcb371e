"""RedisMessageBroker: durable queues in Redis, each state change of a message one Lua script.

How each promise of `repid.brokers.base` is kept (the design is in docs/brokers/redis.md;
the parts kept by the consumers are in `_consumer.py`, the scripts' in `lua/`):

1. Confirmed enqueue: `_enqueue` returns only after the ENQUEUE script replied; a lost
   connection raises `EnqueueNotConfirmedError`. The script declares the queue in the same
   atomic run (as repid 1.x did), so a stored message is always in a declared queue, even
   after Redis lost its data; with `require_declared_queues=True` it refuses an undeclared
   queue instead (`QueueNotDeclaredError`), which catches a mistyped name. With
   `confirm_replicas=N` the reply also waits for N replicas to have the message (WAIT on
   the same connection, `_replicas.py`), so a failover cannot lose it; fewer raise.
2. At-least-once: TAKE puts each message under a short lease (`lease_time`) in the queue's
   in-flight set; the consumer extends the leases of all it holds every third of a lease
   until each is settled (`_consumer.py`). A settle removes it only if the lease is still
   the consumer's, and frees the consumer's capacity whatever its outcome (`_settle`).
   Every live broker returns expired leases to the queue once a second
   (`_maintain_loop`), so a killed worker's messages run again within about a lease.
3. Delays: a delayed message waits in a sorted set scored by its ready time; TAKE and the
   maintenance loop promote it when due, and idle consumers block no longer than until the
   next ready time (at most a second; `_consumer.py`).
4. Priorities: one ready list per priority; TAKE serves the highest, with the
   anti-starvation rule written at the top of `lua/take.lua`.
5. Headers: the parameters are stored whole in the message body, and replaced whole by
   `requeue`; nothing else rewrites them.
6. Dead letters: `nack` moves the id to the queue's dead list and its reason to the
   `reasons` hash; a DEAD consumer reads both (the reason in `DEAD_REASON_HEADER`), and
   `requeue` / `ack` of what it read moves it back / deletes it.
7. Poison: each message of a TAKE is decoded on its own, and one that fails is
   dead-lettered alone with its reason (`_consumer.py`).
8. Deliveries counted: the scripts count per message the leases that ran out
   (`deliveries` hash); TAKE returns that count, and `delivery_count` is one more.

Consumers reach the broker only through the `QueueOps` of their queue (`_queue_ops.py`).
redis-py's errors become repid's in one place, `errors.RedisErrors`: an enqueue Redis did
not answer raises `EnqueueNotConfirmedError` (promise 1), any other call
`BrokerConnectionError`. Every enqueue path refuses a payload over `max_message_size`
before it sends anything (`MessageBroker.enqueue` and `check_sizes`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from repid.brokers._dsn import mask_dsn, require_dsn
from repid.brokers._spin import DEFAULT_REPLY_SPIN
from repid.brokers.base import (
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_SIZE,
    Consumer,
    ConsumeRequest,
    MessageBroker,
    RawMessage,
)
from repid.brokers.redis import _scripts as scripts
from repid.brokers.redis._background import ConsumerTasks, cancel_requested, loop_closed
from repid.brokers.redis._batcher import Batcher, Op
from repid.brokers.redis._client import (
    AnyRedis,
    ClientSettings,
    CommandHead,
    Producer,
    make_producer,
)
from repid.brokers.redis._cluster import is_cluster_dsn
from repid.brokers.redis._codec import encode_body, list_priority, ready_ms
from repid.brokers.redis._consumer import RedisConsumer
from repid.brokers.redis._errors import CONNECTION_ERRORS, RedisErrors, mapped_error
from repid.brokers.redis._handle import RedisHandle
from repid.brokers.redis._keys import ENQUEUE_KEYS, own_keys, queue_keys
from repid.brokers.redis._part_reader import RedisPartReader
from repid.brokers.redis._queue_ops import MAX_OPS, QueueOps
from repid.brokers.redis._registry import QueueRegistry
from repid.brokers.redis._replicas import CLUSTER_REFUSED, ConfirmedWrites, ReplicaConfirmation
from repid.brokers.redis._v1_detect import warn_if_v1_data
from repid.data import MessageCategory, Parameters, RoutingKey
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError

logger = logging.getLogger("repid.brokers.redis")

#: most messages, and characters of their bodies, one ENQUEUE call carries, so that one
#: script run never holds Redis for more than a few milliseconds (a single submission is
#: never split; `enqueue_many` submits in chunks of this size)
_MAX_ENQUEUE_OPS = 500
_MAX_ENQUEUE_CHARS = 1 << 20
#: the longest `reply_spin` taken: each wait may burn that much CPU
_MAX_REPLY_SPIN = 0.001


class RedisMessageBroker(MessageBroker):
    """Queues in Redis (redis-py asyncio): leases, delays, priorities, dead letters.

    `lease_time` is how long a taken message stays leased without news from its consumer,
    which extends the lease every third of it while the message is held: a worker that dies
    mid-job has its messages delivered again within about `lease_time` (plus up to a
    second), and a live one keeps them however long its jobs run (the extender runs on the
    event loop: an async actor that blocks the loop for longer than a lease loses its
    message to another worker; sync actors run in threads and do not).

    An enqueue declares its queue (repid 1.x's behaviour), so a producer needs no
    `Queue.declare()`; `require_declared_queues=True` makes it refuse a queue nobody
    declared (`QueueNotDeclaredError`) instead, so a mistyped queue name fails loudly
    rather than filling a queue no worker reads.

    `max_deliveries` is read by the worker (see `MessageBroker.max_deliveries`);
    `max_message_size` bounds a payload (see `MessageBroker.max_message_size`).
    `starvation_limit` is K of the anti-starvation rule (see `lua/take.lua`). `reply_spin`
    is how long (seconds, 0: never) an enqueue keeps the event loop polling for Redis's
    reply before it lets the loop sleep (see `repid.brokers._spin`). `retries`,
    `socket_timeout` and `socket_connect_timeout` tune redis-py's reconnects;
    `max_connections` (default 256) and `pool_timeout` (default 30 s) size the connection
    pool commands wait on (see `_client.make_client`); any other keyword goes to redis-py's
    connection pool.

    `dsn` may name Redis behind Sentinel (`redis+sentinel://HOST:PORT,.../SERVICE/DB`, see
    `_sentinel.py`): the broker then follows failovers by itself. `confirm_replicas=N`
    (default 0: the master's word is enough) makes every enqueue and settle return only
    once N replicas acknowledged it (Redis `WAIT` after the write), raising as for a Redis
    that did not answer when fewer did within `replica_timeout` seconds (default 1.0; see
    `_replicas.py` for what this does and does not promise).

    `dsn` may name a Redis Cluster (`redis+cluster://HOST:PORT,HOST:PORT/`, or a plain
    `redis://` DSN of one node with `cluster=True`; see `_cluster.py`): each queue's keys
    share one hash tag, so its scripts run on the one master that owns it, and the index
    of queue names is the only key outside a queue's slot (`_registry.py`).
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
        reply_spin: float = DEFAULT_REPLY_SPIN,
        require_declared_queues: bool = False,
        confirm_replicas: int = 0,
        replica_timeout: float = 1.0,
        **redis_options: Any,
    ) -> None:
        self._dsn = dsn = require_dsn(dsn, "RedisMessageBroker", "redis://localhost:6379/0")
        self.prefix = prefix
        if lease_time.total_seconds() < 0.03:
            raise ValueError(f"lease_time is {lease_time}; give at least 30 ms (the default, "
                             "20 s, suits most workers)")
        self.lease_time = lease_time
        self._lease_ms = int(lease_time.total_seconds() * 1000)
        self.set_limits(max_deliveries, max_message_size)
        self.starvation_limit = max(1, starvation_limit)
        self.maintenance_interval = maintenance_interval
        self._settings = ClientSettings(dsn, retries, socket_timeout, socket_connect_timeout,
                                        client_name, redis_options)
        if not isinstance(reply_spin, (int, float)) or not 0.0 <= reply_spin <= _MAX_REPLY_SPIN:
            raise ValueError(f"reply_spin is {reply_spin!r} s; give 0 (off) to "
                             f"{_MAX_REPLY_SPIN} s (the default, {DEFAULT_REPLY_SPIN}, suits "
                             "loopback and a local network)")
        self._reply_spin = reply_spin
        self._require_declared = bool(require_declared_queues)
        #: with `confirm_replicas`, every ENQUEUE and SETTLE run is followed by a WAIT
        self._confirmation = ReplicaConfirmation.of(confirm_replicas, replica_timeout,
                                                    socket_timeout)
        if self._confirmation is not None and (
                is_cluster_dsn(dsn) or redis_options.get("cluster")):
            raise ValueError(CLUSTER_REFUSED)
        self._confirmed: ConfirmedWrites | None = None
        self._client: AnyRedis | None = None
        #: what enqueues go through (see `_client.make_producer`)
        self._producer: Producer | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._enqueuer = Batcher(self._run_enqueue, max_ops=_MAX_ENQUEUE_OPS,
                                 max_chars=_MAX_ENQUEUE_CHARS)
        self._settler = Batcher(self._run_settle, max_ops=MAX_OPS)
        self._queue_keys: dict[str, list[str]] = {}
        self._enqueue_heads: dict[str, CommandHead] = {}
        #: the queues' declared marks and the index of their names (see _registry.py)
        self._registry = QueueRegistry(prefix, self._redis)
        #: live consumers and their background tasks, for `disconnect`
        self._tasks = ConsumerTasks()
        self._stopping = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dsn={mask_dsn(self._dsn)!r})"

    @property
    def require_declared_queues(self) -> bool:
        """True: an enqueue to a queue nobody declared raises `QueueNotDeclaredError`;
        False (the default, as in repid 1.x): the enqueue declares it."""
        return self._require_declared

    # --- connection ---

    async def connect(self) -> None:
        """Open the client, check Redis answers, start returning expired leases."""
        if self._client is not None:
            return
        self._client = await self._settings.open()
        if self._confirmation is None:
            self._producer = make_producer(self._client, self._reply_spin)
        else:  # enqueues and settles go through the connection that confirms them
            self._producer = self._confirmed = ConfirmedWrites(self._client,
                                                               self._confirmation)
        self._stopping = False
        self._maintainer = asyncio.create_task(self._maintain_loop(),
                                               name="repid-redis-maintenance")

    async def disconnect(self) -> None:
        """Finish live consumers (their unhanded messages go back), then close the client."""
        if self._client is None:
            return
        await self._tasks.finish_consumers()
        self._stopping = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.wait({self._maintainer})
            self._maintainer = None
        await self._tasks.close()
        await self._enqueuer.idle()
        await self._settler.idle()
        client, self._client = self._client, None
        self._confirmed = None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.release()
        await client.aclose()

    def _redis(self) -> AnyRedis:
        if self._client is None:
            raise self._not_connected()
        return self._client

    def _not_connected(self) -> BrokerConnectionError:
        return BrokerConnectionError(
            f"{self!r} is not connected; call `await connection.connect()` first")

    def _keys(self, queue: str) -> list[str]:
        """The keys of a queue in the order the scripts expect, all in its slot."""
        keys = self._queue_keys.get(queue)
        if keys is None:
            keys = self._queue_keys[queue] = queue_keys(self.prefix, queue)
        return keys

    def queue_ops(self, queue: str) -> QueueOps:
        """What a consumer of `queue` may ask of this broker (its only way to reach it)."""
        return QueueOps(queue, self._keys(queue), client=self._redis, settler=self._settler,
                        tasks=self._tasks, settings=self, lease_ms=self._lease_ms,
                        socket_timeout=self._settings.socket_timeout,
                        registry=self._registry)

    # --- the scripts ---

    async def _run_enqueue(self, queue: str, ops: list[Op]) -> list[bool]:
        args: list[str | bytes] = []
        for op in ops:
            args.extend(op)
        producer = self._producer
        if producer is None:
            raise self._not_connected()
        head = self._enqueue_heads.get(queue)
        if head is None:
            # the script, the queue's keys, its name and whether an undeclared queue is
            # refused: the same for every enqueue to it
            head = self._enqueue_heads[queue] = scripts.ENQUEUE.head(
                self._keys(queue)[:ENQUEUE_KEYS], queue,
                "1" if self._require_declared else "0")
        result = await scripts.ENQUEUE.run_with_head(producer, head, args)
        # -1: not declared; unless declared before the per-queue marks existed (_registry.py)
        if result == -1 and await self._registry.adopt(queue, self._keys(queue)):
            result = await scripts.ENQUEUE.run_with_head(producer, head, args)
        if result == -1:
            raise QueueNotDeclaredError(queue)
        if result[:1] == "+":  # this run declared the queue: list it
            await self._registry.indexed_after_enqueue(queue)
            result = result[1:]
        return [c == "1" for c in result]

    async def _run_settle(self, queue: str, ops: list[Op]) -> list[bool]:
        args: list[str | bytes] = []
        for op in ops:
            args.extend(op)
        result = await scripts.SETTLE(self._confirmed or self._redis(), self._keys(queue), args)
        return [c == "1" for c in result]

    # --- the broker calls ---

    async def _enqueue(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        op = (key.id_, encode_body(key, payload, params), ready_ms(params))
        try:  # every enqueue: no `RedisErrors` object on this path (as in `_settle`)
            stored = await self._enqueuer.submit(key.queue, [op])
        except CONNECTION_ERRORS as exc:
            raise mapped_error(exc, EnqueueNotConfirmedError, lambda: (
                f"Redis did not confirm the message {key.id_!r} for queue "
                f"{key.queue!r}")) or exc from exc
        if not stored[0]:
            logger.debug("message %r is already in queue %r; not enqueued again",
                         key.id_, key.queue)

    async def enqueue_many(self, messages: Iterable[RawMessage]) -> None:
        """Store many messages; with no plugin around enqueue, in script runs of at most
        `_MAX_ENQUEUE_OPS` messages and `_MAX_ENQUEUE_CHARS` characters of bodies each
        (so none holds Redis for long), all sent at once."""
        if self.is_hooked("enqueue"):
            await super().enqueue_many(messages)
            return
        chunks: list[tuple[str, list[Op]]] = []
        open_chunks: dict[str, tuple[list[Op], list[int]]] = {}
        for key, payload, params in self.check_sizes(messages):
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
        with RedisErrors(EnqueueNotConfirmedError,
                         "Redis did not confirm a batch of messages"):
            await asyncio.gather(*(self._enqueuer.submit(q, ops) for q, ops in chunks))

    async def _settle(self, action: str, key: RoutingKey, handle: RedisHandle | None,
                      extra: Callable[[], Op] | None = None) -> None:
        """Run one settle action on a consumed message (`extra()` gives the arguments that
        follow the lease token) and free its consumer's capacity whatever happens: the
        release is in a `finally`, so a settle that fails in any way, even while its
        arguments are built, never leaves the consumer short of room."""
        try:
            op: Op
            if handle is None:
                # a key that was not consumed here: act on the message by id, whatever lease
                queue, op = key.queue, (action, "inflight", key.id_, "")
            else:
                queue = handle.queue
                op = (action, handle.where,
                      handle.id_ if handle.stored_id is None else handle.stored_id,
                      handle.token)
            if extra is not None:
                op += extra()
            try:  # the one settle per message: no `RedisErrors` object on this path
                done = await self._settler.submit(queue, [op])
            except CONNECTION_ERRORS as exc:
                raise mapped_error(exc, BrokerConnectionError, lambda: (
                    f"Redis did not confirm {action} of message {key.id_!r} in queue "
                    f"{queue!r} (an unsettled message is delivered again once its lease "
                    "ends)")) or exc from exc
            if handle is not None and done[0]:
                # what SETTLE leaves in the dead or delayed part (see lua/settle.lua)
                handle.moved = action not in ("reject", "release") and not (
                    action == "nack" and handle.where == "dead")
        finally:
            if handle is not None:
                handle.release()
        if not done[0]:
            logger.warning(
                "%s of message %r in queue %r had no effect: it is no longer held by this "
                "consumer (its lease ran out and it went back to the queue, or the queue was "
                "flushed)", action, key.id_, queue)

    # `handle` is the `RedisHandle` of a delivery (None: a key the caller made, settled by
    # id, whatever lease it is under)

    async def _ack(self, key: RoutingKey, handle: RedisHandle | None) -> None:
        await self._settle("ack", key, handle)

    async def _nack(self, key: RoutingKey, handle: RedisHandle | None,
                    reason: str | None = None) -> None:
        await self._settle("nack", key, handle, lambda: (reason or "",))

    async def _reject(self, key: RoutingKey, handle: RedisHandle | None) -> None:
        await self._settle("reject", key, handle)

    async def _requeue(self, key: RoutingKey, handle: RedisHandle | None, payload: str,
                       params: Parameters, reason: str | None = None) -> None:
        await self._settle("requeue", key, handle, lambda: (
            encode_body(key, payload, params), str(list_priority(key.priority)),
            ready_ms(params)))

    async def _queue_declare(self, queue_name: str) -> None:
        with RedisErrors(BrokerConnectionError, "cannot declare queue %r", queue_name):
            await self._registry.declare(queue_name, self._keys(queue_name))
            await warn_if_v1_data(self._redis(), queue_name)  # repid 1.x keys: say so

    async def _queue_flush(self, queue_name: str) -> None:
        with RedisErrors(BrokerConnectionError, "cannot flush queue %r", queue_name):
            # UNLINK frees the memory in the background: a big queue never blocks Redis
            await self._redis().unlink(*own_keys(self._keys(queue_name)))

    async def _queue_delete(self, queue_name: str) -> None:
        with RedisErrors(BrokerConnectionError, "cannot delete queue %r", queue_name):
            await self._registry.delete(queue_name, self._keys(queue_name))
        self._queue_keys.pop(queue_name, None)

    def _consumer(self, request: ConsumeRequest) -> Consumer:
        ops = self.queue_ops(request.queue_name)
        if request.category is MessageCategory.NORMAL:
            return RedisConsumer(self, ops, request.max_unacked_messages)
        return RedisPartReader(self, ops, request.category, request.stop_when_empty)

    async def queue_stats(self, queue_name: str) -> dict[str, int]:
        """Counts of the queue's messages: ready, delayed, in_flight (leased), dead; a due
        delayed message or an expired lease is counted as ready. QueueNotDeclaredError if
        the queue is not declared."""
        with RedisErrors(BrokerConnectionError, "cannot read the counts of queue %r",
                         queue_name):
            keys = self._keys(queue_name)
            counts = await scripts.STATS(self._redis(), keys, [queue_name])
            if not counts and await self._registry.adopt(queue_name, keys):
                counts = await scripts.STATS(self._redis(), keys, [queue_name])
        if not counts:
            raise QueueNotDeclaredError(queue_name)
        ready, delayed, in_flight, dead = counts
        return {"ready": ready, "delayed": delayed, "in_flight": in_flight, "dead": dead}

    async def queue_names(self) -> list[str] | None:
        """The queues in the index of queue names (see _registry.py)."""
        with RedisErrors(BrokerConnectionError, "cannot list the declared queues"):
            return await self._registry.names()

    # --- background work ---

    async def _maintain_loop(self) -> None:
        """Every second, promote due delayed messages and return expired leases of every
        listed queue (promise 2 holds even when no consumer of the queue is idle), and list
        the queues an enqueue declared while the index could not be written. A queue whose
        node cannot be reached (one node of a cluster down) does not hold up the others."""
        failing = False
        while not self._stopping and not cancel_requested():
            await asyncio.sleep(self.maintenance_interval * random.uniform(0.8, 1.0))
            try:
                await self._registry.catch_up()
                unreachable: BaseException | None = None
                for queue in await self._registry.names():
                    try:
                        moved = await scripts.MAINTAIN(self._redis(), self._keys(queue), [])
                    except CONNECTION_ERRORS as exc:
                        unreachable = exc
                        continue
                    if moved:
                        logger.debug("queue %r: %d delayed or expired messages made ready",
                                     queue, moved)
                if unreachable is not None:
                    raise unreachable
                if failing:
                    logger.info("Redis maintenance of %r resumed", self)
                failing = False
            except Exception as exc:
                if loop_closed():
                    return
                if not isinstance(exc, CONNECTION_ERRORS):
                    logger.exception("Redis maintenance of %r failed; trying again", self)
                elif not failing:
                    logger.warning("Redis maintenance of %r paused, Redis unreachable: %s",
                                   self, exc)
                    failing = True
