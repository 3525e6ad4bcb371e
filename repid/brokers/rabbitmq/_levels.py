"""Priorities on quorum queues: the consumer's buffer that hands out the highest priority
level first without starving the lower ones.

Quorum queues before RabbitMQ 4.0 have no priorities (and 4.x has two levels, not repid's
three), so a queue `Q` of a broker with quorum queues is one quorum queue per priority
level (`Q:high`, `Q`, `Q:low`, see `topology.priority_queues`). A consumer subscribes to
all of them on its channel, the highest first, and what RabbitMQ pushes waits in a
`FairPriorityBuffer` until the worker takes it. The buffer decides the order:

- the highest level with a message waiting goes first;
- but a lower level is not starved: each level counts the messages of higher levels handed
  out while it had a message waiting; once that count reaches `STARVATION_LIMIT` (10), the
  lower level's next message goes first (the highest such level, if several), and its
  count starts again from 0. So while all three levels have messages waiting, of every
  12 messages handed out 10 are HIGH, 1 MEDIUM and 1 LOW: a waiting MEDIUM message is
  passed by at most 10 others, a LOW one by at most 11.

Each level's subscription has a prefetch of twice the consumer's `max_unacked_messages`
(`layout.QuorumLayout.level_prefetch`): the spare half keeps the next message of a busy
level at hand, so after each settle a lower level's message does not slip in during the
round trip in which RabbitMQ sends the next one of the higher level.

The order holds among the messages the consumer has received: a message of a higher level
published after a lower one was handed out cannot go before it, as on classic queues.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from repid.brokers.rabbitmq._topology import MAX_PRIORITY, priority_level

#: a waiting level's message goes first once this many higher-level messages passed it
STARVATION_LIMIT = 10


class _Levels:
    """The buffer's storage: end marks and wake-ups first, then one FIFO per level; its
    length is what `asyncio.Queue` sees (`empty()`, `qsize()`)."""

    __slots__ = ("levels", "marks", "passed")

    def __init__(self) -> None:
        self.marks: deque[Any] = deque()
        self.levels: list[deque[Any]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        #: per level: higher-level messages handed out while it had one waiting
        self.passed = [0] * (MAX_PRIORITY + 1)

    def __len__(self) -> int:
        return len(self.marks) + sum(len(level) for level in self.levels)

    def put(self, item: Any) -> None:
        key = getattr(item, "key", None)
        if key is None:  # an end mark or a wake-up: not a message
            self.marks.append(item)
        else:
            self.levels[priority_level(key.priority)].append(item)

    def pick(self) -> int:
        """The level whose message goes next (see the module docstring)."""
        waiting = [n for n in range(MAX_PRIORITY, -1, -1) if self.levels[n]]
        for level in waiting:
            if self.passed[level] >= STARVATION_LIMIT:
                return level
        return waiting[0]

    def get(self) -> Any:
        if self.marks:
            return self.marks.popleft()
        chosen = self.pick()
        item = self.levels[chosen].popleft()
        for level in range(chosen):
            if self.levels[level]:
                self.passed[level] += 1
        self.passed[chosen] = 0
        return item


class FairPriorityBuffer(asyncio.Queue[Any]):
    """An `asyncio.Queue` (so `get` stays cancel-safe) whose `get` hands out messages by
    priority level with the fairness rule of the module docstring; items without a `key`
    (a consumer's end mark and wake-ups) come out first, in their order."""

    _queue: _Levels

    def _init(self, maxsize: int) -> None:
        self._queue = _Levels()

    def _put(self, item: Any) -> None:
        self._queue.put(item)

    def _get(self) -> Any:
        return self._queue.get()
