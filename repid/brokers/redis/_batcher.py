"""The group commit the broker sends ENQUEUE and SETTLE through (see `Batcher`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: an operation of the ENQUEUE script (id, body, ready ms) or of SETTLE (action,
#: where, id, token, and for a nack the reason, for a requeue body, priority, ready ms);
#: an id that is not UTF-8 stays bytes
Op = tuple[str | bytes, ...]


class Batcher:
    """Coalesces concurrent calls of one script into one round trip per queue (group commit).

    A call made while no other is in flight is sent at once, on its own. Calls made while
    one is in flight wait and then go together, one script run per queue, of at most
    `max_ops` operations and `max_chars` characters of arguments (a single call is never
    split). Each caller still waits for Redis's reply to its own operations, so nothing is
    confirmed early, and every waiting caller gets a result or an exception, even when
    the drain itself fails.
    """

    __slots__ = ("_busy", "_max_chars", "_max_ops", "_pending", "_run", "_task")

    def __init__(self, run: Callable[[str, list[Op]], Awaitable[list[bool]]], *,
                 max_ops: int, max_chars: int | None = None) -> None:
        self._run = run
        self._max_ops = max_ops
        self._max_chars = max_chars
        self._pending: list[tuple[str, list[Op], asyncio.Future[list[bool]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def submit(self, queue: str, ops: list[Op]) -> list[bool]:
        """Run `ops` (kept together in one script call) and return their results."""
        if not self._busy:
            self._busy = True
            try:
                return await self._run(queue, ops)
            finally:
                self._busy = False
                if self._pending:
                    self._start_drain()
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((queue, ops, future))
        return await future

    async def idle(self) -> None:
        """Wait until every submitted operation has been sent and answered."""
        while self._task is not None:
            await asyncio.wait({self._task})

    def _start_drain(self) -> None:
        self._busy = True
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        batch: list[tuple[str, list[Op], asyncio.Future[list[bool]]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                groups: dict[str, list[tuple[str, list[Op], asyncio.Future[list[bool]]]]] = {}
                for item in batch:
                    groups.setdefault(item[0], []).append(item)
                await asyncio.gather(*(self._flush(q, items) for q, items in groups.items()))
        except BaseException as exc:
            # nobody may wait for ever: fail whatever this drain still owed an answer
            for _, _, future in [*batch, *self._pending]:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            self._pending = []
            raise
        finally:
            self._task = None
            self._busy = False

    async def _flush(self, queue: str,
                     items: list[tuple[str, list[Op], asyncio.Future[list[bool]]]]) -> None:
        chunk: list[tuple[str, list[Op], asyncio.Future[list[bool]]]] = []
        size = chars = 0
        max_chars = self._max_chars
        for item in items:
            item_chars = 0 if max_chars is None else sum(len(f) for op in item[1] for f in op)
            if chunk and (size + len(item[1]) > self._max_ops
                          or (max_chars is not None and chars + item_chars > max_chars)):
                await self._send(queue, chunk)
                chunk, size, chars = [], 0, 0
            chunk.append(item)
            size += len(item[1])
            chars += item_chars
        if chunk:
            await self._send(queue, chunk)

    async def _send(self, queue: str,
                    chunk: list[tuple[str, list[Op], asyncio.Future[list[bool]]]]) -> None:
        try:
            results = await self._run(queue, [op for _, ops, _ in chunk for op in ops])
        except Exception as exc:
            for _, _, future in chunk:
                if not future.done():
                    future.set_exception(exc)
            return
        pos = 0
        for _, ops, future in chunk:
            if not future.done():
                future.set_result(results[pos:pos + len(ops)])
            pos += len(ops)
