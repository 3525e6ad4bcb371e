"""QueueOps: everything a consumer of one queue asks of its Redis broker, and nothing more.

The broker hands each consumer one (`RedisMessageBroker.queue_ops`); consumers reach the
broker only through it. It runs the scripts for that queue (TAKE, EXTEND, and SETTLE
through the broker's group commit), blocks on the queue's wake list, reads the dead and
delayed parts for a snapshot, and registers the consumer's background tasks so that the
broker's `disconnect` can wait for them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from random import random
from typing import Any, Protocol

from repid.brokers.redis import _scripts as scripts
from repid.brokers.redis._background import ConsumerTasks
from repid.brokers.redis._batcher import Batcher, Op
from repid.brokers.redis._client import AnyRedis
from repid.brokers.redis._handle import RedisHandle
from repid.brokers.redis._keys import QueueKey
from repid.brokers.redis._registry import QueueRegistry
from repid.errors import QueueNotDeclaredError

logger = logging.getLogger("repid.brokers.redis")

#: most settle or extend operations one script call carries (a single submission of
#: settles is never split)
MAX_OPS = 2000
#: how long an idle consumer blocks at most, so delays and leases are checked each second
MAX_BLOCK = 1.0
#: the most a consumer waiting for a due message adds to its wait (see `block_time`)
DUE_JITTER = 0.05


class BrokerSettings(Protocol):
    """The public settings of the broker its consumers read each time they use one."""

    lease_time: timedelta
    starvation_limit: int


class QueueOps:
    """The operations on one queue its consumers use (see the module docstring)."""

    __slots__ = ("_client", "_lease_ms", "_registry", "_settings", "_settler",
                 "_socket_timeout", "keys", "queue", "tasks", "wake_key")

    def __init__(self, queue: str, keys: list[str], *, client: Callable[[], AnyRedis],
                 settler: Batcher, tasks: ConsumerTasks, settings: BrokerSettings,
                 lease_ms: int, socket_timeout: float | None,
                 registry: QueueRegistry) -> None:
        self.queue = queue
        #: the queue's keys in the order of `QueueKey`
        self.keys = keys
        self.wake_key = keys[QueueKey.WAKE]
        #: where the consumer registers itself and its background tasks
        self.tasks = tasks
        self._client = client
        self._settler = settler
        self._settings = settings
        self._lease_ms = lease_ms
        self._socket_timeout = socket_timeout
        #: whether the queue is declared, for one its scripts found unmarked (_registry.py)
        self._registry = registry

    def ensure_connected(self) -> None:
        """Raise BrokerConnectionError (saying how to connect) unless the broker is."""
        self._client()

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between two extensions of the leases a consumer holds: a third of one."""
        return self._settings.lease_time.total_seconds() / 3

    async def take(self, count: int) -> tuple[int, int, list[bytes]]:
        """Lease up to `count` ready messages: (next delayed time ms, server now ms,
        [`token LF returns LF id LF body` per message, undecoded]); QueueNotDeclaredError if
        it is not declared."""
        queue = self.queue
        args: list[str | int] = [queue, count, self._lease_ms, self._settings.starvation_limit]
        result = await scripts.TAKE(self._client(), self.keys, args, raw=True)
        if not result[3] and await self._registry.adopt(queue, self.keys):
            result = await scripts.TAKE(self._client(), self.keys, args, raw=True)
        if not result[3]:
            raise QueueNotDeclaredError(queue)
        if result[2]:
            logger.error("%d messages of queue %r have ids with a line break, which repid "
                         "never writes; moved to the dead-letter list", result[2], queue)
        return int(result[0]), int(result[1]), result[4:]

    async def settle(self, ops: list[Op]) -> list[bool]:
        """Settle operations of this queue, in one atomic script run (shared with other
        callers' by the broker's group commit)."""
        return await self._settler.submit(self.queue, ops)

    async def extend(self, handles: list[RedisHandle]) -> int:
        """Move the leases of `handles` (still held under their tokens) to now + lease_time;
        how many were extended."""
        extended = 0
        for start in range(0, len(handles), MAX_OPS):
            args: list[str | int] = [self._lease_ms]
            for handle in handles[start:start + MAX_OPS]:
                args.append(handle.id_)
                args.append(handle.token)
            extended += int(await scripts.EXTEND(self._client(), self.keys, args))
        return extended

    def wait_for_work(self, next_due: int, now: int) -> Awaitable[Any]:
        """Block on the wake list until something may be ready: until the next delayed
        message is due, at most `MAX_BLOCK` (raises at once when not connected)."""
        client = self._client()
        return client.blpop([self.wake_key],
                            timeout=block_time(next_due, now, self._socket_timeout))

    async def snapshot_ids(self, where: str) -> list[bytes]:
        """The ids of the queue's dead (`where` "dead") or delayed messages, undecoded, in
        their order; QueueNotDeclaredError if the queue is not declared."""
        client = self._client()
        if not await client.exists(self.keys[QueueKey.DECLARED]) and \
                not await self._registry.adopt(self.queue, self.keys):
            raise QueueNotDeclaredError(self.queue)
        ids: list[bytes]
        if where == "dead":
            ids = await client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "LRANGE", self.keys[QueueKey.DEAD], 0, -1, **scripts.UNDECODED)
        else:
            ids = await client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "ZRANGE", self.keys[QueueKey.DELAYED], 0, -1, **scripts.UNDECODED)
        return ids

    async def stored(self, ids: list[bytes], *, with_reasons: bool,
                     ) -> tuple[list[bytes | None], list[bytes | None]]:
        """The stored bodies of `ids` (None for one settled since) and, `with_reasons`,
        their dead-letter reasons (else all None), undecoded."""
        client = self._client()
        bodies = await client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
            "HMGET", self.keys[QueueKey.MSGS], *ids, **scripts.UNDECODED)
        reasons: list[bytes | None] = [None] * len(ids)
        if with_reasons:
            reasons = await client.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "HMGET", self.keys[QueueKey.REASONS], *ids, **scripts.UNDECODED)
        return bodies, reasons


def block_time(next_due: int, now: int, socket_timeout: float | None) -> float:
    """How long an idle consumer blocks: until the next delayed message is due, at most 1 s.

    Waiting for a due message, each consumer adds up to `DUE_JITTER` at random: consumers
    that computed the same due time would otherwise wake in an order set by when each
    last blocked, and the same one (often the worker that just sent the message back for
    another worker's actor) would take it every time."""
    wait = MAX_BLOCK if next_due < 0 else min(MAX_BLOCK,
                                              (next_due - now) / 1000 + random() * DUE_JITTER)
    if socket_timeout:
        wait = min(wait, socket_timeout / 2)
    return max(0.01, wait)
