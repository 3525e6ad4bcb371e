"""Notice messages repid 1.x left in Redis for a queue, which this version does not read.

repid 1.x kept a queue's messages under `q:<queue>:<priority>:<n | d | dead>` (see
`v1_migration.py`); this version never reads those keys. Declaring a queue (as a worker
does at start) checks them with one EXISTS and logs a warning naming
`repid migrate-v1 --apply` when any exists. It warns rather than raises: during an upgrade
1.x producers may still be writing there, and the worker keeps serving the messages of
this version meanwhile.
"""

from __future__ import annotations

import logging

from repid.brokers.redis._client import AnyRedis

logger = logging.getLogger("repid.brokers.redis")

#: the priorities repid 1.x used (LOW, MEDIUM, HIGH)
V1_PRIORITIES = (0, 5, 9)


def v1_holders_of(queue: str) -> list[str]:
    """The 1.x keys that hold `queue`'s message names: ready lists (`n`), delayed sets
    (`d`) and dead lists (`dead`), for each 1.x priority."""
    return [f"q:{queue}:{priority}:{kind}" for priority in V1_PRIORITIES
            for kind in ("n", "d", "dead")]


async def warn_if_v1_data(client: AnyRedis, queue: str) -> bool:
    """Log a warning, and return True, when repid 1.x left messages for `queue`."""
    found = int(await client.exists(*v1_holders_of(queue)))
    if found:
        logger.warning(
            "Redis holds messages that repid 1.x left for queue %r (keys q:%s:*); this "
            "version does not read them. Run `repid migrate-v1 --apply` (with the same "
            "REPID_BROKER_DSN) to move them into the queue; `repid migrate-v1` alone shows "
            "what it would move.", queue, queue)
    return bool(found)
