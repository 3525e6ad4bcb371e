"""RedisHandle: the `handle` of a `Delivery` a Redis consumer hands out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HandleHolder(Protocol):
    """The consumer that holds a delivered message until its settle is attempted."""

    def on_settled(self, handle: RedisHandle) -> None:
        """Free the room the message took and stop extending its lease."""


@dataclass(slots=True, eq=False)
class RedisHandle:
    """The broker's reference to a message it delivered: where it is held, under which lease."""

    queue: str
    id_: str
    #: "inflight" (taken by a NORMAL consumer), "dead" or "delayed" (read by a snapshot)
    where: str
    #: the lease token TAKE issued; a settle with a stale token is refused ("" = no lease)
    token: str
    consumer: HandleHolder | None = None
    #: how many of the message's leases ran out before this delivery
    returns: int = 0
    released: bool = False
    #: set before `release()` when the settle took the message out of where it was held
    #: (an ack, a requeue, a nack of a delayed message), so a reader of the dead or delayed
    #: part yields it again if it comes back there
    moved: bool = False
    #: a poison message's id as Redis stores it (`id_` shows bytes that are not UTF-8
    #: escaped, see `repid.brokers._poison`): what its settle names
    stored_id: bytes | None = None

    def release(self) -> None:
        """Give the consumer its capacity back and stop extending the lease, once, whatever
        the settle's outcome."""
        if not self.released:
            self.released = True
            if self.consumer is not None:
                self.consumer.on_settled(self)

    def __repr__(self) -> str:
        return f"RedisHandle({self.queue!r}, {self.id_!r}, {self.where})"
