"""How `repid worker --processes N` scales: no-op jobs per second with 1 and 2 worker
processes, on Redis and RabbitMQ, measured in the same run.

For each broker and each process count, a fresh queue is filled with `--jobs` no-op jobs
(`enqueue_many`, before the clock starts), then `repid worker
benchmarks/processes_app.py:worker --processes N` runs as a subprocess and the clock runs
from its start until the queue holds nothing ready or in flight (asked every 50 ms through
`queue_stats`; see `drained` for RabbitMQ). Start-up (imports, connecting) is inside the
time, the same for every row; take enough jobs that it is small beside the run. The
machine's core count is printed beside the table: more processes than cores cannot add
throughput.

Run it with: python benchmarks/processes_bench.py [--jobs 100000] [--brokers redis,rabbitmq]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repid import Connection, Job, enqueue_many
from repid.brokers.base import MessageBroker

HERE = Path(__file__).resolve().parent
DSNS = {"redis": os.environ.get("REPID_TEST_REDIS_DSN", "redis://127.0.0.1:6379/0"),
        "rabbitmq": os.environ.get("REPID_TEST_AMQP_DSN", "amqp://guest:guest@127.0.0.1:5672/")}
#: a run that has not drained its queue by then is reported as such, not waited for
RUN_TIMEOUT = 600.0


def make_broker(kind: str) -> MessageBroker:
    if kind == "redis":
        from repid import RedisMessageBroker

        return RedisMessageBroker(DSNS[kind])
    from repid import RabbitMessageBroker

    return RabbitMessageBroker(DSNS[kind])


async def fill(connection: Connection, queue: str, jobs: int) -> None:
    await connection.message_broker.queue_declare(queue)
    for start in range(0, jobs, 1000):
        await enqueue_many(Job("noop", queue=queue, _connection=connection)
                           for _ in range(start, min(jobs, start + 1000)))


async def drained(broker: MessageBroker, queue: str) -> bool:
    """Nothing ready and nothing in flight. RabbitMQ counts in-flight messages only
    through its management API, whose figures lag by seconds: there the run ends when
    nothing is ready, with at most the workers' prefetch (a few hundred no-op jobs, a
    few hundredths of a second) still to run."""
    stats = await broker.queue_stats(queue)
    return stats["ready"] == 0 and stats["in_flight"] <= 0


async def one_run(kind: str, processes: int, jobs: int) -> float:
    """No-op jobs per second of `repid worker --processes N` over a full queue."""
    queue = f"procs-{uuid.uuid4().hex[:8]}"
    connection = Connection(make_broker(kind))
    await connection.connect()
    try:
        await fill(connection, queue, jobs)
        env = {**os.environ, "REPID_BROKER_DSN": DSNS[kind], "PROCS_QUEUE": queue,
               "PYTHONPATH": os.pathsep.join(sys.path)}
        command = [sys.executable, "-m", "repid", "worker",
                   f"{HERE / 'processes_app.py'}:worker", "--processes", str(processes)]
        with tempfile.TemporaryFile() as log:
            started = time.perf_counter()
            worker = await asyncio.create_subprocess_exec(*command, env=env,
                                                          stdout=subprocess.DEVNULL, stderr=log)
            try:
                while not await drained(connection.message_broker, queue):
                    if worker.returncode is not None:
                        log.seek(0)
                        raise SystemExit(f"the worker exited early:\n{log.read().decode()}")
                    if time.perf_counter() - started > RUN_TIMEOUT:
                        raise SystemExit(f"{kind} x{processes}: not drained in {RUN_TIMEOUT} s")
                    await asyncio.sleep(0.05)
                took = time.perf_counter() - started
            finally:
                if worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(worker.wait(), 30)
                    except asyncio.TimeoutError:
                        worker.kill()
                        await worker.wait()
        return jobs / took
    finally:
        await connection.message_broker.queue_delete(queue)
        await connection.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of every row, interleaved; the best is shown")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    kinds = args.brokers.split(",")
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for kind in kinds:
            for n in counts:
                rate = asyncio.run(one_run(kind, n, args.jobs))
                best[kind, n] = max(best.get((kind, n), 0.0), rate)
    print(f"no-op jobs/s through `repid worker --processes N` ({os.cpu_count()} cores, "
          f"{args.jobs} jobs, best of {args.rounds})")
    print(f"{'broker':<10}" + "".join(f"{f'N={n}':>10}" for n in counts) + "   N=2/N=1")
    for kind in kinds:
        row = "".join(f"{best[kind, n]:>10.0f}" for n in counts)
        ratio = (f"{best[kind, 2] / best[kind, 1]:>9.2f}" if 1 in counts and 2 in counts
                 else "")
        print(f"{kind:<10}{row}{ratio}")


if __name__ == "__main__":
    main()
