"""Actor-run timeouts: one loop timer for all the runs of a worker, not one per run.

A timer per run (`loop.call_later`, then its `cancel()`) made up a fifth of a no-op job's
cost in a worker: a `TimerHandle` made, pushed on the loop's heap, cancelled, and swept
off the heap later. Here a run adds a small entry to this module's heap of deadlines and
one loop timer is kept, for the earliest deadline not yet reached. A run that ends marks
its entry done and does nothing else; when the timer fires it cancels the tasks whose
deadline has passed and is set again for the next one. Done entries are dropped as they
reach the top of the heap, and the heap is rebuilt without them once they outnumber the
running ones by more than `SLACK`, so it stays in proportion to the runs going on.

Guarantee: a run's task is cancelled at its deadline (as the loop's own timers are: when
the loop gets to it), never before, and only while the run is going on (`start` to
`stop`). `timed_out` tells the run, as its `CancelledError` arrives, whether that
cancel was its deadline's, and takes the cancel request back from the task, as
`asyncio.timeout` does, so the task goes on normally.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from heapq import heapify, heappop, heappush
from typing import Any

#: an entry's states: running, ended before its deadline, cancelled at its deadline, and
#: cancelled with the cancel taken back (`timed_out`)
_RUNNING, _DONE, _FIRED, _SEEN = 0, 1, 2, 3
#: done entries allowed on the heap beyond twice the running ones before it is rebuilt
SLACK = 64

#: one run: [deadline (loop time), sequence number, task, state]; a list, compared as
#: the loop compares its timers (deadline, then order of arrival; never the task)
Entry = list[Any]


class Deadlines:
    """The deadlines of the runs of one worker (see the module's docstring)."""

    __slots__ = ("_heap", "_loop", "_order", "_running", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._running = 0
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, seconds: float) -> Entry:
        """Cancel the current task `seconds` from now, unless `stop(entry)` comes first."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a worker run again on another loop
            self.close()
            self._loop = loop
        task = asyncio.current_task(loop)
        assert task is not None, "an actor run is always inside a task"
        deadline = loop.time() + seconds
        entry = [deadline, next(self._order), task, _RUNNING]
        heappush(self._heap, entry)
        self._running += 1
        if deadline < self._timer_at:
            self._set_timer(deadline)
        return entry

    def stop(self, entry: Entry) -> None:
        """The run of `entry` ended: its deadline no longer applies."""
        if entry[3] != _RUNNING:
            return
        entry[3] = _DONE
        self._running -= 1
        heap = self._heap
        if len(heap) > 2 * self._running + SLACK:
            heap[:] = [e for e in heap if e[3] == _RUNNING]
            heapify(heap)

    def timed_out(self, entry: Entry) -> bool:
        """Whether the task's cancel came from `entry`'s deadline; if it did, the cancel
        request is taken back from the task (Python 3.11+), once."""
        state: int = entry[3]
        if state != _FIRED:
            return state == _SEEN
        entry[3] = _SEEN
        uncancel = getattr(entry[2], "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return True

    @property
    def held(self) -> int:
        """How many entries the heap holds, running and done (bounded by
        `2 * running + SLACK + 1`)."""
        return len(self._heap)

    def close(self) -> None:
        """Forget every deadline and the timer (the worker stopped)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        self._heap.clear()
        self._running = 0

    def _set_timer(self, at: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        """Cancel the runs whose deadline has passed; set the timer for the next one."""
        self._timer, self._timer_at = None, math.inf
        assert self._loop is not None
        now = self._loop.time()
        heap = self._heap
        while heap:
            entry = heap[0]
            if entry[3] != _RUNNING:
                heappop(heap)
            elif entry[0] > now:
                self._set_timer(entry[0])
                return
            else:
                heappop(heap)
                entry[3] = _FIRED
                self._running -= 1
                entry[2].cancel()
