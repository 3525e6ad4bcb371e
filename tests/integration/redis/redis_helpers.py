"""Helpers the Redis worker tests share: a worker run in the background, and a wait."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from repid import Worker


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[Any]]:
    """The worker runs in the background; stopped and awaited at the end."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(asyncio.shield(task), 15)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `predicate()` is true, checking every 50 ms, for `timeout` seconds."""
    stop = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > stop:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
