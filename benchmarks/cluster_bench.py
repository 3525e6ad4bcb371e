"""Throughput of the single-server and the clustered broker forms, side by side, in one run,
with one queue and with 8 queues.

    python benchmarks/cluster_bench.py [--brokers redis,rabbitmq] [--jobs 4000] [--rounds 3]

With the defaults the whole run took about 4 minutes on a 2-core machine (Redis 20 s,
RabbitMQ 3.5 minutes, of which about 25 s start the four RabbitMQ nodes); `--jobs 200`
makes a quick check of about a minute.

Forms (every server private, started by this script on loopback and always stopped at the
end; the shared servers on 6379 and 5672 are never touched):

- Redis: one private Redis (`PrivateRedis`, port 7150-7152) and a private three-master
  Redis Cluster (`PrivateRedisCluster`, three ports of 7153-7169, bus ports +10000, DSN
  `redis+cluster://...`), both without persistence. The 8 queues of the cluster are named
  so that their slots spread over the three masters (3, 3 and 2 queues).
- RabbitMQ: one private node (`PrivateRabbit`, port 5770) with classic queues, the same
  node with quorum queues (`queue_type="quorum"`), and a private three-node cluster
  (`PrivateRabbitCluster`, ports 5760-5762) with quorum queues, reached through a DSN
  naming the three nodes (distribution ports are +20000).

Rows, each through the public API as users write it (a `Job` built for each message, and a
`Worker` running a no-op actor):

- sequential enqueue: one producer, `await Job(...).enqueue()` one after the other;
- 100 concurrent producers: the same from 100 tasks at once;
- no-op jobs, one worker: one `Worker` (tasks_limit 1000) draining what the two enqueue
  rows stored.

With 8 queues, job k goes to queue k % 8 (evenly spread) and the one Worker has a no-op
actor on each of the 8 queues. Each round measures every column (a form with 1 or 8
queues) once, `--jobs` jobs per enqueue row (so the worker drains twice that), the
columns in a rotated order from round to round so that drifting load hits all alike; the
tables show the median of the rounds, then the spread (lowest-highest) of each cell. Before
the first round every column runs once with at most 200 jobs, unrecorded (connections,
scripts, consumers warmed up). The servers of a broker all run during its whole
measurement; the queues are emptied before and after each column's turn.

Clients connect to the first node a DSN names, as every process given the same DSN does, so
on the RabbitMQ cluster the quorum queues' leaders are all on that node (RabbitMQ places a
new quorum queue's leader on the node its declaring client is connected to); the script
prints where they are. It prints a header line (the machine's cores and the sizes), then
one markdown table per broker, like the "Measured" table of docs/scaling/redis-cluster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rate
from redis.crc import key_slot

from repid import Connection, Job, MessageBroker, Router, Worker
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.redis import RedisMessageBroker
from tests.servers import rabbit_node, redis_cluster, redis_server
from tests.servers.rabbit_cluster import PrivateRabbitCluster
from tests.servers.rabbit_node import PrivateRabbit
from tests.servers.redis_cluster import PrivateRedisCluster
from tests.servers.redis_server import PrivateRedis

#: ports of the private Redis servers: the single one first, then the cluster's three
REDIS_PORTS = range(7150, 7170)
REDIS_SINGLE_PORTS = range(7150, 7153)
#: AMQP ports of the private RabbitMQ nodes (distribution ports are these + 20000)
RABBIT_CLUSTER_FIRST_PORT = 5760
RABBIT_SINGLE_PORT = 5770
#: how many producers the concurrent row runs
PRODUCERS = 100
#: the queue counts compared
QUEUE_COUNTS = (1, 8)
#: a step (one row of one column) that takes longer is reported as stuck, not waited for
STEP_TIMEOUT = 180.0
ROWS = ("sequential enqueue", f"{PRODUCERS} concurrent producers", "no-op jobs, one worker")


@dataclass
class Column:
    """One form with one queue count: its connection, queues and the rates of its rounds."""

    label: str
    connection: Connection
    queues: list[str]
    rates: dict[str, list[float]] = field(default_factory=lambda: {row: [] for row in ROWS})

    def __post_init__(self) -> None:
        self.actors = [f"noop{i}" for i in range(len(self.queues))]
        self.router = Router()
        for actor, queue in zip(self.actors, self.queues, strict=True):
            self.router.actor(name=actor, queue=queue)(noop)

    def job(self, k: int) -> Job:
        """Job k of a row, in queue k % (number of queues), built as users build one."""
        i = k % len(self.queues)
        return Job(self.actors[i], queue=self.queues[i], _connection=self.connection)

    async def sequential(self, n: int) -> None:
        for k in range(n):
            await self.job(k).enqueue()

    async def concurrent(self, n: int) -> None:
        async def producer(first: int) -> None:
            for k in range(first, n, PRODUCERS):
                await self.job(k).enqueue()

        await asyncio.gather(*(producer(i) for i in range(PRODUCERS)))

    async def drain(self, n: int) -> None:
        worker = Worker(routers=[self.router], messages_limit=n, tasks_limit=1000,
                        handle_signals=[], auto_declare=False, _connection=self.connection)
        runner = await worker.run()
        if runner.processed != n:
            raise RuntimeError(f"{self.label}: the worker ran {runner.processed} of {n} jobs")

    async def flush(self) -> None:
        for queue in self.queues:
            await self.connection.message_broker.queue_flush(queue)


async def noop() -> None:
    """Does nothing: the figures are the framework's and the broker's, not the job's."""


