"""Actors for the CLI tests: `repid worker tests/cli/cli_app.py:worker`.

The queue name comes from CLI_TEST_QUEUE, so each test uses its own queue; each job
appends its number to the files `started` and `done` in CLI_TEST_DIR, so a test can see
every job start and finish; a `crash` job appends to `crashed` and kills its process.
"""

from __future__ import annotations

import asyncio
import os
import sys

from repid import Connection, InMemoryMessageBroker, Repid, Router, Worker

QUEUE = os.environ.get("CLI_TEST_QUEUE", "cli_test")
LOG_DIR = os.environ.get("CLI_TEST_DIR", "")

if os.environ.get("CLI_TEST_CRASH") and os.environ.get("REPID_WORKER_INDEX"):
    sys.exit(3)  # a worker process that cannot start (the supervisor imports this fine)

router = Router()


def _record(kind: str, n: int) -> None:
    if LOG_DIR:
        with open(os.path.join(LOG_DIR, kind), "a") as file:
            file.write(f"{n} {os.getpid()}\n")


@router.actor(queue=QUEUE)
async def work(n: int, sleep: float = 0) -> int:
    """Record that job `n` started, sleep `sleep` seconds, record that it is done."""
    _record("started", n)
    await asyncio.sleep(sleep)
    _record("done", n)
    return n


@router.actor(queue=QUEUE)
async def crash(n: int) -> None:
    """Record job `n`, then end this worker process at once (as a segfault would)."""
    _record("crashed", n)
    os._exit(1)


worker = Worker(routers=[router], graceful_shutdown_time=10)
not_a_worker = 42
empty_router = Router()
app = Repid(Connection(InMemoryMessageBroker()))
connection = Connection(InMemoryMessageBroker())
