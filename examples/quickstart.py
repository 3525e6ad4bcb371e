"""Run it with: python examples/quickstart.py

Quickstart: a producer and a worker in one process, on the in-memory broker.
"""

from __future__ import annotations

import asyncio

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Queue,
    Repid,
    Router,
    Worker,
)

router = Router()


@router.actor
async def greet(name: str) -> str:
    """An actor: the function the worker runs for jobs named `greet`."""
    greeting = f"Hello, {name}!"
    print(f"actor greet ran: {greeting}")
    return greeting


app = Repid(
    Connection(
        message_broker=InMemoryMessageBroker(),
        results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True),
    )
)


async def main() -> None:
    async with app.magic(auto_disconnect=True):
        await Queue().declare()
        jobs = [Job("greet", args={"name": name}) for name in ("Ada", "Grace", "Linus")]
        for job in jobs:
            await job.enqueue()
        print(f"enqueued {len(jobs)} jobs")

        runner = await Worker(routers=[router], messages_limit=len(jobs)).run()
        print(f"worker processed {runner.processed} jobs")

        for job in jobs:
            result = await job.result
            assert result is not None
            print(f"result of {job.result_id[:8]}: {result.data!r} (success={result.success})")


if __name__ == "__main__":
    asyncio.run(main())