async def measure(column: Column, n: int, record: bool) -> None:
    """One round of the three rows on `column` (`record`: keep the rates; else a warm-up)."""
    await column.flush()
    figures = []
    for row, count, part in ((ROWS[0], n, column.sequential), (ROWS[1], n, column.concurrent),
                             (ROWS[2], 2 * n, column.drain)):
        try:
            figures.append(await asyncio.wait_for(rate(count, partial(part, count)),
                                                  STEP_TIMEOUT))
        except asyncio.TimeoutError:
            raise SystemExit(f"{column.label}, {row}: {count} jobs not done within "
                             f"{STEP_TIMEOUT:g} s; broker stuck?") from None
    if record:
        for row, figure in zip(ROWS, figures, strict=True):
            column.rates[row].append(figure)
    await column.flush()


async def bench(forms: list[tuple[str, MessageBroker, list[str]]], n: int,
                rounds: int) -> list[Column]:
    """Every column of `forms` (label, broker, its 8 queue names), `rounds` times."""
    connections = [Connection(broker) for _, broker, _ in forms]
    try:
        columns = []
        for count in QUEUE_COUNTS:
            for (label, _, names), connection in zip(forms, connections, strict=True):
                columns.append(Column(f"{label}, {count} queue{'s' if count > 1 else ''}",
                                      connection, names[:count]))
        for connection in connections:
            await connection.connect()
        for column in columns:
            for queue in column.queues:
                await column.connection.message_broker.queue_declare(queue)
            await measure(column, min(n, 200), record=False)
        for r in range(rounds):
            started = time.perf_counter()
            order = columns[r % len(columns):] + columns[:r % len(columns)]
            for column in order:
                await measure(column, n, record=True)
            print(f"  round {r + 1}/{rounds}: {time.perf_counter() - started:.0f} s",
                  flush=True)
        return columns
    finally:
        for connection in connections:
            await connection.disconnect()


def queue_names(count: int, spread: Callable[[str], int] | None = None) -> list[str]:
    """`count` new queue names; with `spread` (a name's node), named so that the nodes
    take turns: queue i on node i % 3."""
    names: list[str] = []
    while len(names) < count:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        if spread is None or spread(name) == len(names) % 3:
            names.append(name)
    return names


# --- servers ---

