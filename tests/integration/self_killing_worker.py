"""A worker process for test_faults_all_brokers: `die` kills this process, `good` records
its number in a Redis set.

Usage: python self_killing_worker.py redis|rabbitmq|rabbitmq_quorum DSN QUEUE RECORD_DSN RECORD_KEY
"""

from __future__ import annotations

import asyncio
import os
import sys

from redis.asyncio import Redis

from repid import Connection, Repid, Router, Worker
from repid.brokers.base import MessageBroker

KIND, DSN, QUEUE, RECORD_DSN, RECORD_KEY = sys.argv[1:6]
router = Router()
recorder: Redis | None = None


@router.actor(queue=QUEUE)
async def die() -> None:
    """Kill this process at once, as an out-of-memory kill or a crash would."""
    os._exit(1)


@router.actor(queue=QUEUE)
async def good(n: int) -> None:
    assert recorder is not None
    await asyncio.sleep(0.05)
    await recorder.sadd(RECORD_KEY, n)


def make_broker() -> MessageBroker:
    if KIND == "redis":
        from datetime import timedelta

        from repid import RedisMessageBroker

        return RedisMessageBroker(dsn=DSN, max_deliveries=3, lease_time=timedelta(seconds=2))
    from repid import RabbitMessageBroker

    if KIND == "rabbitmq_quorum":
        return RabbitMessageBroker(dsn=DSN, max_deliveries=3, queue_type="quorum")
    return RabbitMessageBroker(dsn=DSN, max_deliveries=3)


async def main() -> None:
    global recorder
    recorder = Redis.from_url(RECORD_DSN, decode_responses=True)
    app = Repid(Connection(make_broker()))
    async with app.magic(auto_disconnect=True):
        await Worker(routers=[router], tasks_limit=4, graceful_shutdown_time=1.0).run()
    await recorder.aclose()


if __name__ == "__main__":
    asyncio.run(main())
