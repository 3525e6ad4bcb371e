"""Run it with: python examples/redis_consumer.py [MESSAGES]

Redis consumer: a Worker that runs `add` jobs and stores their results in Redis.

It connects to $REDIS_CONNECTION_STRING (default redis://127.0.0.1:6379/0) and runs MESSAGES
jobs from the `math` queue, or runs until Ctrl-C (SIGINT) or SIGTERM. The Redis broker
leases each message it hands out: if this process dies mid-job, the job comes back to
another worker. The same router runs under the CLI with
`REPID_BROKER_DSN=redis://127.0.0.1:6379/0 REPID_RESULTS_BUCKET_DSN=redis://127.0.0.1:6379/0
repid worker examples.redis_consumer:router`.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys

from repid import Connection, RedisBucketBroker, RedisMessageBroker, Repid, Router, Worker

DSN = os.environ.get("REDIS_CONNECTION_STRING", "redis://127.0.0.1:6379/0")

#: the queue both programs use ($REPID_EXAMPLE_QUEUE lets tests run side by side)
QUEUE = os.environ.get("REPID_EXAMPLE_QUEUE", "math")

router = Router()


@router.actor(queue=QUEUE)
async def add(a: int, b: int) -> int:
    """Add two numbers; the return value becomes the job's result."""
    print(f"adding {a} + {b}", flush=True)
    return a + b


app = Repid(
    Connection(
        message_broker=RedisMessageBroker(dsn=DSN),
        results_bucket_broker=RedisBucketBroker(dsn=DSN, use_result_bucket=True),
    )
)


async def main(messages: float) -> None:
    async with app.magic(auto_disconnect=True):
        print("worker ready", flush=True)
        runner = await Worker(routers=[router], messages_limit=messages).run()
    print(f"worker processed {runner.processed} messages")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else math.inf))
