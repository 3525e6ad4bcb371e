"""RedisPartReader: reads the DEAD or DELAYED part of a Redis queue without taking anything.

What it yields stays where it is until settled: `ack` deletes it, `requeue` moves it to the
queue (ready at the new parameters' time), `nack` (of a delayed message) dead-letters it,
`reject` leaves it. Promises of `repid.brokers.base` kept here (numbers of `_broker.py`):

6. Dead letters: each dead message is read with the reason it was dead-lettered, if one was
   given, in `params.headers[DEAD_REASON_HEADER]`.
7. Poison: ids and bodies are read undecoded and each message decoded on its own. A dead
   one that cannot be decoded is handed out as a poison message (`repid.brokers._poison`):
   its id, its stored body as text (`<priority>|<timeout ms>|<json>` as stored, "" when
   there is none), and its stored reason (else why it cannot be decoded now); `ack`
   deletes it. A dead id is one with a body or a reason: every dead-lettering of repid
   stores a reason, so one with neither was acked since its id was read. A delayed message
   that cannot be decoded is dead-lettered with the reason, through the `repid_nack` hook.

Nothing is taken out of the part, so a cancelled `__anext__` loses nothing: what it was
reading is read again by the next call (ids leave the to-read list only once their bodies
are in hand).

With `stop_when_empty` it reads the ids there are at the first take and ends. Otherwise,
as repid 1.x's DEAD and DELAYED consumers did, it waits: once it has yielded everything it
looks at the part again every `POLL_INTERVAL` and yields the ids it has not read yet, until
it is finished (or its broker disconnects). It remembers the ids it read while they stay
in the part; one its own settle moved out (`RedisHandle.moved`) is forgotten at once, so a
message it sent back and that is dead-lettered again is yielded again. A lost connection
is waited out (reported through `report_problem`); a deleted queue raises
`QueueNotDeclaredError`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import deque

from repid.brokers._poison import poison_message, show_raw
from repid.brokers.base import DEAD_REASON_HEADER, Consumer, MessageBroker
from repid.brokers.delivery import Delivery
from repid.brokers.redis._batcher import Op
from repid.brokers.redis._client import CONNECTION_ERRORS
from repid.brokers.redis._codec import decode_stored, short_reason
from repid.brokers.redis._handle import RedisHandle
from repid.brokers.redis._queue_ops import QueueOps
from repid.data import MessageCategory
from repid.errors import BrokerConnectionError, PayloadDecodeError

logger = logging.getLogger("repid.brokers.redis")

_BACKOFF_MAX = 2.0


class RedisPartReader(Consumer):
    """Reads a queue's dead or delayed messages (see the module docstring)."""

    #: ids whose bodies one read fetches
    CHUNK = 100
    #: seconds between two looks at a part that had nothing new (waiting readers)
    POLL_INTERVAL = 0.5

    def __init__(self, broker: MessageBroker, ops: QueueOps, category: MessageCategory,
                 stop_when_empty: bool) -> None:
        super().__init__(broker, ops.queue, category)
        self._ops = ops
        self._where = "dead" if category is MessageCategory.DEAD else "delayed"
        self._stop_when_empty = stop_when_empty
        #: ids to read, in the part's order (None until the first take)
        self._ids: deque[bytes] | None = None
        #: messages read and not yet yielded, with their ids as stored
        self._messages: deque[tuple[bytes, Delivery]] = deque()
        #: ids read (yielded, or dead-lettered as undecodable) that are still in the part
        self._seen: set[bytes] = set()
        self._finished = False

    async def start(self) -> None:
        """Registered with the broker, so its `disconnect` ends a waiting reader."""
        self._ops.ensure_connected()
        self._ops.tasks.add_consumer(self)

    async def finish(self) -> None:
        """Stop reading (a waiting take ends at its next look)."""
        self._finished = True
        self._ids = deque()
        self._messages.clear()
        self._ops.tasks.discard_consumer(self)

    def on_settled(self, handle: RedisHandle) -> None:
        """A message it yielded was settled: forget it if it left the part."""
        if handle.moved:
            self._seen.discard(handle.stored_id or handle.id_.encode())

    async def _next(self) -> Delivery:
        backoff = self.POLL_INTERVAL
        while True:
            try:
                return await self._read()
            except CONNECTION_ERRORS as exc:
                if self._stop_when_empty:
                    raise BrokerConnectionError(
                        f"cannot read the {self._where} messages of queue "
                        f"{self.queue_name!r}: {exc}") from exc
                if self.problem is None:
                    logger.warning("reading the %s messages of queue %r: Redis unreachable "
                                   "(%s); retrying", self._where, self.queue_name, exc)
                self.report_problem(f"Redis unreachable: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _read(self) -> Delivery:
        ops = self._ops
        while not self._finished:
            ops.ensure_connected()
            if self._messages:
                id_b, message = self._messages.popleft()
                self._seen.add(id_b)
                return message
            if self._ids is None:
                self._ids = deque(await ops.snapshot_ids(self._where))
            elif not self._ids:
                if self._stop_when_empty:
                    break
                await asyncio.sleep(self.POLL_INTERVAL)
                if self._finished:
                    break
                await self._look_again()
            else:
                await self._read_chunk()
        raise StopAsyncIteration

    async def _look_again(self) -> None:
        """The part's ids not read yet; ids no longer there are forgotten."""
        ids = await self._ops.snapshot_ids(self._where)
        self.report_problem(None)
        self._seen.intersection_update(ids)
        self._ids = deque(id_b for id_b in ids if id_b not in self._seen)

    async def _read_chunk(self) -> None:
        """Decode the next chunk of ids into `_messages`; the ids leave `_ids` only once
        their bodies are read, so a cancelled read loses none of them."""
        assert self._ids is not None
        ops = self._ops
        chunk = list(itertools.islice(self._ids, self.CHUNK))
        bodies, reasons = await ops.stored(chunk, with_reasons=self._where == "dead")
        for _ in chunk:
            self._ids.popleft()
        poison: list[tuple[str, str, Op]] = []
        for id_b, body, reason in zip(chunk, bodies, reasons, strict=True):
            if body is None and reason is None:
                continue  # settled since its id was read
            try:
                if body is None:
                    raise PayloadDecodeError("the message has no stored body")
                id_ = id_b.decode()
                key, payload, params = decode_stored(body)
                if reason is not None:
                    params.headers[DEAD_REASON_HEADER] = reason.decode(errors="replace")
                message = Delivery(self.broker, key, payload, params, self.category,
                                   RedisHandle(self.queue_name, id_, self._where, "", self))
            except Exception as exc:
                why = ("the stored message cannot be decoded: "
                       f"{exc if isinstance(exc, PayloadDecodeError) else short_reason(exc)}")
                if self._where == "dead":
                    message = self._poison(id_b, body, reason, why)
                else:
                    self._seen.add(id_b)  # logged once, not at every look
                    logger.error("delayed message %r in queue %r cannot be decoded (%s); "
                                 "moved to the dead-letter list", id_b, self.queue_name, why)
                    poison.append((id_b.decode(errors="replace"), why,
                                   ("nack", "delayed", id_b, "", why)))
                    continue
            self._messages.append((id_b, message))
        for id_, why, op in poison:  # through the `repid_nack` hook (`poison_nack`)
            await self.poison_nack(id_, why, functools.partial(_settle, ops, op))

    def _poison(self, id_b: bytes, body: bytes | None, reason: bytes | None,
                why: str) -> Delivery:
        """The dead message `id_b` that cannot be decoded (`why`), as a poison message
        whose `ack` deletes it."""
        handle = RedisHandle(self.queue_name, show_raw(id_b), "dead", "", self,
                             stored_id=id_b)
        stored = why if reason is None else reason.decode(errors="replace")
        return poison_message(self, id_b, body, stored, handle)


async def _settle(ops: QueueOps, op: Op) -> None:
    """Run one settle operation (a poison message's nack)."""
    await ops.settle([op])
