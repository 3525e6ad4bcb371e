"""The routing key: which message, for which actor, in which queue, how urgent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from repid.data.priorities import PrioritiesT
from repid.data.stash import Stash


@dataclass(frozen=True, slots=True)
class RoutingKey:
    """Identifies a message and routes it to an actor (`topic`) in a queue.

    `handle` is the broker's own reference to a message it delivered (a delivery tag,
    an in-flight entry); it is set only on consumed keys and never compared or printed.
    `stash` is the plugins' state for this delivery (see `repid.data.stash`).
    """

    id_: str
    topic: str
    queue: str = "default"
    priority: int = PrioritiesT.MEDIUM.value
    handle: Any = field(default=None, compare=False, repr=False)
    #: the plugins' state for this delivery, made with the key: a field, so reading it
    #: (every hook that names `stash` does) is a slot read, not a call
    stash: Stash = field(default_factory=Stash, init=False, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id_, "topic": self.topic, "queue": self.queue, "priority": self.priority}

    @classmethod
    def from_dict(cls, data: dict[str, Any], handle: Any = None) -> RoutingKey:
        return cls(
            id_=str(data["id"]),
            topic=str(data["topic"]),
            queue=str(data["queue"]),
            priority=int(data["priority"]),
            handle=handle,
        )
