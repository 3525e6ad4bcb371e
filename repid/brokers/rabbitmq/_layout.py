"""How a broker lays its queues out on RabbitMQ: classic queues (the default) or quorum
queues (`RabbitMessageBroker(queue_type="quorum")`), and what differs between the two.

Classic (`ClassicLayout`, unchanged from earlier releases): a queue `Q` is the classic
queue `Q` (priorities by RabbitMQ through `x-max-priority`) and `Q:dead`; delays wait in
the classic levels `repid.delay.q{k}`. A redelivered message (its last delivery ended
unsettled) is counted by replacing it with a copy whose `x-repid-deliveries` header is one
higher (see `_consumer.py`): classic queues keep no count.

Quorum (`QuorumLayout`): replicated, durable Raft queues. Per repid queue `Q`:

- `Q:high`, `Q` and `Q:low`: one quorum queue per priority level (quorum queues deliver in
  arrival order only; `_levels.py` says how a consumer orders and shares them), each with
  `x-delivery-limit` = the broker's `max_deliveries`, dead-lettering to `Q:dead`;
- `Q:dead`, a quorum queue;
- the broker's own delay levels `repid.qdelay.q{k}` (quorum queues with one fixed
  `x-message-ttl` each, as the classic ones), ending in the shared deliver exchange.

Every quorum queue that dead-letters (the priority levels and the delay levels) does so
at least once (`x-dead-letter-strategy: at-least-once`, which RabbitMQ accepts only with
`x-overflow: reject-publish`): RabbitMQ keeps a dead-lettered message in its source queue
until the target queue has confirmed it, so no dead letter is lost in a crash or a
failover (classic queues dead-letter at most once). The dead-letter queues and the delay
levels, which only scans read more than once, get a delivery limit so high it never
applies (`SCAN_DELIVERY_LIMIT`), set because RabbitMQ 4 gives every quorum queue a default
limit of 20, which would drop a dead message after 20 reads by `repid dead list`.

Deliveries counted, quorum: RabbitMQ counts the deliveries of a message that ended without
an ack (its `x-delivery-count` header), so a redelivered message is handed out as it
is, no copy; its count is that header plus its `x-repid-deliveries` header (the deliveries
counted before a deliberate return, which replaces a message by a copy and so starts the
server's count again). The worker dead-letters a message, with the reason, at delivery
`max_deliveries + 1` (`repid.worker._processor`); RabbitMQ's `x-delivery-limit` of
`max_deliveries` lets a message be delivered `max_deliveries + 1` times, so the server's
count and the worker's agree on the last delivery, and if that one ends unsettled too (the
worker died before it could dead-letter it) RabbitMQ dead-letters the message itself
(`x-death` reason `delivery_limit`, shown as the dead reason, see `codec.stored_reason`).
An actor's own `max_deliveries` above the broker's is capped by the server's limit.

Quorum queues need RabbitMQ 3.10 or later (message TTL and at-least-once dead-lettering
came with 3.10); the broker checks the server's version before declaring.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiormq.abc import DeliveredMessage

from repid.brokers.rabbitmq import _codec as codec
from repid.brokers.rabbitmq import _topology as topology

#: the accepted values of `RabbitMessageBroker(queue_type=...)`
QUEUE_TYPES = ("classic", "quorum")
#: the first RabbitMQ version whose quorum queues have message TTL and at-least-once
#: dead-lettering
QUORUM_MIN_VERSION = (3, 10)
#: the delivery limit of the quorum queues that only scans read more than once
SCAN_DELIVERY_LIMIT = 1_000_000
#: a quorum level's prefetch is this many times the consumer's max_unacked_messages
LEVEL_PREFETCH_FACTOR = 2

_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' for queue .*?: received (.*) but "
                           r"current is (.*?)\s*$")
#: arguments RabbitMQ compares only on quorum queues
_QUORUM_ONLY_ARGUMENTS = ("x-delivery-limit", "x-dead-letter-strategy",
                          "x-quorum-initial-group-size")


def check_queue_type(value: object) -> str:
    """`value` if it is one of `QUEUE_TYPES`, else a ValueError naming them."""
    if value not in QUEUE_TYPES:
        accepted = ", ".join(repr(kind) for kind in QUEUE_TYPES)
        raise ValueError(f"queue_type is {value!r}; give one of {accepted}")
    return str(value)


def _priority_of(message: DeliveredMessage) -> int:
    """The repid priority a stored message carries (MEDIUM when it cannot be read)."""
    properties = message.header.properties
    value = (properties.headers or {}).get(codec.HEADER_PRIORITY, properties.priority)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


class ClassicLayout:
    """Classic queues (see the module docstring)."""

    queue_type = "classic"
    #: RabbitMQ counts unsettled deliveries itself (else the consumer counts them by copy)
    server_counts = False

    def work_queues(self, queue: str) -> list[str]:
        """The RabbitMQ queues holding `queue`'s ready messages, highest priority first."""
        return [queue]

    def home(self, queue: str, priority: int) -> str:
        """The RabbitMQ queue a message of `queue` with `priority` is published to."""
        return queue

    def home_of(self, queue: str, message: DeliveredMessage) -> str:
        """The RabbitMQ queue a stored message of `queue` goes back to."""
        return self.home(queue, _priority_of(message))

    def work_arguments(self, queue: str) -> dict[str, Any]:
        """Durable queue; priorities through x-max-priority; nack dead-letters through the
        dead-letter exchange into `<queue>:dead` (promise 6)."""
        return {"x-max-priority": topology.MAX_PRIORITY,
                "x-dead-letter-exchange": topology.DEAD_EXCHANGE,
                "x-dead-letter-routing-key": queue}

    def dead_arguments(self) -> dict[str, Any] | None:
        return None

    def level_queue(self, level: int) -> str:
        return topology.level_queue(level)

    def level_exchange(self, level: int) -> str:
        return topology.level_exchange(level)

    def next_exchange(self, level: int) -> str:
        return topology.next_exchange(level)

    def entry_exchange(self) -> str:
        return topology.entry_exchange()

    def level_arguments(self, level: int) -> dict[str, Any]:
        """One fixed TTL per level queue, so every message in it expires in arrival order;
        then it dead-letters onward."""
        return {"x-message-ttl": topology.level_ttl_ms(level),
                "x-dead-letter-exchange": self.next_exchange(level)}

    def level_prefetch(self, max_unacked: int) -> int:
        """The prefetch of each of a consumer's subscriptions."""
        return max_unacked

    def new_buffer(self) -> asyncio.Queue[Any]:
        """Where a consumer's received messages wait to be handed out: in arrival order
        (RabbitMQ has ordered them by priority already)."""
        return asyncio.Queue()

    def earlier(self, message: DeliveredMessage) -> int:
        """Deliveries of a NORMAL message that ended unsettled before this one: its
        `x-repid-deliveries` header, one more when it is redelivered."""
        return codec.deliveries(message) + (1 if message.redelivered else 0)


