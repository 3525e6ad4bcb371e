"""The worker of the soak benchmark: `repid worker benchmarks/soak_app.py:worker`.

The broker comes from REPID_BROKER_DSN (the CLI reads it); the queue from SOAK_QUEUE.
Each job records that it ran by incrementing its own field of the hash
`<SOAK_RECORD_PREFIX>:runs` in the Redis at SOAK_RECORD_DSN, after its work and before
its message is acknowledged. A field above 1 is a job that ran more than once; a missing
field is a job that never ran to the end. That Redis is never the one the soak restarts.
"""

from __future__ import annotations

import asyncio
import os

from redis.asyncio import BlockingConnectionPool, Redis

from repid import Connection, Router, Worker

QUEUE = os.environ.get("SOAK_QUEUE", "soak")
RECORD_DSN = os.environ.get("SOAK_RECORD_DSN", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("SOAK_RECORD_PREFIX", "soak")
#: seconds each job works, so that a killed worker process dies with jobs half-way
WORK_SECONDS = float(os.environ.get("SOAK_WORK_SECONDS", "0.1"))

RUNS_KEY = f"{PREFIX}:runs"

router = Router()
_records: Redis | None = None


def records() -> Redis:
    """The client of the record store, made on first use (inside the worker's loop). Its
    pool makes jobs wait for one of 50 connections rather than fail when all are busy."""
    global _records
    if _records is None:
        pool = BlockingConnectionPool.from_url(RECORD_DSN, max_connections=50, timeout=30,
                                               socket_timeout=5, socket_connect_timeout=5)
        _records = Redis(connection_pool=pool)
    return _records


@router.actor(queue=QUEUE)
async def soak_job(n: int) -> None:
    """Work a little, then count one run of job `n`."""
    await asyncio.sleep(WORK_SECONDS)
    await records().hincrby(RUNS_KEY, str(n), 1)


worker = Worker(routers=[router], graceful_shutdown_time=5)

#: with SOAK_QUEUE_TYPE (quorum), the connection the workers use (`--app`): a RabbitMQ
#: broker with that queue type, on every node of REPID_BROKER_DSN
app: Connection | None = None
if os.environ.get("SOAK_QUEUE_TYPE"):
    from repid import RabbitMessageBroker

    app = Connection(RabbitMessageBroker(os.environ["REPID_BROKER_DSN"],
                                         queue_type=os.environ["SOAK_QUEUE_TYPE"]))
