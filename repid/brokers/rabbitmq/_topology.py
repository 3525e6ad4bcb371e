"""Names and shapes of everything repid declares on RabbitMQ, and the delay decomposition.

Delays work without the delayed-message plugin. A delay of `d` whole seconds is written in
binary into the routing key (`LEVELS` words of `0`/`1`, most significant first, then the
destination queue). Delay level `k` is one queue whose fixed `x-message-ttl` is `2**k`
seconds; every message in it waits exactly as long, so each level is FIFO in expiry order
and a long delay never holds back a short one (no head-of-line blocking). A message passes
only through the levels whose bit is set, highest first, and the last hop dead-letters it to
`DELIVER_EXCHANGE`, which routes it by the trailing queue name to the real queue.
See docs/brokers/rabbitmq.md for the diagram.

A broker with quorum queues (`queue_type="quorum"`, see `_layout.py`) has delay levels of
its own, `repid.qdelay.x{k}` and `repid.qdelay.q{k}` (the `quorum=True` names below), since
classic and quorum queues of one server must not share a level queue; both sets end in the
same `DELIVER_EXCHANGE`. Its queue `Q` is one quorum queue per priority level (`Q:high`,
`Q`, `Q:low`: `priority_queues`), since quorum queues order by arrival only.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

#: number of delay levels; the longest delay is 2**LEVELS - 1 seconds (about 8.5 years)
LEVELS = 28
MAX_DELAY_SECONDS = (1 << LEVELS) - 1

#: priorities 0 (LOW) .. 2 (HIGH); a larger value is delivered first
MAX_PRIORITY = 2

DEAD_EXCHANGE = "repid.dead"
DELIVER_EXCHANGE = "repid.delay.deliver"
UNROUTABLE_EXCHANGE = "repid.unroutable"
UNROUTABLE_QUEUE = "repid.unroutable"

_UTC = timezone.utc


def dead_queue(queue: str) -> str:
    """The dead-letter queue of `queue`."""
    return f"{queue}:dead"


#: what the names of the quorum queues' own delay levels start with
QUORUM_DELAY_PREFIX = "repid.qdelay"
#: the suffix of the queue holding a priority level's messages, per level (a queue's own
#: name holds the default priority, MEDIUM); queue names cannot contain ':'
PRIORITY_SUFFIXES = {MAX_PRIORITY: ":high", 1: "", 0: ":low"}


def level_exchange(level: int, quorum: bool = False) -> str:
    """The topic exchange that decides whether a message waits in level `level`."""
    return f"{QUORUM_DELAY_PREFIX if quorum else 'repid.delay'}.x{level}"


def level_queue(level: int, quorum: bool = False) -> str:
    """The queue where a message waits `2**level` seconds."""
    return f"{QUORUM_DELAY_PREFIX if quorum else 'repid.delay'}.q{level}"


def priority_level(priority: int) -> int:
    """The priority level (0 .. MAX_PRIORITY) of a message's priority, as RabbitMQ's
    x-max-priority treats it: below 0 is 0, above the maximum is the maximum."""
    return min(max(priority, 0), MAX_PRIORITY)


def priority_queue(queue: str, level: int) -> str:
    """The quorum queue holding `queue`'s messages of priority level `level`."""
    return queue + PRIORITY_SUFFIXES[level]


def priority_queues(queue: str) -> list[str]:
    """The quorum queues of `queue`, one per priority level, highest first."""
    return [priority_queue(queue, level) for level in range(MAX_PRIORITY, -1, -1)]


def queue_of(name: str) -> str:
    """The repid queue a quorum priority-level queue belongs to (`name` itself when it
    is not one)."""
    for suffix in PRIORITY_SUFFIXES.values():
        if suffix and name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def level_ttl_ms(level: int) -> int:
    """The fixed per-queue TTL of delay level `level`, in milliseconds."""
    return 1000 * (1 << level)


def entry_exchange(quorum: bool = False) -> str:
    """Where delayed messages are published: the exchange of the highest level."""
    return level_exchange(LEVELS - 1, quorum)


def _bit_pattern(level: int, bit: str) -> str:
    """Topic pattern matching routing keys whose bit `level` is `bit`."""
    return "*." * (LEVELS - 1 - level) + bit + ".#"


def level_queue_pattern(level: int) -> str:
    """Binding of level `level`'s queue to its exchange: the bit is set, so wait here."""
    return _bit_pattern(level, "1")


def level_skip_pattern(level: int) -> str:
    """Binding of level `level`'s exchange onward: the bit is clear, so skip this level."""
    return _bit_pattern(level, "0")


def next_exchange(level: int, quorum: bool = False) -> str:
    """Where a message goes after level `level` (expired, or skipped)."""
    return DELIVER_EXCHANGE if level == 0 else level_exchange(level - 1, quorum)


def deliver_pattern(queue: str) -> str:
    """Binding of a real queue to `DELIVER_EXCHANGE`: any delay bits, then the queue's name."""
    return "*." * LEVELS + queue


def delay_routing_key(seconds: int, queue: str) -> str:
    """Routing key carrying `seconds` (0 < seconds <= MAX_DELAY_SECONDS) and the queue."""
    return ".".join(format(seconds, f"0{LEVELS}b")) + "." + queue


def destination_of(routing_key: str) -> str:
    """The real queue named by a delay routing key ('' when the key is not one)."""
    parts = routing_key.split(".", LEVELS)
    return parts[LEVELS] if len(parts) > LEVELS else ""


def delay_seconds(ready_at: datetime | None, now: datetime | None = None) -> int:
    """Whole seconds to wait so the message is never early (rounded up, capped at the
    longest delay; a message arriving early is delayed again by the consumer)."""
    if ready_at is None:
        return 0
    remaining = (ready_at - (now or datetime.now(_UTC))).total_seconds()
    if remaining <= 0:
        return 0
    return min(math.ceil(remaining), MAX_DELAY_SECONDS)
