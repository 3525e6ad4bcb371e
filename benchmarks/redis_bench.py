"""Redis broker benchmark: repid beside raw redis-py, in the same run, on the same server.

    python benchmarks/redis_bench.py [--dsn redis://127.0.0.1:6379/0] [--scale 1]

Parts, each printing messages/s for repid and for raw redis-py and the ratio repid/raw:

- enqueue: sequential `broker.enqueue` (atomic script: dedup, declared-queue check,
  priority list, wake-up) vs sequential LPUSH; and the same with 100 concurrent producers;
  then both through the public API, `await Job(...).enqueue()`.
- no-op: a Worker running a no-op actor over a pre-filled queue (take, run, ack with a
  lease each) vs a raw BRPOP loop that only pops.
- sleep: a Worker running 0.1 s `asyncio.sleep` jobs with tasks_limit=1000 vs a raw BRPOP
  loop that starts each job as a task, at most 1000 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from repid import Connection, Job, RedisMessageBroker, Router, Worker
from repid.data import Parameters, RoutingKey

ROWS: list[tuple[str, float, float]] = []


def report(part: str, repid_rate: float, raw_rate: float) -> None:
    """Print one line: both rates and their ratio."""
    ROWS.append((part, repid_rate, raw_rate))
    print(f"{part:<34} repid {repid_rate:>9.0f}/s   raw {raw_rate:>9.0f}/s   "
          f"ratio {repid_rate / raw_rate:5.2f}", flush=True)


async def timed(n: int, run: Callable[[], Awaitable[Any]]) -> float:
    """Seconds `run()` takes (it handles `n` messages; kept for symmetry of calls)."""
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def compare(part: str, n: int, rounds: int,
                  ours: Callable[[int], Awaitable[Any]],
                  raw: Callable[[int], Awaitable[Any]]) -> None:
    """Run both sides in alternating rounds of n/rounds messages (the host is shared, so
    drifting load hits both alike) and report the total rates."""
    per = max(1, n // rounds)
    ours_time = raw_time = 0.0
    for i in range(rounds):
        if i % 2:
            ours_time += await timed(per, lambda: ours(per))
            raw_time += await timed(per, lambda: raw(per))
        else:
            raw_time += await timed(per, lambda: raw(per))
            ours_time += await timed(per, lambda: ours(per))
    report(part, per * rounds / ours_time, per * rounds / raw_time)


def message(queue: str, topic: str) -> tuple[RoutingKey, str, Parameters]:
    return RoutingKey(uuid.uuid4().hex, topic, queue), "", Parameters()


class Bench:
    """Holds the broker, a raw client and the queues of one run."""

    def __init__(self, dsn: str, scale: float) -> None:
        self.dsn = dsn
        self.scale = scale
        self.broker = RedisMessageBroker(dsn)
        self.connection = Connection(self.broker)
        self.raw = Redis.from_url(dsn)
        self.queues: list[str] = []
        self.raw_keys: list[str] = []

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))

    async def queue(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        await self.broker.queue_declare(name)
        self.queues.append(name)
        return name

    def raw_key(self) -> str:
        key = f"bench-raw-{uuid.uuid4().hex[:8]}"
        self.raw_keys.append(key)
        return key

    async def close(self) -> None:
        for q in self.queues:
            await self.broker.queue_delete(q)
        if self.raw_keys:
            await self.raw.delete(*self.raw_keys)
        await self.raw.aclose()
        await self.connection.disconnect()

    async def enqueue(self) -> None:
        n = self.n(6000)
        queue, key = await self.queue(), self.raw_key()
        body = b"x" * 200  # about the size of a stored message
        # messages are built before the clock starts: both sides time only the sending
        pool = [message(queue, "noop") for _ in range(2 * n)]

        def prebuilt(count: int) -> list[tuple[RoutingKey, str, Parameters]]:
            taken = pool[:count]
            del pool[:count]
            return taken

        async def ours(count: int) -> None:
            for m in prebuilt(count):
                await self.broker.enqueue(*m)

        async def raw(count: int) -> None:
            for _ in range(count):
                await self.raw.lpush(key, body)

        await compare("enqueue, sequential", n, 6, ours, raw)

        async def ours_concurrent(count: int) -> None:
            messages = prebuilt(count)

            async def producer(part: list[tuple[RoutingKey, str, Parameters]]) -> None:
                for m in part:
                    await self.broker.enqueue(*m)
            await asyncio.gather(*(producer(messages[i::100]) for i in range(100)))

        async def raw_concurrent(count: int) -> None:
            async def producer(k: int) -> None:
                for _ in range(k):
                    await self.raw.lpush(key, body)
            await asyncio.gather(*(producer(len(range(i, count, 100))) for i in range(100)))

        await compare("enqueue, 100 producers", n, 6, ours_concurrent, raw_concurrent)

        # the same through the public API, as users write it: `await Job(...).enqueue()`,
        # a Job built for each message
        connection = self.connection

        async def job_enqueue() -> None:
            await Job("noop", queue=queue, args={"n": 1}, _connection=connection).enqueue()

        async def job_sequential(count: int) -> None:
            for _ in range(count):
                await job_enqueue()

        await compare("Job(...).enqueue(), sequential", n, 6, job_sequential, raw)

        async def job_concurrent(count: int) -> None:
            async def producer(k: int) -> None:
                for _ in range(k):
                    await job_enqueue()
            await asyncio.gather(*(producer(len(range(i, count, 100))) for i in range(100)))

        await compare("Job(...).enqueue(), 100 producers", n, 6, job_concurrent,
                      raw_concurrent)

    async def _fill(self, queue: str, key: str, n: int, topic: str) -> None:
        for start in range(0, n, 1000):
            count = min(1000, n - start)
            await self.broker.enqueue_many(message(queue, topic) for _ in range(count))
            await self.raw.lpush(key, *[b"x" * 200] * count)

    async def _worker(self, queue: str, n: int, actor: Callable[..., Awaitable[None]],
                      tasks_limit: int) -> None:
        router = Router()
        router.actor(name=actor.__name__, queue=queue)(actor)
        worker = Worker(routers=[router], tasks_limit=tasks_limit, messages_limit=n,
                        handle_signals=[], auto_declare=False, _connection=self.connection)
        await worker.run()

    async def noop(self) -> None:
        n = self.n(12000)
        queue, key = await self.queue(), self.raw_key()
        await self._fill(queue, key, n, "noop")

        async def noop() -> None:
            return None

        async def raw(count: int) -> None:
            for _ in range(count):
                await self.raw.brpop([key], timeout=5)

        await compare("no-op, one worker", n, 4, lambda c: self._worker(queue, c, noop, 1000),
                      raw)

    async def sleep(self) -> None:
        n = self.n(12000)
        queue, key = await self.queue(), self.raw_key()
        await self._fill(queue, key, n, "sleepy")

        async def sleepy() -> None:
            await asyncio.sleep(0.1)

        async def raw(count: int) -> None:
            slots = asyncio.Semaphore(1000)
            tasks = set()

            async def job() -> None:
                try:
                    await asyncio.sleep(0.1)
                finally:
                    slots.release()

            for _ in range(count):
                await slots.acquire()
                await self.raw.brpop([key], timeout=5)
                task = asyncio.create_task(job())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

        await compare("0.1 s sleep, concurrency 1000", n, 4,
                      lambda c: self._worker(queue, c, sleepy, 1000), raw)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every message count by this")
    args = parser.parse_args()
    bench = Bench(args.dsn, args.scale)
    await bench.connection.connect()
    try:
        await bench.enqueue()
        await bench.noop()
        await bench.sleep()
    finally:
        await bench.close()


if __name__ == "__main__":
    asyncio.run(main())
