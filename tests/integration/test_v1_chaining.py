"""The v1 cookbook's job chaining on every message broker, with one Redis as both the args
and the results bucket broker: the first job's result is the second job's arguments."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from broker_kinds import message_broker

from repid import (
    Connection,
    Job,
    Queue,
    RedisBucketBroker,
    Repid,
    Router,
    Worker,
)

pytestmark = pytest.mark.integration

TIMEOUT = 15


@pytest.mark.parametrize("kind", ["in_memory", "redis", "rabbitmq"])
async def test_cookbook_chaining(kind: str, request: pytest.FixtureRequest,
                                 redis_dsn: str) -> None:
    buckets = RedisBucketBroker(redis_dsn, use_result_bucket=True)
    app = Repid(Connection(message_broker(kind, request), args_bucket_broker=buckets,
                           results_bucket_broker=buckets))
    queue_name = f"chain-{uuid.uuid4().hex[:10]}"
    router = Router()
    got: list[tuple[int, int]] = []

    @router.actor(queue=queue_name)
    async def measure(width: int, height: int) -> dict[str, int]:
        return {"area": width * height, "perimeter": 2 * (width + height)}

    @router.actor(queue=queue_name)
    async def report(area: int, perimeter: int) -> None:
        got.append((area, perimeter))

    async with app.magic(auto_disconnect=True):
        queue = Queue(queue_name)
        await queue.declare()
        try:
            first = Job("measure", queue=queue_name, args={"width": 3, "height": 4})
            await first.enqueue()
            await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
            second = Job("report", queue=queue_name, args_id=first.result_id)
            await second.enqueue()
            await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
        finally:
            await queue.delete()
    assert got == [(12, 14)]
