"""Stop signals (SIGINT, SIGTERM), handled the same way wherever a run is stopped: by the
worker's runner, a worker process of the `repid` command, and its supervisor.

The first signal asks for a graceful stop (running jobs get the grace time), the second
for a stop at once (running jobs go back to their queues), and, where the caller has one,
the third for a kill. `StopSignals` counts them and calls the caller's reaction;
`install` routes the signals to it, on the event loop or in the main thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("repid.worker")

#: what a stop reaction receives: the signal's name (`SIGTERM`)
Reaction = Callable[[str], None]
#: the signals that stop a run unless told otherwise
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Counts stop signals and calls `stop`, then `hurry`, then `kill` (or `hurry` again
    when there is no `kill`)."""

    __slots__ = ("hurry", "kill", "received", "stop")

    def __init__(self, stop: Reaction, hurry: Reaction, kill: Reaction | None = None) -> None:
        self.stop, self.hurry, self.kill = stop, hurry, kill
        #: how many stop signals came so far
        self.received = 0

    def __call__(self, signum: int) -> None:
        """One signal arrived (call it where the reactions may run)."""
        self.received += 1
        name = signal.Signals(signum).name
        if self.received == 1:
            self.stop(name)
        elif self.received == 2 or self.kill is None:
            self.hurry(name)
        else:
            self.kill(name)


def install(signals: Iterable[int], handler: Callable[[int], None],
            loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], None]:
    """Route `signals` to `handler(signum)`: on `loop` when given (the handler runs as a
    loop callback), else in the main thread's signal handler. Returns a function that
    puts the previous handling back. A signal that cannot be handled here (not the main
    thread) is logged and skipped."""
    on_loop: list[int] = []
    previous: dict[int, Any] = {}
    for sig in signals:
        try:
            if loop is not None:
                loop.add_signal_handler(sig, handler, sig)
                on_loop.append(sig)
            else:
                previous[sig] = signal.signal(sig, lambda signum, frame: handler(signum))
        except (RuntimeError, ValueError, NotImplementedError):
            logger.warning("cannot handle %s here (not the main thread?); stop the worker "
                           "with worker.stop()", signal.Signals(sig).name)

    def restore() -> None:
        for sig in on_loop:
            assert loop is not None
            loop.remove_signal_handler(sig)
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
