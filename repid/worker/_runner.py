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
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING

from repid.brokers.base import Consumer
from repid.brokers.delivery import Delivery
from repid.data import RoutingKey
from repid.errors import QueueNotDeclaredError, SettleError
from repid.worker._isolation import SUSPECT_AFTER, Isolation
from repid.worker._processor import Processor
from repid.worker._signals import STOP_SIGNALS, StopSignals, install

if TYPE_CHECKING:
    from repid.connection import Connection
    from repid.worker import Worker

logger = logging.getLogger("repid.worker")


class Runner:
    """Runs a worker until it is stopped or has processed `messages_limit` messages.

    `processed` counts messages an actor of this worker handled, whatever the outcome
    (messages for a topic no actor here handles do not count, whether returned for
    another worker or, returned too often, dead-lettered: see `Processor._not_mine`);
    `settle_failures` those of them whose settle failed or had to be recovered
    (`Processor.process`).
    """

    def __init__(self, worker: Worker, connection: Connection) -> None:
        self.worker = worker
        self.connection = connection
        self.processed = 0
        self.settle_failures = 0
        self.limit = worker.messages_limit
        self._reserved = 0  # messages being taken or processed, counted against the limit
        self._free = worker.tasks_limit  # task slots not in use
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: return what still runs at once
        self._consumers: list[Consumer] = []
        self._isolation = Isolation()
        self._broker = connection.message_broker
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
        consumers = self._consumers = [
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
            try:
                for loop in loops:
                    loop.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                await self._each_consumer("finish")
                await self._drain()  # a second signal during it hurries it
            finally:
                restore()
                self.processor.close()
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
            if self._isolation.blocked:  # a suspect runs alone: take nothing meanwhile
                await self._isolation.clear()
                continue
            self._free -= 1
            # reserved once taken, not while waiting: a consumer waiting on an empty queue
            # must not hold the last reservation against the other queues' consumers
            try:
                delivery = await consumer.__anext__()
            except StopAsyncIteration:
                self._release()
                return
            except asyncio.CancelledError:
                self._release()
                raise
            except Exception as exc:
                self._release()
                await self._take_failed(consumer, exc)
                continue
            if consumer.problem is not None:
                logger.info("consuming from %r works again", consumer.queue_name)
                consumer.report_problem(None)
            if self._reserved >= self.limit:
                # another queue's consumer took the last message of the limit meanwhile
                self._release()
                try:
                    await delivery.reject()
                except Exception:
                    logger.exception("could not return message %s over the limit",
                                     delivery.key.id_)
                continue
            self._reserved += 1
            task = asyncio.create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _take_failed(self, consumer: Consumer, exc: Exception) -> None:
        """A take raised: say so in health, declare the queue again if the broker lost it
        (and this worker declares its queues), then try again after a second."""
        queue = consumer.queue_name
        consumer.report_problem(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, QueueNotDeclaredError) and self.worker.auto_declare:
            logger.warning("queue %r is gone from the broker (restarted empty, flushed or "
                           "deleted); declaring it again", queue)
            try:
                await consumer.broker.queue_declare(queue)
            except Exception as declare_exc:
                logger.warning("declaring queue %r again failed: %s; trying again in 1 s",
                               queue, declare_exc)
            else:
                _raise_if_cancelling()  # a client may swallow a cancel (wait_for < 3.12)
                return
        else:
            logger.error("consuming from %r failed; trying again in 1 s", queue,
                         exc_info=exc)
        await asyncio.sleep(1)

    def health_problem(self, after: float) -> str | None:
        """Why this run cannot take messages, once that has lasted `after` seconds (a
        consumer failing to take, a take loop that ended); None while it can."""
        if self._loops_alive < len(self._consumers) and not self._stop.is_set():
            return "a consumer's take loop ended"
        now = time.monotonic()
        for consumer in self._consumers:
            problem = consumer.problem
            if problem is not None and now - problem[1] >= after:
                return (f"cannot take messages from {consumer.queue_name!r} for "
                        f"{now - problem[1]:.0f} s: {problem[0]}")
        return None

    async def _return(self, delivery: Delivery) -> None:
        try:
            await delivery.reject()
        except Exception:
            logger.exception("could not return message %s; the broker delivers it again",
                             delivery.key.id_)

    def _release(self) -> None:
        """Give a task slot back."""
        self._free += 1
        self._freed.set()

    async def _handle(self, delivery: Delivery) -> None:
        if self._isolation.blocked:
            # a suspect runs alone (repid.worker._isolation): hold nothing beside it; it starts
            # once this task has ended (a return lost with the process would count)
            try:
                await self._return(delivery)
            finally:
                self._done(mine=False)
            return
        deliveries = self._broker.delivery_count(delivery)
        alone = deliveries > SUSPECT_AFTER
        if alone:
            try:
                await self._enter_alone(delivery.key, deliveries)
            except asyncio.CancelledError:  # stopped while waiting for its turn
                await asyncio.shield(self._return(delivery))
                await asyncio.shield(self._leave_alone())
                self._done(mine=True)
                raise
        mine = False
        try:
            mine = await self.processor.process(delivery, deliveries)
        except asyncio.CancelledError:
            mine = True
            raise
        except SettleError:
            mine = True
            self.settle_failures += 1
        except Exception:
            mine = True
            self.settle_failures += 1
            logger.exception("settling message %s failed; the broker will deliver it again",
                             delivery.key.id_)
        finally:
            if alone:
                await asyncio.shield(self._leave_alone())
            self._done(mine)

    async def _enter_alone(self, key: RoutingKey, deliveries: int) -> None:
        """Hold nothing beside the suspect `key`: the consumers give back what they
        buffered, messages taken meanwhile go back, and it waits until every other task
        of this worker (running jobs, returns) has ended."""
        logger.warning("message %s was delivered %d times without being settled; it runs "
                       "alone in this worker", key.id_, deliveries)
        self._isolation.block()
        await self._each_consumer("pause")
        me = asyncio.current_task()
        while others := {task for task in self._tasks if task is not me}:
            await asyncio.wait(others)

    async def _leave_alone(self) -> None:
        self._isolation.unblock()
        await self._each_consumer("resume")

    async def _each_consumer(self, call: str) -> None:
        """`await consumer.<call>()` on every consumer; a failure is logged, not raised."""
        for consumer in self._consumers:
            try:
                await getattr(consumer, call)()
            except Exception:
                logger.exception("could not %s the consumer of %r", call, consumer.queue_name)

    def _done(self, mine: bool) -> None:
        """A taken message is finished with: count it (or give its reservation back) and
        free its task slot."""
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            while self._tasks and not hurry.done() and loop.time() < deadline:
                await asyncio.wait({*self._tasks, hurry}, timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()
        pending = set(self._tasks)
        if pending:
            why = ("a second stop signal" if self._hurry.is_set()
                   else f"the {grace:.1f} s grace time")
            logger.warning("%d jobs still running after %s; returning them to their queues",
                           len(pending), why)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _install_signals(self) -> Callable[[], None]:
        signals = self.worker.handle_signals
        on_signal = StopSignals(self._on_first_signal, self._on_second_signal)
        return install(STOP_SIGNALS if signals is None else signals, on_signal,
                       asyncio.get_running_loop())

    def _on_first_signal(self, name: str) -> None:
        logger.info("received %s: stopping; running jobs get %.1f s to finish (send it "
                    "again to return them at once)", name, self.worker.graceful_shutdown_time)
        self.stop()

    def _on_second_signal(self, name: str) -> None:
        logger.warning("received %s again: returning running jobs to their queues now", name)
        self.hurry()

    def hurry(self) -> None:
        """Stop at once: running jobs go back to their queues without waiting for the
        grace time (what a second SIGINT/SIGTERM does)."""
        self._stop.set()
        self._hurry.set()




def _raise_if_cancelling() -> None:
    """Raise CancelledError when the current task was asked to stop: some clients' calls
    (asyncio.wait_for on Python < 3.12) swallow a cancellation that lands inside them."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError
