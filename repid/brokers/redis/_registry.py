"""Which queues exist: a mark per queue in the queue's own slot, and an index for listing.

A queue is declared while its `declared` key exists (`keys.QueueKey.DECLARED`, in the
queue's slot). ENQUEUE, TAKE and STATS check that mark inside their scripts, so the
enqueue and take paths touch no key outside the queue's slot, and on a Redis Cluster each
runs on the one node owning the queue.

The index `<prefix>:queues` (`keys.index_key`) is a set of queue names, read only to list
the queues (`queue_names`, the CLI, the maintenance loop that visits every queue); it
lives in a slot of its own, no script touches it, and this module keeps it in step:

- a declare sets the mark, then adds the name to the index;
- an ENQUEUE that declared its queue says so, and the broker adds the name then
  (`indexed_after_enqueue`); when Redis refuses that, the name is kept and added by the
  next maintenance round (`catch_up`), so a queue is never left out for long;
- a delete removes the name from the index first, then the queue's keys and its mark: one
  cut short in between leaves a declared queue out of the index (the next declare lists
  it again), never a listed name without its queue;
- a queue declared by repid before the marks existed is only in the index (the set that
  used to declare queues has the same name): the first script that finds it unmarked
  makes the caller `adopt` it, which sets its mark when the index lists it, and the
  caller runs the script again. So data written then keeps working, with no migration step.
  That layout never ran on a Redis Cluster, so on a cluster nothing is adopted: there the
  enqueue and take paths touch no key outside the queue's slot, not even when they fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster

from repid.brokers.redis._client import AnyRedis
from repid.brokers.redis._errors import CONNECTION_ERRORS
from repid.brokers.redis._keys import QueueKey, index_key

logger = logging.getLogger("repid.brokers.redis")


class QueueRegistry:
    """The declared marks and the index of one broker's queues (see the module docstring)."""

    __slots__ = ("_client", "_unindexed", "index")

    def __init__(self, prefix: str, client: Callable[[], AnyRedis]) -> None:
        #: the key of the index of queue names
        self.index = index_key(prefix)
        self._client = client
        #: queues an ENQUEUE declared whose names the index may still lack
        self._unindexed: set[str] = set()

    async def declare(self, queue: str, keys: list[str]) -> None:
        """Mark `queue` (its keys in the order of `QueueKey`) declared, then list it."""
        client = self._client()
        await client.set(keys[QueueKey.DECLARED], "1")
        await client.sadd(self.index, queue)
        self._unindexed.discard(queue)

    async def delete(self, queue: str, keys: list[str]) -> None:
        """Take `queue` out of the index, then remove all its keys, its mark included."""
        client = self._client()
        await client.srem(self.index, queue)
        await client.unlink(*keys)

    async def indexed_after_enqueue(self, queue: str) -> None:
        """List `queue`, which an ENQUEUE just declared; when Redis refuses, keep it for
        `catch_up` (the enqueue itself was confirmed: this never raises)."""
        try:
            await self._client().sadd(self.index, queue)
        except CONNECTION_ERRORS as exc:
            self._unindexed.add(queue)
            logger.warning("queue %r was declared by an enqueue but could not be added to "
                           "the index of queue names yet (%s); trying again", queue, exc)
        else:
            self._unindexed.discard(queue)

    async def catch_up(self) -> None:
        """List the queues `indexed_after_enqueue` could not (raises what Redis raised)."""
        for queue in list(self._unindexed):
            await self._client().sadd(self.index, queue)
            self._unindexed.discard(queue)

    async def names(self) -> list[str]:
        """The listed queue names, sorted."""
        names = await self._client().smembers(self.index)
        return sorted(name if isinstance(name, str) else bytes(name).decode()
                      for name in names)

    async def adopt(self, queue: str, keys: list[str]) -> bool:
        """Whether `queue`, which its scripts found unmarked, is declared after all: True
        when the index lists it (declared before the marks existed), after setting its
        mark; False when it is not declared (always on a cluster: see the module docstring)."""
        client = self._client()
        if isinstance(client, RedisCluster) or not await client.sismember(self.index, queue):
            return False
        await client.set(keys[QueueKey.DECLARED], "1", nx=True)
        logger.info("queue %r, declared by an earlier version of repid, now has its own "
                    "declared mark (%s)", queue, keys[QueueKey.DECLARED])
        return True
