"""RabbitMQ broker benchmark: repid beside raw aio-pika, in the same run, on the same server.

    python benchmarks/rabbitmq_bench.py [--dsn amqp://guest:guest@127.0.0.1:5672/] [--scale 1]

Both sides publish persistent messages with publisher confirms and mandatory=True to a
durable priority queue, and consume with the same prefetch, acking each message. Parts:
sequential enqueue, 100 concurrent producers, enqueue_many (vs sequential), no-op
processing with one consumer (broker level, and through the Worker), and 0.1 s sleep jobs
at concurrency 1000. Each prints messages/s for both and the ratio repid/raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from repid import Connection, Job
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq import _topology as topology
from repid.data import Parameters, RoutingKey
from repid.job import Enqueued

RAW_QUEUE_ARGS: dict[str, Any] = {"x-max-priority": topology.MAX_PRIORITY}
ROWS: list[tuple[str, float, float, str]] = []


def report(part: str, repid_rate: float, raw_rate: float, versus: str = "raw") -> None:
    ratio = repid_rate / raw_rate if raw_rate else float("nan")
    ROWS.append((part, repid_rate, raw_rate, versus))
    print(f"{part:<42} repid {repid_rate:>9.0f}/s   {versus:<10} {raw_rate:>9.0f}/s   "
          f"ratio {ratio:5.2f}", flush=True)


def new_key(queue: str) -> RoutingKey:
    return RoutingKey(id_=uuid.uuid4().hex, topic="bench", queue=queue)


class Bench:
    """Holds both clients and one queue for each."""

    def __init__(self, dsn: str, scale: float) -> None:
        self.dsn = dsn
        self.scale = scale
        self.broker = RabbitMessageBroker(dsn)
        self.queue = f"bench-repid-{uuid.uuid4().hex[:8]}"
        self.raw_queue_name = f"bench-raw-{uuid.uuid4().hex[:8]}"

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))

    async def __aenter__(self) -> Bench:
        await self.broker.connect()
        await self.broker.queue_declare(self.queue)
        self.raw = await aio_pika.connect_robust(self.dsn)
        self.raw_channel = await self.raw.channel(publisher_confirms=True,
                                                  on_return_raises=True)
        self.raw_queue = await self.raw_channel.declare_queue(
            self.raw_queue_name, durable=True, arguments=RAW_QUEUE_ARGS)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.broker.queue_delete(self.queue)
        await self.raw_queue.delete(if_unused=False, if_empty=False)
        await self.raw.close()
        await self.broker.disconnect()

    # --- one message each way ---

    async def repid_enqueue(self) -> None:
        await self.broker.enqueue(new_key(self.queue), '{"x": 1}', Parameters())

    async def raw_publish(self) -> None:
        await self.raw_channel.default_exchange.publish(
            aio_pika.Message(b'{"x": 1}', delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             headers={"id": uuid.uuid4().hex}),
            routing_key=self.raw_queue_name, mandatory=True)

    async def purge(self) -> None:
        await self.broker.queue_flush(self.queue)
        await self.raw_queue.purge()

    # --- parts ---

    @staticmethod
    async def sequential(fn: Callable[[], Awaitable[object]], count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            await fn()
        return count / (time.perf_counter() - started)

    @staticmethod
    async def concurrent(fn: Callable[[], Awaitable[object]], count: int,
                         producers: int) -> float:
        per = count // producers

        async def producer() -> None:
            for _ in range(per):
                await fn()

        started = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        return per * producers / (time.perf_counter() - started)

    async def part_enqueue(self) -> None:
        """Rounds alternate between the two sides so drift on a shared machine hits both."""
        await self.sequential(self.repid_enqueue, 50)  # warm up
        await self.sequential(self.raw_publish, 50)
        n = self.n(400)
        r, w = await self.alternate(lambda: self.sequential(self.repid_enqueue, n),
                                    lambda: self.sequential(self.raw_publish, n))
        report("enqueue, sequential", r, w)
        self.sequential_rate = r
        n = self.n(3000)
        r, w = await self.alternate(lambda: self.concurrent(self.repid_enqueue, n, 100),
                                    lambda: self.concurrent(self.raw_publish, n, 100))
        report("enqueue, 100 concurrent producers", r, w)
        await self.purge()
        # the same through the public API, as users write it: `await Job(...).enqueue()`,
        # a Job built for each message
        connection, queue = Connection(self.broker), self.queue

        def job_enqueue() -> Awaitable[Enqueued]:
            return Job("noop", queue=queue, args={"x": 1}, _connection=connection).enqueue()

        n = self.n(400)
        r, w = await self.alternate(lambda: self.sequential(job_enqueue, n),
                                    lambda: self.sequential(self.raw_publish, n))
        report("Job(...).enqueue(), sequential", r, w)
        n = self.n(3000)
        r, w = await self.alternate(lambda: self.concurrent(job_enqueue, n, 100),
                                    lambda: self.concurrent(self.raw_publish, n, 100))
        report("Job(...).enqueue(), 100 producers", r, w)
        await self.purge()

    @staticmethod
    async def alternate(repid_part: Callable[[], Awaitable[float]],
                        raw_part: Callable[[], Awaitable[float]],
                        rounds: int = 5,
                        before_round: Callable[[], Awaitable[None]] | None = None,
                        ) -> tuple[float, float]:
        """Median rate of each side over `rounds` alternating runs (robust to other load
        on a shared machine)."""
        repid_rates, raw_rates = [], []
        for i in range(rounds):
            if before_round is not None:
                await before_round()
            if i % 2:
                raw_rates.append(await raw_part())
                repid_rates.append(await repid_part())
            else:
                repid_rates.append(await repid_part())
                raw_rates.append(await raw_part())
        return statistics.median(repid_rates), statistics.median(raw_rates)

    async def part_enqueue_many(self) -> None:
        n = self.n(6000)
        batch = [(new_key(self.queue), '{"x": 1}', Parameters()) for _ in range(n)]
        started = time.perf_counter()
        await self.broker.enqueue_many(batch)
        many = n / (time.perf_counter() - started)
        report("enqueue_many vs sequential enqueue", many, self.sequential_rate, "sequential")
        await self.purge()

    async def fill(self, n: int) -> None:
        await self.broker.enqueue_many(
            (new_key(self.queue), '{"x": 1}', Parameters()) for _ in range(n))
        sem = asyncio.Semaphore(1000)

        async def one() -> None:
            async with sem:
                await self.raw_publish()

        await asyncio.gather(*(one() for _ in range(n)))

    async def repid_consume(self, n: int, prefetch: int, work: float | None) -> float:
        consumer = self.broker.consume(self.queue, max_unacked_messages=prefetch)
        await consumer.start()
        slots = asyncio.Semaphore(prefetch)
        tasks: set[asyncio.Task[None]] = set()

        async def job(key: RoutingKey) -> None:
            if work is not None:
                await asyncio.sleep(work)
            await self.broker.ack(key)
            slots.release()

        started = time.perf_counter()
        for _ in range(n):
            await slots.acquire()
            key, _, _ = await consumer.__anext__()
            # a task per message, as the Worker does (and as aio-pika runs raw callbacks)
            task = asyncio.create_task(job(key))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        await consumer.finish()
        return n / elapsed

    async def raw_consume(self, n: int, prefetch: int, work: float | None) -> float:
        channel = await self.raw.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(self.raw_queue_name, ensure=False)
        done = asyncio.Event()
        count = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal count
            if work is not None:
                await asyncio.sleep(work)
            await message.ack()
            count += 1
            if count >= n:
                done.set()

        started = time.perf_counter()
        tag = await queue.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await channel.close()
        return n / elapsed

    async def consume_part(self, label: str, n: int, work: float | None) -> float:
        """Each round refills both queues with `n` messages and drains both."""
        async def refill() -> None:
            await self.purge()
            await self.fill(n)

        r, w = await self.alternate(lambda: self.repid_consume(n, 1000, work),
                                    lambda: self.raw_consume(n, 1000, work),
                                    before_round=refill)
        report(label, r, w)
        await self.purge()
        return w

    async def part_noop(self) -> None:
        self.raw_noop = await self.consume_part("no-op processing, 1 consumer (broker)",
                                                self.n(3000), None)

    async def part_sleep(self) -> None:
        self.raw_sleep = await self.consume_part("0.1 s sleep jobs, concurrency 1000",
                                                 self.n(6000), 0.1)

    async def part_worker(self) -> None:
        """The same two workloads through repid's Worker (core overhead included)."""
        from repid import Router, Worker
        connection = Connection(self.broker)
        await connection.connect()  # so the Worker leaves it open when it stops
        router = Router()

        @router.actor(name="noop", queue=self.queue)
        async def noop() -> None:
            return None

        @router.actor(name="nap", queue=self.queue)
        async def nap() -> None:
            await asyncio.sleep(0.1)

        for name, count, raw_rate in (("noop", self.n(4000), self.raw_noop),
                                      ("nap", self.n(8000), self.raw_sleep)):
            job = Job(name, queue=self.queue, _connection=connection)
            sem = asyncio.Semaphore(1000)

            async def push(j: Job = job, s: asyncio.Semaphore = sem) -> None:
                async with s:
                    await j.enqueue()

            await asyncio.gather(*(push() for _ in range(count)))
            worker = Worker(routers=[router], messages_limit=count, tasks_limit=1000,
                            handle_signals=[], auto_declare=False, _connection=connection)
            started = time.perf_counter()
            runner = await worker.run()
            rate = runner.processed / (time.perf_counter() - started)
            label = ("no-op jobs through Worker" if name == "noop"
                     else "0.1 s sleep jobs through Worker, 1000")
            report(label, rate, raw_rate)
            await self.purge()

    raw_noop = 0.0
    raw_sleep = 0.0
    sequential_rate = 0.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=os.environ.get(
        "REPID_TEST_AMQP_DSN", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every message count (e.g. 0.2 for a quick run)")
    parser.add_argument("--worker", action="store_true",
                        help="also run the no-op and sleep workloads through the Worker")
    args = parser.parse_args()
    async with Bench(args.dsn, args.scale) as bench:
        await bench.part_enqueue()
        await bench.part_enqueue_many()
        await bench.part_noop()
        await bench.part_sleep()
        if args.worker:
            await bench.part_worker()


if __name__ == "__main__":
    asyncio.run(main())
