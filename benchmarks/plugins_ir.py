"""What the plugins cost a worker, counted in CPU instructions: a measure that other load
on a shared machine does not move (callgrind counts instructions, not seconds).

For each broker and each variant of `plugins_bench.py` (none, noop, metrics, dropped,
floor, attrs, full) a child process runs a `Worker` over N and over 3N no-op jobs under
`valgrind --tool=callgrind`; the worker's instructions per message are
(3N run - N run) / 2N: start-up and connection cancel out. On Redis and RabbitMQ the jobs
are enqueued beforehand by a child that callgrind does not watch, so only the worker is
counted; in memory they cannot be (the queue lives in the process), so that child also
enqueues, and two more runs that only enqueue N and 3N are taken away. "Lost" is the
throughput a worker bound by its own CPU would lose, 1 - none/variant; full-floor and
full-attrs are the points lost above the SDK floor and above the same spans with the
plugin's attributes, as in `plugins_bench.py`. Wall-clock throughput on the machine is
`plugins_bench.py`'s job.

Run it with: python benchmarks/plugins_ir.py [--messages 400] [--brokers in_memory,...]
(needs valgrind; about a minute per broker and variant, two at a time)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import plugins_bench as bench

from repid import Connection, Job, Router, Worker, enqueue_many

_COLLECTED = re.compile(r"Collected : (\d+)")


def _noop_router(queue: str) -> Router:
    router = Router()

    @router.actor(name="noop", queue=queue)
    async def noop() -> None:
        """Does nothing."""

    return router


async def child(kind: str, variant: str, messages: int, step: str, queue: str) -> None:
    """One step over `queue` with `variant`'s plugins: "fill" declares it and enqueues
    `messages` no-op jobs; "run" runs a Worker over `messages` jobs and deletes it;
    "both" (in memory) does the two; "enqueue" fills and deletes it."""
    make = bench.broker_factory(kind)
    if isinstance(make, str):
        raise SystemExit(f"{kind}: {make}")
    connection = Connection(make(), plugins=bench.VARIANTS[variant]())
    await connection.connect()
    try:
        if step in ("fill", "both", "enqueue"):
            await connection.message_broker.queue_declare(queue)
            await enqueue_many(Job("noop", queue=queue, _connection=connection)
                               for _ in range(messages))
        if step in ("run", "both"):
            worker = Worker(routers=[_noop_router(queue)], messages_limit=messages,
                            handle_signals=[], _connection=connection)
            await asyncio.wait_for(worker.run(), bench.RUN_TIMEOUT)
            if not connection.is_open:
                await connection.connect()
        if step != "fill":
            await connection.message_broker.queue_delete(queue)
    finally:
        await connection.disconnect()


def _child_command(kind: str, variant: str, messages: int, step: str, queue: str) -> list[str]:
    return [sys.executable, __file__, "--child", kind, variant, str(messages), step, queue]


def instructions(kind: str, variant: str, messages: int, step: str) -> int:
    """Instructions of one child step under callgrind (with a fixed hash seed: string
    hashes move dictionary layouts, and with them a few thousand instructions per run).
    For "run", the queue is filled first by a child callgrind does not watch."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    queue = f"ir-{uuid.uuid4().hex[:8]}"
    if step == "run":
        subprocess.run(_child_command(kind, variant, messages, "fill", queue), env=env,
                       check=True)
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         *_child_command(kind, variant, messages, step, queue)],
        capture_output=True, text=True, check=False, env=env)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{kind}/{variant}: the child failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_message(kind: str, variant: str, messages: int, pool: ThreadPoolExecutor) -> float:
    """The worker's instructions per message of `variant` on `kind`."""
    if kind != "in_memory":
        a, b = pool.map(lambda n: instructions(kind, variant, n, "run"),
                        (messages, 3 * messages))
        return (b - a) / (2 * messages)
    runs = [pool.submit(instructions, kind, variant, n, step)
            for n, step in ((messages, "both"), (3 * messages, "both"),
                            (messages, "enqueue"), (3 * messages, "enqueue"))]
    a, b, c, d = (r.result() for r in runs)
    return ((b - a) - (d - c)) / (2 * messages)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, variant, messages, step, queue = sys.argv[2:7]
        asyncio.run(child(kind, variant, int(messages), step, queue))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--brokers", default="in_memory,redis,rabbitmq")
    parser.add_argument("--variants", default=",".join(bench.VARIANTS),
                        help="which of the variants to count (all by default)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (apt-get install -y valgrind)")
    print(f"{'broker':<10}" + "".join(f"{v:>10}" for v in variants)
          + "   (worker instructions per no-op message, thousands)")
    with ThreadPoolExecutor(2) as pool:
        for kind in args.brokers.split(","):
            if isinstance(bench.broker_factory(kind), str):
                print(f"{kind}: skipped, {bench.broker_factory(kind)}")
                continue
            counts = {v: per_message(kind, v, args.messages, pool) for v in variants}
            print(f"{kind:<10}" + "".join(f"{counts[v] / 1000:>10.1f}" for v in counts))
            lost = {v: bench.lost(counts["none"], counts[v]) for v in counts}
            spans = (f"   full-floor {lost['full'] - lost['floor']:.1f} pt, full-attrs "
                     f"{lost['full'] - lost['attrs']:.1f} pt"
                     if {"full", "floor", "attrs"} <= set(lost) else "")
            print(f"{'  lost':<10}" + "".join(f"{lost[v]:>9.1f}%" for v in counts) + spans,
                  flush=True)


if __name__ == "__main__":
    main()
