"""A worker process for test_redis_kill: runs `record` jobs from one Redis queue.

Usage: python redis_kill_worker.py DSN QUEUE RUNS_KEY SECONDS_PER_JOB LEASE_SECONDS
Each run adds `start:<n>:<pid>` to the Redis set RUNS_KEY and, after sleeping,
`done:<n>:<pid>`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

from redis.asyncio import Redis

from repid import Connection, RedisMessageBroker, Repid, Router, Worker

DSN, QUEUE, RUNS_KEY = sys.argv[1], sys.argv[2], sys.argv[3]
SECONDS, LEASE = float(sys.argv[4]), float(sys.argv[5])
router = Router()
recorder: Redis | None = None


@router.actor(queue=QUEUE)
async def record(n: int) -> None:
    """Write down that job `n` started, work a while, write down that it finished."""
    assert recorder is not None
    await recorder.sadd(RUNS_KEY, f"start:{n}:{os.getpid()}")
    await asyncio.sleep(SECONDS)
    await recorder.sadd(RUNS_KEY, f"done:{n}:{os.getpid()}")


async def main() -> None:
    global recorder
    recorder = Redis.from_url(DSN, decode_responses=True)
    broker = RedisMessageBroker(dsn=DSN, lease_time=timedelta(seconds=LEASE))
    app = Repid(Connection(broker))
    async with app.magic(auto_disconnect=True):
        await Worker(routers=[router], tasks_limit=4, graceful_shutdown_time=1.0).run()
    await recorder.aclose()


if __name__ == "__main__":
    asyncio.run(main())
