"""Types of the pytest plugin's fixtures, exported by `repid` for annotations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from unittest.mock import MagicMock

if TYPE_CHECKING:
    from repid.brokers.in_memory import InMemoryQueue
    from repid.queue import Queue


@dataclass(slots=True)
class EventLog:
    """One broker call seen during a test, logged when it starts (so in call order):
    `function` names it (`enqueue`, `consume`, `ack`, `store_bucket`, `actor_run`, ...);
    `args` holds its arguments in their v1 order and `kwargs` the same by name; `result`
    is filled in when the call returns."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    timestamp: float
    perf_counter: float


GetMockedActorT = Callable[[str], MagicMock]
GetEventLogT = Callable[[], list[EventLog]]
GetInMemoryQueueT = Callable[["Queue | str"], "InMemoryQueue | None"]
