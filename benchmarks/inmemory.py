"""In-memory broker: enqueue and no-op processing rates, with no plugin and with a no-op
wrapper plugin on every hook, side by side in one run.

Run it with: python benchmarks/inmemory.py [--jobs 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import NoopPlugin, rate, table

from repid import Connection, InMemoryMessageBroker, Job, Router, Worker

router = Router()


@router.actor
async def noop() -> None:
    """Does nothing: measures the framework, not the job."""


async def measure(jobs: int, plugins: Sequence[object]) -> tuple[float, float]:
    connection = Connection(InMemoryMessageBroker(), plugins=plugins)
    await connection.connect()
    await connection.message_broker.queue_declare("default")
    job = Job("noop", _connection=connection)

    async def enqueue_all() -> None:
        for _ in range(jobs):
            await job.enqueue()

    async def process_all() -> None:
        worker = Worker(routers=[router], messages_limit=jobs, handle_signals=[],
                        _connection=connection)
        await worker.run()

    gc.collect()
    enqueued = await rate(jobs, enqueue_all)
    gc.collect()
    processed = await rate(jobs, process_all)
    return enqueued, processed


async def main(jobs: int, rounds: int) -> None:
    best: dict[str, list[float]] = {"none": [0, 0], "noop": [0, 0]}
    for _ in range(rounds):  # alternate, keep the best of each, to even out noise
        for name, plugins in (("none", []), ("noop", [NoopPlugin()])):
            e, p = await measure(jobs, plugins)
            best[name] = [max(best[name][0], e), max(best[name][1], p)]
    print(f"in-memory broker, {jobs:,} jobs, best of {rounds} rounds, Python "
          f"{sys.version.split()[0]}")
    print(table([("enqueue", best["none"][0], best["noop"][0]),
                 ("no-op processing", best["none"][1], best["noop"][1])],
                "no plugin", "no-op plugin"))
    for i, what in enumerate(("enqueue", "processing")):
        cost = 1 - best["noop"][i] / best["none"][i]
        print(f"no-op plugin costs {cost:.1%} of {what} throughput")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.rounds))
