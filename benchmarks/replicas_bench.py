"""The cost of `confirm_replicas=1` (a WAIT after every enqueue and settle), measured
through the public API against a private master, replica and three sentinels started on
this machine (`tests/servers/redis_sentinel.py`), both settings side by side in one run.

    python benchmarks/replicas_bench.py [--scale 1] [--base-port 7215]

Parts, each printing jobs/s without and with the setting and their ratio, in alternating
rounds so drifting load on the shared host hits both alike:

- `Job(...).enqueue()`, sequential: one producer, each enqueue awaited;
- `Job(...).enqueue()`, 100 producers at once (the broker's group commit sends their
  enqueues together, so one WAIT covers many);
- no-op: a Worker (tasks_limit=1000) running a no-op actor over a pre-filled queue (each
  job taken, run and acked; with the setting, every ack batch waits for the replica).

The servers use the ports `base-port`, `+1` and `+10..+12` on 127.0.0.1, and are stopped
at the end, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the private server launchers live in tests/servers

from redis.asyncio import Redis  # noqa: E402

from repid import Connection, Job, RedisMessageBroker, Router, Worker  # noqa: E402
from repid.queue import Queue  # noqa: E402

ROWS: list[tuple[str, float, float, float]] = []


def report(part: str, off: float, on: float, waits: float) -> None:
    """Print one line: both rates, their ratio, and the WAITs per confirmed job."""
    ROWS.append((part, off, on, waits))
    print(f"{part:<36} no WAIT {off:>8.0f}/s   confirm_replicas=1 {on:>8.0f}/s   "
          f"ratio {on / off:5.2f}   WAITs per job {waits:.3f}", flush=True)


async def wait_calls(master: Redis) -> int:
    """How many WAIT commands the master has run (INFO commandstats)."""
    stats = await master.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def compare(part: str, n: int, rounds: int, run: Callable[[bool, int], Awaitable[Any]],
                  master: Redis) -> None:
    """`run(confirmed, count)` in alternating rounds of n/rounds jobs per setting; report the
    total rate of each, and how many WAITs the confirmed jobs took."""
    per = max(1, n // rounds)
    spent = {False: 0.0, True: 0.0}
    waits_before = await wait_calls(master)
    for i in range(rounds):
        for confirmed in ((False, True) if i % 2 else (True, False)):
            start = time.perf_counter()
            await run(confirmed, per)
            spent[confirmed] += time.perf_counter() - start
    waits = (await wait_calls(master) - waits_before) / (per * rounds)
    report(part, per * rounds / spent[False], per * rounds / spent[True], waits)


class Bench:
    """Two connections to the same service, one of each setting, and the run's queues."""

    def __init__(self, dsn: str, master_port: int, scale: float) -> None:
        self.scale = scale
        #: the master itself, for its command counts (the run has no failover)
        self.master = Redis(host="127.0.0.1", port=master_port, decode_responses=True)
        self.connections = {
            False: Connection(RedisMessageBroker(dsn)),
            True: Connection(RedisMessageBroker(dsn, confirm_replicas=1, replica_timeout=1.0)),
        }
        self.queues: list[str] = []

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))

    async def open(self) -> None:
        for connection in self.connections.values():
            await connection.connect()

    async def queue(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        await Queue(name, _connection=self.connections[False]).declare()
        self.queues.append(name)
        return name

    async def close(self) -> None:
        for name in self.queues:
            await Queue(name, _connection=self.connections[False]).delete()
        for connection in self.connections.values():
            await connection.disconnect()
        await self.master.aclose()

    async def enqueue(self) -> None:
        queue = await self.queue()

        async def one(confirmed: bool) -> None:
            await Job("noop", queue=queue, args={"n": 1},
                      _connection=self.connections[confirmed]).enqueue()

        async def sequential(confirmed: bool, count: int) -> None:
            for _ in range(count):
                await one(confirmed)

        await compare("Job(...).enqueue(), sequential", self.n(6000), 10, sequential,
                      self.master)

        async def concurrent(confirmed: bool, count: int) -> None:
            async def producer(k: int) -> None:
                for _ in range(k):
                    await one(confirmed)
            await asyncio.gather(*(producer(len(range(i, count, 100))) for i in range(100)))

        await compare("Job(...).enqueue(), 100 producers", self.n(20000), 10, concurrent,
                      self.master)

    async def noop(self) -> None:
        queues = {False: await self.queue(), True: await self.queue()}

        async def noop() -> None:
            return None

        async def fill(queue: str, count: int) -> None:
            filler = self.connections[False]

            async def producer(k: int) -> None:
                for _ in range(k):
                    await Job("noop", queue=queue, _connection=filler).enqueue()
            await asyncio.gather(*(producer(len(range(i, count, 100))) for i in range(100)))

        n = self.n(30000)
        rounds = 6
        for queue in queues.values():  # filled before the clock starts
            await fill(queue, n // rounds * rounds)

        async def work(confirmed: bool, count: int) -> None:
            router = Router()
            router.actor(name="noop", queue=queues[confirmed])(noop)
            worker = Worker(routers=[router], tasks_limit=1000, messages_limit=count,
                            handle_signals=[], auto_declare=False,
                            _connection=self.connections[confirmed])
            await worker.run()

        await compare("no-op, one worker", n, rounds, work, self.master)


async def main(dsn: str, master_port: int, scale: float) -> None:
    bench = Bench(dsn, master_port, scale)
    await bench.open()
    try:
        await bench.enqueue()
        await bench.noop()
    finally:
        await bench.close()
    print("\n| part | no WAIT (jobs/s) | confirm_replicas=1 (jobs/s) | ratio | WAITs per job |")
    print("|---|---:|---:|---:|---:|")
    for part, off, on, waits in ROWS:
        print(f"| {part} | {off:.0f} | {on:.0f} | {on / off:.2f} | {waits:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every part's job count (default 1)")
    parser.add_argument("--base-port", type=int, default=7215,
                        help="the master's port; the replica's is one more, the "
                             "sentinels' ten to twelve more (default 7215)")
    options = parser.parse_args()
    from tests.servers.redis_sentinel import SentinelGroup

    with SentinelGroup(options.base_port) as group:
        asyncio.run(main(group.dsn, group.master_port(), options.scale))