def _stop_on_sigterm() -> None:
    """A SIGTERM ends the run through the `finally` blocks, so the servers are stopped."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _first_free(ports: range) -> int:
    for port in ports:
        if rabbit_node.port_free(port):
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on 127.0.0.1")


def start(stack: ExitStack, what: str, server: PrivateRedis | PrivateRedisCluster) -> None:
    """Start a server, its stop registered first so that it runs whatever happens."""
    stack.callback(server.stop)
    began = time.perf_counter()
    server.start()
    print(f"  started {what} in {time.perf_counter() - began:.0f} s", flush=True)


Forms = list[tuple[str, MessageBroker, list[str]]]


def redis_forms(stack: ExitStack) -> tuple[Forms, Callable[[], str]]:
    """Start one private Redis and a private three-master cluster; their forms (label,
    broker, 8 queue names) and what to say about them once measured."""
    for check in (redis_server.available(), redis_cluster.available()):
        if check is not None:
            raise RuntimeError(check)
    single = PrivateRedis(_first_free(REDIS_SINGLE_PORTS), appendonly=False)
    start(stack, f"one Redis on {single.port}", single)
    ports = redis_cluster.free_ports(3, range(REDIS_SINGLE_PORTS.stop, REDIS_PORTS.stop))
    cluster = PrivateRedisCluster(ports, appendonly=False)
    start(stack, f"a Redis Cluster on {ports[0]}-{ports[-1]}", cluster)
    cluster_names = queue_names(8, lambda name: cluster.owner_of(key_slot(name.encode())))
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             check=False).stdout.split()[2].removeprefix("v=")
    forms: Forms = [
        ("one Redis", RedisMessageBroker(single.dsn), queue_names(8)),
        ("cluster", RedisMessageBroker(cluster.dsn), cluster_names),
    ]
    return forms, lambda: (f"Redis {version}, no persistence; the cluster's 8 queues on "
                           "its three masters 3 / 3 / 2")


def rabbit_forms(stack: ExitStack) -> tuple[Forms, Callable[[], str]]:
    """Start one private node and a private three-node cluster; their forms (label,
    broker, 8 queue names) and what to say about them once measured (where the cluster's
    quorum queues have their leaders)."""
    check = rabbit_node.available()
    if check is not None:
        raise RuntimeError(check)
    single = PrivateRabbit(RABBIT_SINGLE_PORT)
    cluster = PrivateRabbitCluster(first_port=RABBIT_CLUSTER_FIRST_PORT)
    stack.callback(single.stop)
    stack.callback(cluster.stop)
    began = time.perf_counter()
    # the single node and the cluster start at the same time (minutes saved, as each
    # waits mostly on Erlang booting)
    with ThreadPoolExecutor(2) as pool:
        starts: list[Future[object]] = [pool.submit(single.start), pool.submit(cluster.start)]
        for future in starts:
            future.result()
    print(f"  started one RabbitMQ node on {single.port} and a three-node cluster on "
          f"{RABBIT_CLUSTER_FIRST_PORT}-{RABBIT_CLUSTER_FIRST_PORT + 2} in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    version = cluster.nodes[0].ctl("version", timeout=30).strip()
    forms: Forms = [
        ("one node classic", RabbitMessageBroker(single.dsn), queue_names(8)),
        ("one node quorum", RabbitMessageBroker(single.dsn, queue_type="quorum"),
         queue_names(8)),
        ("cluster quorum", RabbitMessageBroker(cluster.dsn, queue_type="quorum"),
         queue_names(8)),
    ]
    cluster_queues = set(forms[2][2])

    def note() -> str:
        out = cluster.nodes[0].ctl("list_queues", "-q", "--no-table-headers", "name",
                                   "leader", timeout=60)
        leaders: dict[str, int] = {}
        for line in out.splitlines():
            name, _, leader = line.partition("\t")
            if name in cluster_queues:
                leaders[leader.strip()] = leaders.get(leader.strip(), 0) + 1
        where = ", ".join(f"{count} on {node}" for node, count in sorted(leaders.items()))
        return (f"RabbitMQ {version}; the clients connect to the first node named (as every "
                f"process given the same DSN does); the cluster's 8 queues have their "
                f"leaders: {where}")

    return forms, note


# --- report ---

def fmt(figure: float) -> str:
    return f"{figure:,.0f}/s"


def table(columns: list[Column]) -> str:
    """The markdown table of medians, then one of each cell's spread over the rounds."""
    head = "| | " + " | ".join(c.label for c in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    lines = [head, rule]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(
            fmt(statistics.median(c.rates[row])) for c in columns) + " |")
    lines += ["", "lowest-highest round:", "", head, rule]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(
            f"{min(c.rates[row]):,.0f}-{max(c.rates[row]):,.0f}" for c in columns) + " |")
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = ", " + line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} cores{model}; Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="redis,rabbitmq",
                        help="comma-separated: redis, rabbitmq")
    parser.add_argument("--jobs", type=int, default=4000,
                        help="jobs per enqueue row, per column and round (the worker "
                             "drains twice that)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = set(brokers) - {"redis", "rabbitmq"}
    if unknown or args.jobs < 1 or args.rounds < 1:
        parser.error(f"--brokers takes redis and/or rabbitmq (not {sorted(unknown)}); "
                     "--jobs and --rounds at least 1")
    _stop_on_sigterm()
    began = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"sizes: {args.jobs:,} jobs per enqueue row ({2 * args.jobs:,} drained), per "
          f"column and round; {args.rounds} rounds, median shown; {PRODUCERS} producers; "
          "Worker tasks_limit 1000", flush=True)
    makers = {"redis": redis_forms, "rabbitmq": rabbit_forms}
    for kind in brokers:
        print(f"\n## {kind}", flush=True)
        with ExitStack() as stack:
            forms, note = makers[kind](stack)
            columns = asyncio.run(bench(forms, args.jobs, args.rounds))
            said = note()
            print("  stopping the servers", flush=True)
        print(f"\n{said}\n\n{table(columns)}", flush=True)
    print(f"\nwhole run: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
