"""Runner: one run of a Worker — consuming, capacity, limits and graceful shutdown.

```mermaid
flowchart LR
    subgraph per queue
      C[consumer] -->|free slot| T[task: Processor.process]
    end
    T -->|ack / nack / requeue| B[(broker)]
    S[SIGINT / SIGTERM] --> X[stop taking] --> W[wait grace time] --> R[reject what still runs]
```
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING

from repid.brokers.base import Consumer
from repid.data import Parameters, RoutingKey
from repid.processor import Processor

if TYPE_CHECKING:
    from repid.connection import Connection
    from repid.worker import Worker

logger = logging.getLogger("repid.worker")


class Runner:
    """Runs a worker until it is stopped or has processed `messages_limit` messages.

    `processed` counts messages an actor of this worker handled, whatever the outcome
    (messages returned because no actor here handles them do not count).
    """

    def __init__(self, worker: Worker, connection: Connection) -> None:
        self.worker = worker
        self.connection = connection
        self.processed = 0
        self.limit = worker.messages_limit
        self._reserved = 0  # messages being taken or processed, counted against the limit
        self._free = worker.tasks_limit  # task slots not in use
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._freed = asyncio.Event()  # set when a task slot or a reservation is given back
        self._loops_alive = 0
        self._pool: ProcessPoolExecutor | None = None
        self.processor = Processor(connection, worker.actors, self._process_pool)

    def __repr__(self) -> str:
        return f"Runner(processed={self.processed})"

    def _process_pool(self) -> Executor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor()
        return self._pool

    def stop(self) -> None:
        """Stop taking messages and shut down gracefully."""
        self._stop.set()

    async def run(self) -> None:
        broker = self.connection.message_broker
        consumers: list[Consumer] = [
            broker.consume(queue, topics, max_unacked_messages=self.worker.tasks_limit)
            for queue, topics in self.worker.topics_by_queue.items()
        ]
        for consumer in consumers:
            await consumer.start()
        loops = [asyncio.create_task(self._consume(c)) for c in consumers]
        restore = self._install_signals()
        try:
            await self._stop.wait()
        finally:
            restore()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for consumer in consumers:
                try:
                    await consumer.finish()
                except Exception:
                    logger.exception("could not finish consumer of %r", consumer.queue_name)
            await self._drain()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    async def _consume(self, consumer: Consumer) -> None:
        self._loops_alive += 1
        try:
            await self._take_loop(consumer)
        finally:
            self._loops_alive -= 1
            if not self._loops_alive:  # every consumer ended: nothing more will come
                self._stop.set()

    async def _take_loop(self, consumer: Consumer) -> None:
        while True:
            # wait for a free task slot, and for room under messages_limit; a message
            # returned for another worker gives its reservation back
            while self._free <= 0 or self._reserved >= self.limit:
                self._freed.clear()
                await self._freed.wait()
            self._free -= 1
            # reserved once taken, not while waiting: a consumer waiting on an empty queue
            # must not hold the last reservation against the other queues' consumers
            try:
                key, payload, params = await consumer.__anext__()
            except StopAsyncIteration:
                self._release()
                return
            except asyncio.CancelledError:
                self._release()
                raise
            except Exception:
                self._release()
                logger.exception("consuming from %r failed; trying again in 1 s",
                                 consumer.queue_name)
                await asyncio.sleep(1)
                continue
            if self._reserved >= self.limit:
                # another queue's consumer took the last message of the limit meanwhile
                self._release()
                try:
                    await consumer.broker.reject(key)
                except Exception:
                    logger.exception("could not return message %s over the limit", key.id_)
                continue
            self._reserved += 1
            task = asyncio.create_task(self._handle(key, payload, params))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release(self) -> None:
        """Give a task slot back."""
        self._free += 1
        self._freed.set()

    async def _handle(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        mine = False
        try:
            mine = await self.processor.process(key, payload, params)
        except asyncio.CancelledError:
            mine = True
            raise
        except Exception:
            mine = True
            logger.exception("settling message %s failed; the broker will deliver it again",
                             key.id_)
        finally:
            if mine:
                self.processed += 1
                if self.processed >= self.limit:
                    self._stop.set()
            else:
                self._reserved -= 1
            self._release()

    async def _drain(self) -> None:
        """Let running jobs finish within the grace time, then return the rest."""
        if not self._tasks:
            return
        grace = self.worker.graceful_shutdown_time
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if pending:
            logger.warning("%d jobs still running after the %.1f s grace time; returning "
                           "them to their queues", len(pending), grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _install_signals(self) -> Callable[[], None]:
        signals = self.worker.handle_signals
        if signals is None:
            signals = [signal.SIGINT, signal.SIGTERM]
        loop = asyncio.get_running_loop()
        installed = []
        for sig in signals:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (RuntimeError, ValueError, NotImplementedError):
                logger.warning("cannot handle %s here (not the main thread?); stop the worker "
                               "with worker.stop()", sig)

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("received %s: stopping; running jobs get %.1f s to finish", sig.name,
                    self.worker.graceful_shutdown_time)
        self.stop()


