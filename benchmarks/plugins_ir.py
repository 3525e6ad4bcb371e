"""What the plugins cost a worker, counted in CPU instructions: a measure that other load
on a shared machine does not move (callgrind counts instructions, not seconds).

For each broker and each variant of `plugins_bench.py` (none, metrics, dropped, floor,
attrs, full) a child process runs under `valgrind --tool=callgrind` four times: it
enqueues N or 3N no-op jobs, and then runs a `Worker` over them or not. The worker's
instructions per message are ((3N run - N run) - (3N enqueue only - N enqueue only)) / 2N:
start-up, connection and enqueue cancel out. "Lost" is the throughput a worker bound by
its own CPU would lose, 1 - none/variant; full-floor and full-attrs are the points lost
above the SDK floor and above the same spans with the plugin's attributes, as in
`plugins_bench.py`. Wall-clock throughput on the machine is `plugins_bench.py`'s job.

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


async def child(kind: str, variant: str, messages: int, run: bool) -> None:
    """Enqueue `messages` no-op jobs with `variant`'s plugins; run a Worker over them when
    `run`."""
    make = bench.broker_factory(kind)
    if isinstance(make, str):
        raise SystemExit(f"{kind}: {make}")
    queue = f"ir-{uuid.uuid4().hex[:8]}"
    router = Router()

    @router.actor(name="noop", queue=queue)
    async def noop() -> None:
        """Does nothing."""

    connection = Connection(make(), plugins=bench.VARIANTS[variant]())
    await connection.connect()
    try:
        await connection.message_broker.queue_declare(queue)
        await enqueue_many(Job("noop", queue=queue, _connection=connection)
                           for _ in range(messages))
        if run:
            worker = Worker(routers=[router], messages_limit=messages, handle_signals=[],
                            _connection=connection)
            await asyncio.wait_for(worker.run(), bench.RUN_TIMEOUT)
            if not connection.is_open:
                await connection.connect()
        await connection.message_broker.queue_delete(queue)
    finally:
        await connection.disconnect()


def instructions(kind: str, variant: str, messages: int, run: bool) -> int:
    """Instructions of one child run under callgrind (with a fixed hash seed: string
    hashes move dictionary layouts, and with them a few thousand instructions per run)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--child", kind, variant, str(messages), "1" if run else "0"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"})
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{kind}/{variant}: the child failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_message(kind: str, variant: str, messages: int, pool: ThreadPoolExecutor) -> float:
    """The worker's instructions per message of `variant` on `kind`."""
    runs = [pool.submit(instructions, kind, variant, n, run)
            for n, run in ((messages, True), (3 * messages, True),
                           (messages, False), (3 * messages, False))]
    a, b, c, d = (r.result() for r in runs)
    return ((b - a) - (d - c)) / (2 * messages)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, variant, messages, run = sys.argv[2:6]
        asyncio.run(child(kind, variant, int(messages), run == "1"))
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
