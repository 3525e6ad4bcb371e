"""Suspects run alone: a message delivered again and again without a settle (its worker
died or stalled while it ran) runs with nothing else held by its worker.

A job that kills its process (out of memory, a crash, `os._exit`) takes down every message
its worker holds, running or waiting, and each of those comes back counted as one more
unsettled delivery. So while a suspect runs, its worker holds nothing else: the consumers
give back what they buffered and take nothing new (`Consumer.pause`), messages taken
meanwhile go straight back to the broker (`reject`, which is not counted), and the suspect
starts once the jobs already running have ended. A bad job then dies alone until
`max_deliveries` dead-letters it, and a good job that was only beside it comes back,
runs, and succeeds. Messages that are not suspects pay one check.
"""

from __future__ import annotations

import asyncio

#: a message delivered more than this many times without a settle is a suspect
SUSPECT_AFTER = 2


class Isolation:
    """Whether a suspect holds its worker: while `blocked`, anything else taken goes back
    to the broker, the take loops wait in `clear()`, and the suspect starts once every
    other task of the worker has ended (the runner waits for them)."""

    __slots__ = ("_clear", "blocked")

    def __init__(self) -> None:
        #: a suspect waits for its turn or runs: anything else taken now goes back
        self.blocked = False
        self._clear = asyncio.Event()  # no suspect
        self._clear.set()

    def block(self) -> None:
        """A suspect takes the worker."""
        self.blocked = True
        self._clear.clear()

    def unblock(self) -> None:
        """The suspect ended: ordinary runs and takes go on."""
        self.blocked = False
        self._clear.set()

    async def clear(self) -> None:
        """Wait until no suspect holds the worker."""
        await self._clear.wait()
