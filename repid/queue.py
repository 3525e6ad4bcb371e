"""Queue: declare, flush, delete a queue, and read its messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from repid._validation import check_name
from repid.app import resolve_connection
from repid.data import MessageCategory
from repid.message import Message

if TYPE_CHECKING:
    from repid.connection import Connection


class Queue:
    """A named queue on the connection's message broker."""

    def __init__(self, name: str = "default", _connection: Connection | None = None) -> None:
        self.name = check_name(name, "queue name")
        self._connection = _connection

    def __repr__(self) -> str:
        return f"Queue(name={self.name!r})"

    @property
    def connection(self) -> Connection:
        return resolve_connection(self._connection, "Queue")

    async def declare(self) -> None:
        """Create the queue (idempotent)."""
        await self.connection.message_broker.queue_declare(self.name)

    async def flush(self) -> None:
        """Remove every message: ready, delayed and dead."""
        await self.connection.message_broker.queue_flush(self.name)

    async def delete(self) -> None:
        """Delete the queue and its messages."""
        await self.connection.message_broker.queue_delete(self.name)

    async def stats(self) -> dict[str, int]:
        """Counts of ready, delayed, in-flight and dead messages (-1 where unknown)."""
        return await self.connection.message_broker.queue_stats(self.name)

    async def get_messages(
        self,
        topics: Iterable[str] | None = None,
        max_unacked_messages: int | None = None,
        category: MessageCategory = MessageCategory.NORMAL,
        *,
        stop_when_empty: bool = False,
    ) -> AsyncIterator[Message]:
        """The queue's messages of one category.

        Every category waits for new messages until you stop iterating, as in repid 1.x
        (bound a wait with `asyncio.wait_for(anext(iterator), timeout)`: it raises
        TimeoutError and the message it was about to take stays in the queue).
        `stop_when_empty=True` reads the DELAYED or DEAD messages there are now and ends
        (ValueError for NORMAL, which always waits).

        Each message taken from NORMAL must be settled (`ack`, `nack`, `reject`, `retry`,
        `reschedule`); a DEAD one stays dead until you `reschedule` it (sends it back to the
        queue) or `ack` it (deletes it). A DEAD one that cannot be decoded is yielded too,
        as a poison message (`msg.is_poison`: its raw body as text, its reason in
        `parameters.headers[DEAD_REASON_HEADER]`), which can only be deleted (`ack`).
        """
        connection = self.connection
        consumer = connection.message_broker.consume(
            self.name, topics, max_unacked_messages, category,
            stop_when_empty=stop_when_empty)
        await consumer.start()
        try:
            async for delivery in consumer:
                yield Message(delivery, connection)
        finally:
            await consumer.finish()
