"""Poison messages as the DEAD readers hand them out, so they can be seen and deleted.

A dead message that cannot be decoded (promise 7 of `repid.brokers.base`) is still read
by `consume(category=DEAD)`, as a `Delivery` built here from what is known without
decoding it:

- the key is a `PoisonKey`: the message's id as the broker stores it (bytes that are not
  UTF-8 shown escaped), its queue, topic `POISON_TOPIC` (""), the default priority, and
  the broker's handle, so `ack` deletes it;
- the payload is the raw stored body as text (`show_raw`: bytes that are not UTF-8 shown
  as `\\xNN` escapes), "" when nothing is stored;
- the parameters are default ones whose `headers[DEAD_REASON_HEADER]` says why it is dead.

It cannot be sent back to its queue (it would not decode there either): `Message` refuses
`reschedule`, `retry` and `force_retry` of one with `PoisonMessageError`. `ack` deletes it;
`nack` and `reject` leave it where it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repid.brokers.delivery import DeliveredKey, Delivery
from repid.data import MessageCategory, Parameters, RoutingKey
from repid.data.headers import DEAD_REASON_HEADER
from repid.errors import PoisonMessageError

if TYPE_CHECKING:
    from repid.brokers.base import Consumer

#: the topic of a poison message's key (not known without decoding; the key of the
#: `repid_nack` hook its dead-lettering fired has the same)
POISON_TOPIC = ""


class PoisonKey(DeliveredKey):
    """The key of a dead message that cannot be decoded (see the module docstring); a
    delivered `RoutingKey` in every other respect."""

    __slots__ = ()


def show_raw(raw: bytes | str | None) -> str:
    """Stored bytes as text: UTF-8, with bytes that are not shown as `\\xNN` escapes
    ("" for nothing stored)."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")


def poison_message(reader: Consumer, id_: bytes | str | None, body: bytes | str | None,
                   reason: str, handle: Any) -> Delivery:
    """The delivery a DEAD `reader` hands out for its queue's undecodable message `id_`,
    stored as `body`, dead because of `reason`; `handle` is the broker's reference that
    its settles act on."""
    params = Parameters()
    params.headers[DEAD_REASON_HEADER] = reason
    key = PoisonKey(show_raw(id_), POISON_TOPIC, reader.queue_name)
    return Delivery(reader.broker, key, show_raw(body), params, MessageCategory.DEAD, handle)


def refuse_requeue(key: RoutingKey, action: str) -> None:
    """Raise PoisonMessageError if `key` is a poison message's: `action` (reschedule,
    retry) would put back a message that cannot be decoded."""
    if isinstance(key, PoisonKey):
        raise PoisonMessageError(
            f"cannot {action} dead message {key.id_!r} of queue {key.queue!r}: it cannot be "
            f"decoded (why: its headers[{DEAD_REASON_HEADER!r}]), so it would be poison "
            "again; delete it with `await msg.ack()` (or `repid dead delete`), and enqueue "
            "a corrected job if it is still needed")
