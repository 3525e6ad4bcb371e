"""A worker process for test_rabbit_faults: its `crash` actor ends the process at once.

Usage: python rabbit_exit_worker.py DSN QUEUE LOG_FILE MAX_DELIVERIES
The first time the worker asks for a message's delivery count, `<count> <job id>` is
appended to LOG_FILE; `crash` then calls os._exit(1), as a crash or an
out-of-memory kill would.
"""

from __future__ import annotations

import asyncio
import os
import sys

from repid import Connection, Delivery, RabbitMessageBroker, Repid, Router, Worker
from repid.data import RoutingKey

DSN, QUEUE, LOG_FILE, MAX_DELIVERIES = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
router = Router()


class CountLoggingBroker(RabbitMessageBroker):
    logged: set[int] = set()

    def delivery_count(self, message: RoutingKey | Delivery) -> int:
        count = super().delivery_count(message)
        key = message.key if isinstance(message, Delivery) else message
        if id(key.handle) in self.logged:
            return count
        self.logged.add(id(key.handle))
        with open(LOG_FILE, "a", encoding="utf-8") as f:
            f.write(f"{count} {key.id_}\n")
            f.flush()
            os.fsync(f.fileno())
        return count


@router.actor(queue=QUEUE)
async def crash() -> None:
    os._exit(1)


async def main() -> None:
    app = Repid(Connection(CountLoggingBroker(dsn=DSN, max_deliveries=MAX_DELIVERIES)))
    async with app.magic(auto_disconnect=True):
        await Worker(routers=[router], tasks_limit=1, graceful_shutdown_time=1.0).run()


if __name__ == "__main__":
    asyncio.run(main())
