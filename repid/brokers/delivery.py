"""Delivery: one message as a consumer hands it out, and the one owner of its settle.

A consumer yields a `Delivery` per message it takes. It holds what the message is (`key`,
`payload`, `params`, `category`), what the broker needs to settle it (`handle`: a lease,
a delivery tag), the plugins' `stash` for this delivery, and the only calls that settle
it: `ack()`, `nack(reason)`, `reject()` and `requeue(params, reason)`. Exactly one of them
takes effect: a second raises `AlreadySettledError` before anything reaches the broker
(the broker's public settle methods claim the delivery first, `Delivery.claim`, whether
they are called through the delivery or with its key).

    async for delivery in broker.consume("default"):
        ...
        await delivery.ack()

For repid 1.x code a delivery is also the `(key, payload, params)` triple 1.x consumers
yielded (`key, payload, params = delivery`), and `broker.ack(key)` with that key settles
the delivery it came from: the key is a `DeliveredKey`, a `RoutingKey` (equal to the plain
one with the same fields) that knows its delivery. Its `key.stash` reads the delivery's
stash: kept for this release, for plugins written when the stash hung off the key; hooks
receive it as their `stash` argument.

The settle calls go through the broker's public methods, so the plugins' `repid_ack`,
`repid_nack`, `repid_reject` and `repid_requeue` wrappers run around each; the broker's
implementation receives the key and the handle (`MessageBroker._ack(key, handle)` ...).
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from repid.data import MessageCategory, Parameters, RoutingKey, Stash
from repid.errors import AlreadySettledError

if TYPE_CHECKING:
    from repid.brokers.base import MessageBroker


class DeliveredKey(RoutingKey):
    """The key of a delivered message: a `RoutingKey` in every respect (equal to, and
    hashed as, the plain key with the same fields), that also knows its `delivery`."""

    __slots__ = ("delivery",)

    delivery: Delivery

    @classmethod
    def of(cls, key: RoutingKey) -> DeliveredKey:
        """A delivered key with `key`'s fields (not yet attached to a delivery)."""
        return cls(key.id_, key.topic, key.queue, key.priority)

    @property
    def stash(self) -> Stash:
        """The delivery's stash (read-through, kept for this release: hooks receive it as
        `stash`)."""
        return self.delivery.stash

    @property
    def handle(self) -> Any:
        """The broker's reference to the delivery (read-through)."""
        return self.delivery.handle

    def plain(self) -> RoutingKey:
        """The same key as plain data, without its delivery (e.g. for a new message)."""
        return RoutingKey(*(getattr(self, f.name) for f in fields(RoutingKey)))


class Delivery:
    """One delivered message and the calls that settle it (see the module docstring)."""

    __slots__ = ("_stash", "broker", "category", "delivery_count", "handle", "key", "params",
                 "payload", "settled_by")

    def __init__(self, broker: MessageBroker, key: DeliveredKey, payload: str,
                 params: Parameters, category: MessageCategory = MessageCategory.NORMAL,
                 handle: Any = None, delivery_count: int = 1) -> None:
        object.__setattr__(key, "delivery", self)  # a frozen dataclass: set once, here
        self.broker = broker
        self.key = key
        self.payload = payload
        self.params = params
        self.category = category
        #: the broker's own reference: a lease, a delivery tag (None: settled by id)
        self.handle = handle
        #: how many times the message was delivered, this delivery included, counting only
        #: deliveries that ended unsettled (promise 8 of `repid.brokers.base`); the
        #: consumer reads it from the broker's handle when it hands the delivery out
        self.delivery_count = delivery_count
        self._stash: Stash | None = None
        #: the settle that took effect ("ack", "nack", ...), None while unsettled
        self.settled_by: str | None = None

    def __repr__(self) -> str:
        state = self.settled_by or "unsettled"
        return f"Delivery({self.key!r}, {self.category.value}, {state})"

    # --- repid 1.x's (key, payload, params) ---

    def __iter__(self) -> Iterator[Any]:
        return iter((self.key, self.payload, self.params))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> Any:
        return (self.key, self.payload, self.params)[index]

    # --- settling ---

    @property
    def stash(self) -> Stash:
        """The plugins' state for this delivery (`repid.data.stash`), made when first read:
        with no plugin, nothing reads it."""
        stash = self._stash
        if stash is None:
            stash = self._stash = Stash()
        return stash

    @property
    def is_settled(self) -> bool:
        """Whether one of the settle calls was made (whatever the broker answered)."""
        return self.settled_by is not None

    def claim(self, action: str) -> None:
        """Mark the delivery settled by `action`; `AlreadySettledError` if it already was.
        The broker's public settle methods claim before anything reaches the broker
        (through `claimed`)."""
        if self.settled_by is not None:
            raise AlreadySettledError(
                f"cannot {action} message {self.key.id_}: it was already settled (already "
                f"acked, nacked, rejected, retried or rescheduled: here by "
                f"{self.settled_by}); a message is settled once")
        self.settled_by = action

    def ack(self) -> Coroutine[Any, Any, None]:
        """Done: the broker removes the message."""
        return self.broker.ack(self)

    def nack(self, reason: str | None = None) -> Coroutine[Any, Any, None]:
        """Dead-letter the message, keeping `reason` in its `DEAD_REASON_HEADER`."""
        return self.broker.nack(self, reason)

    def reject(self) -> Coroutine[Any, Any, None]:
        """Return the message to its queue as it was, no retry counted."""
        return self.broker.reject(self)

    def requeue(self, params: Parameters, reason: str | None = None,
                payload: str | None = None) -> Coroutine[Any, Any, None]:
        """Replace the message by one with `params` (and `payload`, default the same),
        ready at its delay; `reason` is one of `REQUEUE_REASONS`."""
        return self.broker.requeue(self, self.payload if payload is None else payload,
                                   params, reason)


def claimed(broker: MessageBroker, message: RoutingKey | Delivery, action: str) -> Delivery:
    """The delivery a settle call names (`delivery_of`), claimed for `action`
    (`Delivery.claim`: `AlreadySettledError` if it was settled already)."""
    delivery = message if type(message) is Delivery else delivery_of(broker, message)
    delivery.claim(action)
    return delivery


def delivery_of(broker: MessageBroker, message: RoutingKey | Delivery) -> Delivery:
    """The delivery a settle call names: `message` itself, the delivery of a delivered
    key, or, for a plain key (a message the caller knows by id), a new delivery with no
    handle, which the broker settles by id where it can."""
    if isinstance(message, Delivery):
        return message
    if isinstance(message, DeliveredKey):
        return message.delivery
    return Delivery(broker, DeliveredKey.of(message), "", Parameters())
