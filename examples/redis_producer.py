"""Run it with: python examples/redis_producer.py [A B]   (with redis_consumer.py running)

Redis producer: enqueues a job and prints its result, which redis_consumer.py stores.

Messages and results both live in Redis at $REDIS_CONNECTION_STRING (default
redis://127.0.0.1:6379/0). The result is kept in a `RedisBucketBroker` with
`use_result_bucket=True`, so the producer can `await job.result` from another process.
"""

from __future__ import annotations

import asyncio
import os
import sys

from repid import Connection, Job, Queue, RedisBucketBroker, RedisMessageBroker, Repid

DSN = os.environ.get("REDIS_CONNECTION_STRING", "redis://127.0.0.1:6379/0")

#: the queue both programs use ($REPID_EXAMPLE_QUEUE lets tests run side by side)
QUEUE = os.environ.get("REPID_EXAMPLE_QUEUE", "math")

app = Repid(
    Connection(
        message_broker=RedisMessageBroker(dsn=DSN),
        results_bucket_broker=RedisBucketBroker(dsn=DSN, use_result_bucket=True),
    )
)


async def main(a: int, b: int) -> None:
    async with app.magic(auto_disconnect=True):
        await Queue(QUEUE).declare()
        job = Job("add", queue=QUEUE, args={"a": a, "b": b})
        await job.enqueue()
        print(f"enqueued add({a}, {b}); waiting for the result", flush=True)
        for _ in range(300):  # up to 30 s
            result = await job.result
            if result is not None:
                print(f"result: {result.data} (success={result.success})")
                return
            await asyncio.sleep(0.1)
        raise SystemExit("no result after 30 s: is examples/redis_consumer.py running?")


if __name__ == "__main__":
    numbers = [int(arg) for arg in sys.argv[1:3]] if len(sys.argv) > 2 else [2, 3]
    asyncio.run(main(*numbers))
