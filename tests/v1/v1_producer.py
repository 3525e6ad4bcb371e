"""Run by the interpreter of a throwaway virtualenv holding the real repid 1.6.0: writes
repid 1.x data (ready, delayed and dead messages, args and result buckets) for the
migration tests and prints what it wrote as JSON.

Usage: python v1_producer.py redis|amqp MESSAGE_DSN BUCKET_DSN QUEUE
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta

from repid import Connection, Job, Queue, Repid, Router, Worker
from repid.data import PrioritiesT


def connection(kind: str, message_dsn: str, bucket_dsn: str) -> Connection:
    from repid import RedisBucketBroker

    if kind == "redis":
        from repid import RedisMessageBroker

        broker = RedisMessageBroker(message_dsn)
    else:
        from repid import RabbitMessageBroker

        broker = RabbitMessageBroker(message_dsn)
    return Connection(broker, args_bucket_broker=RedisBucketBroker(bucket_dsn),
                      results_bucket_broker=RedisBucketBroker(bucket_dsn,
                                                              use_result_bucket=True))


async def main(kind: str, message_dsn: str, bucket_dsn: str, queue_name: str) -> None:
    app = Repid(connection(kind, message_dsn, bucket_dsn))
    router = Router()

    @router.actor(queue=queue_name)
    async def v1_ok(value: int) -> dict:
        return {"doubled": value * 2}

    @router.actor(queue=queue_name)
    async def v1_fail(value: int) -> None:
        raise ValueError(f"refused {value}")

    out: dict = {"ready": [], "delayed_soon": [], "delayed_far": [], "recurring": [],
                 "dead": [], "results": {}, "args_buckets": []}
    async with app.magic(auto_disconnect=True):
        queue = Queue(queue_name)
        await queue.declare()
        # a v1 worker runs these two: one stores its result, one is dead-lettered
        done = Job("v1_ok", queue=queue, args={"value": 21}, store_result=True,
                   use_args_bucketer=False)
        await done.enqueue()
        dead = Job("v1_fail", queue=queue, args={"value": 7}, id_="dead-1",
                   store_result=False, use_args_bucketer=False)
        await dead.enqueue()
        await Worker(routers=[router], messages_limit=2, graceful_shutdown_time=1).run()
        out["results"][done.result_id] = {"doubled": 42}
        out["dead"].append("dead-1")

        # ready messages in all three priorities, with a retry count and a ttl
        for i, priority in enumerate([PrioritiesT.LOW, PrioritiesT.MEDIUM, PrioritiesT.HIGH,
                                      PrioritiesT.MEDIUM]):
            job = Job("v1_ok", queue=queue, args={"value": i}, id_=f"ready-{i}",
                      priority=priority, retries=2, ttl=timedelta(hours=1),
                      timeout=timedelta(seconds=30), result_id=f"res-{i}-{queue_name}",
                      store_result=True, use_args_bucketer=False)
            await job.enqueue()
            out["ready"].append(f"ready-{i}")
        # one whose arguments wait in an args bucket
        job = Job("v1_ok", queue=queue, args={"value": 100}, id_="ready-bucketed",
                  args_id=f"args-{queue_name}", use_args_bucketer=True, store_result=False)
        await job.enqueue()
        out["ready"].append("ready-bucketed")
        out["args_buckets"].append(f"args-{queue_name}")
        # delayed: one due in a few seconds, one in an hour, one recurring every hour
        soon = Job("v1_ok", queue=queue, args={"value": 5}, id_="delayed-soon",
                   deferred_until=datetime.now() + timedelta(seconds=4),
                   store_result=False, use_args_bucketer=False)
        await soon.enqueue()
        out["delayed_soon"].append("delayed-soon")
        far = Job("v1_ok", queue=queue, args={"value": 6}, id_="delayed-far",
                  deferred_until=datetime.now() + timedelta(hours=1),
                  store_result=False, use_args_bucketer=False)
        await far.enqueue()
        out["delayed_far"].append("delayed-far")
        every = Job("v1_ok", queue=queue, args={"value": 8}, id_="recurring-1",
                    deferred_by=timedelta(hours=2), store_result=False,
                    use_args_bucketer=False)
        await every.enqueue()
        out["recurring"].append("recurring-1")
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
