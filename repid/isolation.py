"""Suspects run alone: a message delivered again and again without a settle (its worker
died or stalled while it ran) runs with nothing beside it.

A job that kills its process (out of memory, a crash, `os._exit`) takes the jobs running
beside it down too, and each of those comes back counted as one more unsettled delivery.
Running suspects alone keeps a bad job from dragging good ones to the delivery limit: the
bad one dies alone until `max_deliveries` dead-letters it, and a good one that was only
beside it runs, alone, and succeeds. Messages that are not suspects pay one integer check.
"""

from __future__ import annotations

import asyncio

#: a message delivered more than this many times without a settle is a suspect
SUSPECT_AFTER = 2


class Isolation:
    """Lets calls run side by side, except suspects, which run one at a time with no other
    call running (ordinary calls wait while a suspect waits or runs).

    Ordinary call: `if isolation.blocked: await isolation.turn()`, then `enter()` ...
    `leave()`. Suspect: `await isolation.enter_alone()` ... `leave_alone()`. The ordinary
    path awaits nothing unless a suspect is there.
    """

    __slots__ = ("_over", "_quiet", "_running", "_solo", "_suspects")

    def __init__(self) -> None:
        self._running = 0  # ordinary calls running now
        self._suspects = 0  # suspects waiting or running
        self._solo = asyncio.Lock()
        self._quiet = asyncio.Event()  # no ordinary call running
        self._quiet.set()
        self._over = asyncio.Event()  # no suspect waiting or running
        self._over.set()

    @property
    def blocked(self) -> bool:
        """Whether an ordinary call must wait for its `turn()` before it enters."""
        return self._suspects > 0

    async def turn(self) -> None:
        """Wait until no suspect waits or runs."""
        while self._suspects:
            await self._over.wait()

    def enter(self) -> None:
        """An ordinary call starts."""
        self._running += 1
        self._quiet.clear()

    def leave(self) -> None:
        """An ordinary call ended."""
        self._running -= 1
        if not self._running:
            self._quiet.set()

    async def enter_alone(self) -> None:
        """Wait until a suspect may run: no other suspect and no ordinary call running."""
        self._suspects += 1
        self._over.clear()
        try:
            await self._solo.acquire()
        except BaseException:
            self._suspect_done()
            raise
        try:
            await self._quiet.wait()
        except BaseException:
            self.leave_alone()
            raise

    def leave_alone(self) -> None:
        """A suspect ended."""
        self._solo.release()
        self._suspect_done()

    def _suspect_done(self) -> None:
        self._suspects -= 1
        if not self._suspects:
            self._over.set()
