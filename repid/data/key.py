"""The routing key: which message, for which actor, in which queue, how urgent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from repid.data.priorities import PrioritiesT

K = TypeVar("K", bound="RoutingKey")


@dataclass(frozen=True, slots=True, eq=False)
class RoutingKey:
    """Identifies a message and routes it to an actor (`topic`) in a queue.

    Plain data, as in repid 1.x. A consumer hands out its keys as
    `repid.brokers.delivery.DeliveredKey`, a subclass that also knows its delivery; keys
    compare and hash by their four fields whatever their class.
    """

    id_: str
    topic: str
    queue: str = "default"
    priority: int = PrioritiesT.MEDIUM.value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoutingKey):
            return NotImplemented
        return (self.id_ == other.id_ and self.topic == other.topic
                and self.queue == other.queue and self.priority == other.priority)

    def __hash__(self) -> int:
        return hash((self.id_, self.topic, self.queue, self.priority))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id_, "topic": self.topic, "queue": self.queue, "priority": self.priority}

    @classmethod
    def from_dict(cls: type[K], data: dict[str, Any]) -> K:
        return cls(
            id_=str(data["id"]),
            topic=str(data["topic"]),
            queue=str(data["queue"]),
            priority=int(data["priority"]),
        )
