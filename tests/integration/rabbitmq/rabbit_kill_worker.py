"""A worker process for test_rabbit_kill: runs `record` jobs from one RabbitMQ queue.

Usage: python rabbit_kill_worker.py DSN QUEUE LOG_FILE SECONDS_PER_JOB
Each run appends `start <n> <pid>` and, after sleeping, `done <n> <pid>` to LOG_FILE.
"""

from __future__ import annotations

import asyncio
import os
import sys

from repid import Connection, RabbitMessageBroker, Repid, Router, Worker

DSN, QUEUE, LOG_FILE, SECONDS = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
router = Router()


def _log(line: str) -> None:
    with open(LOG_FILE, "a", encoding="utf-8") as f:
        f.write(f"{line} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


@router.actor(queue=QUEUE)
async def record(n: int) -> None:
    """Write down that job `n` started, work a while, write down that it finished."""
    _log(f"start {n}")
    await asyncio.sleep(SECONDS)
    _log(f"done {n}")


async def main() -> None:
    app = Repid(Connection(RabbitMessageBroker(dsn=DSN)))
    async with app.magic(auto_disconnect=True):
        await Worker(routers=[router], tasks_limit=4, graceful_shutdown_time=1.0).run()


if __name__ == "__main__":
    asyncio.run(main())
