"""The worker of `processes_bench.py`: `repid worker benchmarks/processes_app.py:worker`.

The broker comes from REPID_BROKER_DSN (the CLI reads it), the queue from PROCS_QUEUE; its
one actor, `noop`, does nothing.
"""

from __future__ import annotations

import os

from repid import Router, Worker

QUEUE = os.environ.get("PROCS_QUEUE", "procs")

router = Router()


@router.actor(name="noop", queue=QUEUE)
async def noop() -> None:
    """Does nothing."""


worker = Worker(routers=[router], graceful_shutdown_time=5)
