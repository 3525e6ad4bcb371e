"""The Redis keys of a queue, defined once for the Python code and the Lua scripts.

`QueueKey` lists them in the order the scripts receive them as KEYS. Everything else is
derived from it: the key names (`queue_keys`), the positions the Python code reads a key
list at (`QueueKey.WAKE` ...), and the header `_scripts.py` puts in front of every Lua
file (`local MSGS, READY0, ... = KEYS[1], KEYS[2], ...`), so no script names a KEYS index.

1. `msgs`     hash, message id -> stored body (`<priority>|<timeout ms>|<json>`)
2-4. `ready:0`, `ready:1`, `ready:2`  lists of ids ready to take, one per priority
5. `delayed`  sorted set of ids scored by ready time
6. `wake`     list a blocked consumer BLPOPs on; pushed to whenever something may be ready
7. `declared` the queue's mark of being declared (a string key, `1`): set by a declare, and
   by an ENQUEUE that declares the queue; checked by ENQUEUE (`require_declared_queues`),
   TAKE and STATS
8. `inflight` sorted set of taken ids scored by lease deadline
9. `leases`   hash, id -> token of its current lease
10. `dead`    list of dead-lettered ids
11. `state`   hash of counters: `skip0`, `skip1` (anti-starvation), `seq` (lease tokens)
12. `reasons` hash, dead id -> why it was dead-lettered (kept beside the body, which may be
    undecodable; removed when the message is acked, requeued, flushed or deleted)
13. `deliveries` hash, id -> how many of its leases ran out (removed when it is acked,
    nacked or requeued; reject and release leave it)

All of them share the hash tag `{<queue>}`, so they live in one Redis Cluster slot and every
script runs on the one node that owns the queue. The one key outside a queue's slot is the
index of queue names, `<prefix>:queues` (`index_key`): a set used only to list the queues
(`queue_names`, the maintenance loop), never by a script, and updated by the Python side
(see `_registry.py`).

ENQUEUE takes only the keys up to `declared` (`ENQUEUE_KEYS`), so a producer sends fewer
arguments; its header declares only those, and a script that used another would fail
on its first run (Redis refuses undeclared globals).
"""

from __future__ import annotations

import re
from enum import IntEnum, unique


@unique
class QueueKey(IntEnum):
    """One key of a queue. The value is its position in the scripts' KEYS (from 0) and in
    the list `queue_keys` returns; the name is the script's variable for it."""

    MSGS = 0
    READY0 = 1
    READY1 = 2
    READY2 = 3
    DELAYED = 4
    WAKE = 5
    DECLARED = 6
    INFLIGHT = 7
    LEASES = 8
    DEAD = 9
    STATE = 10
    REASONS = 11
    DELIVERIES = 12

    @property
    def suffix(self) -> str:
        """The key's name after the queue's prefix: the lowercase name, with a colon before
        a trailing digit (`READY0` -> `ready:0`)."""
        return re.sub(r"(\d)$", r":\1", self.name.lower())


#: how many keys, from the first, ENQUEUE takes (up to and including `declared`)
ENQUEUE_KEYS = QueueKey.DECLARED + 1


def index_key(prefix: str) -> str:
    """The set of queue names, for listing only (the name repid used before for its
    global set of declared queues, so queues declared then are listed as before)."""
    return f"{prefix}:queues"


def queue_keys(prefix: str, queue: str) -> list[str]:
    """The keys of `queue`, in the order of `QueueKey`, all in the queue's slot."""
    # the hash tag keeps one queue's keys in one cluster slot
    base = f"{prefix}:{{{queue}}}:"
    return [base + key.suffix for key in QueueKey]


def own_keys(keys: list[str]) -> list[str]:
    """The keys holding a queue's messages: all of `keys` but its `declared` mark (what a
    flush empties; a delete removes the mark too)."""
    return [name for key, name in zip(QueueKey, keys, strict=True)
            if key is not QueueKey.DECLARED]


def lua_header(count: int = len(QueueKey)) -> str:
    """The Lua line that names the first `count` keys: `local MSGS, ... = KEYS[1], ...`."""
    used = list(QueueKey)[:count]
    names = ", ".join(key.name for key in used)
    values = ", ".join(f"KEYS[{key + 1}]" for key in used)
    return f"local {names} = {values}\n"