class QuorumLayout(ClassicLayout):
    """Quorum queues (see the module docstring)."""

    queue_type = "quorum"
    server_counts = True

    def __init__(self, max_deliveries: int) -> None:
        #: the `x-delivery-limit` of the priority-level queues
        self.delivery_limit = max_deliveries

    def work_queues(self, queue: str) -> list[str]:
        return topology.priority_queues(queue)

    def home(self, queue: str, priority: int) -> str:
        return topology.priority_queue(queue, topology.priority_level(priority))

    def work_arguments(self, queue: str) -> dict[str, Any]:
        """A durable quorum queue, dead-lettering at least once into `<queue>:dead`, with
        RabbitMQ's delivery limit backing `max_deliveries`."""
        return {"x-queue-type": "quorum",
                "x-dead-letter-exchange": topology.DEAD_EXCHANGE,
                "x-dead-letter-routing-key": queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": self.delivery_limit}

    def dead_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum", "x-delivery-limit": SCAN_DELIVERY_LIMIT}

    def level_queue(self, level: int) -> str:
        return topology.level_queue(level, quorum=True)

    def level_exchange(self, level: int) -> str:
        return topology.level_exchange(level, quorum=True)

    def next_exchange(self, level: int) -> str:
        return topology.next_exchange(level, quorum=True)

    def entry_exchange(self) -> str:
        return topology.entry_exchange(quorum=True)

    def level_arguments(self, level: int) -> dict[str, Any]:
        return {**super().level_arguments(level),
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": SCAN_DELIVERY_LIMIT}

    def level_prefetch(self, max_unacked: int) -> int:
        return LEVEL_PREFETCH_FACTOR * max_unacked

    def new_buffer(self) -> asyncio.Queue[Any]:
        from repid.brokers.rabbitmq._levels import FairPriorityBuffer

        return FairPriorityBuffer()

    def earlier(self, message: DeliveredMessage) -> int:
        """Its `x-repid-deliveries` header plus RabbitMQ's `x-delivery-count`."""
        return codec.deliveries(message) + codec.server_deliveries(message)


def layout_for(queue_type: str, max_deliveries: int) -> ClassicLayout:
    return QuorumLayout(max_deliveries) if queue_type == "quorum" else ClassicLayout()


# --- a queue that exists with other arguments ---


def mismatch_of(error: str) -> tuple[str, str, str] | None:
    """(argument, received, current) of RabbitMQ's PRECONDITION_FAILED text for a queue
    declared with other arguments than it has (None for another error)."""
    match = _INEQUIVALENT.search(error)
    if match is None:
        return None
    argument, received, current = match.groups()
    return argument, received.strip(), current.strip()


def existing_type(error: str) -> str | None:
    """The type of the queue a declare failed on, when RabbitMQ's error text shows it: the
    mismatched argument is `x-queue-type`, or one only queues of one type are compared on
    (None when the text does not tell)."""
    mismatch = mismatch_of(error)
    if mismatch is None:
        return None
    argument, _, current = mismatch
    if argument == "x-queue-type":
        if current == "none":
            return "classic"
        for kind in ("quorum", "classic", "stream"):
            if f"'{kind}'" in current:
                return kind
        return None
    if argument in _QUORUM_ONLY_ARGUMENTS:
        return "quorum"
    if argument == "x-max-priority" and current != "none":
        return "classic"  # quorum queues refuse x-max-priority
    return None


def type_mismatch(queue: str, existing: str, wanted: str) -> str:
    """The error text for a queue that exists with the other type."""
    return (
        f"queue {queue!r} already exists on RabbitMQ as a {existing} queue, and this broker "
        f"declares {wanted} queues (RabbitMessageBroker(queue_type={wanted!r})); RabbitMQ "
        "cannot change the type of a queue. Keep queue_type="
        f"{existing!r} for it, or migrate it as docs/scaling/rabbitmq-quorum.md describes: "
        f"stop its producers, let the workers empty it (`repid queues stats {queue}`), "
        f"delete it (`repid queues delete {queue}`) and declare it again with "
        f"queue_type={wanted!r}.")


def limit_mismatch(queue: str, current: str, wanted: int) -> str:
    """The error text for a quorum queue declared with another delivery limit."""
    return (
        f"quorum queue {queue!r} exists with x-delivery-limit {current.strip(chr(39))}, and "
        f"this broker's max_deliveries is {wanted}; RabbitMQ cannot change a queue's "
        f"arguments. Give RabbitMessageBroker(max_deliveries={current.strip(chr(39))}), or "
        "empty the queue, delete it and declare it again (see "
        "docs/scaling/rabbitmq-quorum.md).")
