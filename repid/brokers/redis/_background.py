"""The background work of a Redis broker and its consumers: what `disconnect` waits for,
and the checks every background loop makes before each round."""

from __future__ import annotations

import asyncio
import weakref

from repid.brokers.base import Consumer


class ConsumerTasks:
    """The live consumers of one broker, and the tasks of theirs that outlive `finish`.

    At disconnect, `finish_consumers` finishes every live consumer (its unhanded messages
    go back); then `close` waits for the fetchers still ending their last BLPOP (at most
    about a second each) and stops the lease extenders (they run on after `finish` while
    handed-out jobs are unsettled)."""

    __slots__ = ("_consumers", "_heartbeats", "_stragglers")

    def __init__(self) -> None:
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        #: fetchers of finished consumers still ending their last BLPOP
        self._stragglers: set[asyncio.Task[None]] = set()
        #: lease extenders of consumers (they outlive `finish` while jobs still run)
        self._heartbeats: set[asyncio.Task[None]] = set()

    def add_consumer(self, consumer: Consumer) -> None:
        """`consumer` started: `close` finishes it unless it finished before."""
        self._consumers.add(consumer)

    def discard_consumer(self, consumer: Consumer) -> None:
        """`consumer` finished."""
        self._consumers.discard(consumer)

    def keep_straggler(self, fetcher: asyncio.Task[None]) -> None:
        """A fetcher that ends by itself soon: `close` waits for it."""
        self._stragglers.add(fetcher)
        fetcher.add_done_callback(self._stragglers.discard)

    def keep_heartbeat(self, heartbeat: asyncio.Task[None]) -> None:
        """A lease extender: `close` stops it."""
        self._heartbeats.add(heartbeat)
        heartbeat.add_done_callback(self._heartbeats.discard)

    async def finish_consumers(self) -> None:
        """Finish every live consumer."""
        for consumer in list(self._consumers):
            await consumer.finish()

    async def close(self) -> None:
        """Wait for the stragglers, then stop the lease extenders (waiting up to 5 s)."""
        if self._stragglers:
            await asyncio.wait(set(self._stragglers))
        for heartbeat in list(self._heartbeats):
            heartbeat.cancel()
        if self._heartbeats:
            await asyncio.wait(set(self._heartbeats), timeout=5)


def cancel_requested() -> bool:
    """True when the current task was asked to cancel: redis-py can swallow a cancellation
    that lands while it sends a command (asyncio.wait_for on Python < 3.12), so the
    background loops check before each round instead of relying on it alone."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is not None and cancelling() > 0


def loop_closed() -> bool:
    """True when the event loop is gone: a background task being torn down with it (its
    broker was never disconnected) must end quietly instead of retrying."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False
