"""How a repid message `(key, payload, params)` is written into an AMQP message and read back.

The payload is the body (UTF-8). The key travels in AMQP properties and the parameters in
one AMQP header; RabbitMQ keeps both unchanged through requeue, delay levels and
dead-lettering, so `params.headers` (inside the parameters) arrive intact (promise 5). The
priority is the AMQP `priority` property, so the queue orders by it.

The broker talks to aiormq (aio-pika's protocol layer) for publishing and consuming, so
these work on pamqp `Basic.Properties` and aiormq `DeliveredMessage` directly: no per-message
aio-pika wrapper objects on the hot path.

Two more AMQP headers, outside the parameters, are written by the broker itself:
`x-repid-deliveries` counts the earlier deliveries of the message that ended unsettled
(see `_consumer.py`), and `x-repid-dead-reason` says why a dead message was dead-lettered;
`decode` puts the latter into `params.headers[DEAD_REASON_HEADER]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from repid.brokers.base import DEAD_REASON_HEADER
from repid.brokers.delivery import DeliveredKey
from repid.data import Parameters, RoutingKey
from repid.errors import PayloadDecodeError

#: the only header repid needs: the encoded Parameters (params.headers live inside it)
HEADER_PARAMS = "repid-params"
#: the key's priority, written only when it does not fit the AMQP priority octet
HEADER_PRIORITY = "repid-priority"
#: earlier deliveries of the message that ended unsettled (absent: none)
HEADER_DELIVERIES = "x-repid-deliveries"
#: RabbitMQ's count of earlier unacked deliveries, set by quorum queues on delivery
HEADER_SERVER_DELIVERIES = "x-delivery-count"
#: why a dead message was dead-lettered (the AMQP header and the params header agree)
HEADER_DEAD_REASON = DEAD_REASON_HEADER
#: a dead reason longer than this is cut: AMQP headers must fit one frame (128 KiB)
MAX_REASON_CHARS = 2000
#: AMQP delivery mode 2: the message is written to disk in a durable queue
PERSISTENT = 2


def encode(key: RoutingKey, payload: str, params: Parameters,
           deliveries: int = 0) -> tuple[bytes, Basic.Properties]:
    """Body and properties of a persistent AMQP message carrying the whole repid message
    (durability: it survives a broker restart in a durable queue).

    The key's id travels as `correlation_id` (not `message_id`, which aiormq uses to match
    returned messages to their publish and which must therefore be unique per publish),
    the topic as `type`, the priority as `priority`; one header holds the parameters, and
    `deliveries` (when not 0) is carried over from the message this one replaces.
    """
    headers: dict[str, Any] = {HEADER_PARAMS: params.encode()}
    if deliveries:
        headers[HEADER_DELIVERIES] = deliveries
    priority = key.priority
    if not 0 <= priority <= 255:
        headers[HEADER_PRIORITY] = priority
        priority = min(max(priority, 0), 255)
    return payload.encode(), Basic.Properties(
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=priority,
        correlation_id=key.id_,
        message_type=key.topic,
    )


def copy(message: DeliveredMessage,
         set_headers: Mapping[str, Any] | None = None) -> tuple[bytes, Basic.Properties]:
    """A persistent copy of a received message, byte for byte (used to move a message
    between queues without decoding it, e.g. a poison message to the dead-letter queue),
    with the AMQP headers in `set_headers` set (None removes one). `message_id` is left out
    so aiormq gives the new publish its own."""
    p = message.header.properties
    headers = dict(p.headers or {})
    # RabbitMQ's count belongs to the stored message, not to a new one (a quorum queue
    # would pass a copied value on unchanged on its first delivery).
    headers.pop(HEADER_SERVER_DELIVERIES, None)
    for name, value in (set_headers or {}).items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return message.body, Basic.Properties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=p.priority,
        correlation_id=p.correlation_id,
        message_type=p.message_type,
    )


def deliveries(message: DeliveredMessage) -> int:
    """The message's `x-repid-deliveries` header: earlier deliveries that ended unsettled
    (0 when absent or not a non-negative integer, so a bad header never makes it poison)."""
    value = (message.header.properties.headers or {}).get(HEADER_DELIVERIES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def server_deliveries(message: DeliveredMessage) -> int:
    """RabbitMQ's own count of the message's earlier deliveries that ended without an ack,
    the `x-delivery-count` header a quorum queue sets (0 when absent: classic queues)."""
    value = (message.header.properties.headers or {}).get(HEADER_SERVER_DELIVERIES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def dead_reason(text: str) -> str:
    """`text` fit for the `x-repid-dead-reason` header (cut to MAX_REASON_CHARS)."""
    if len(text) > MAX_REASON_CHARS:
        return text[:MAX_REASON_CHARS] + "..."
    return text


def stored_reason(message: DeliveredMessage) -> str | None:
    """The message's `x-repid-dead-reason` header as text; for a message RabbitMQ
    dead-lettered itself because it reached a quorum queue's `x-delivery-limit`, a reason
    saying so; else None."""
    return _reason_in(message.header.properties.headers or {})


def _reason_in(headers: Mapping[str, Any]) -> str | None:
    """`stored_reason` from the message's headers."""
    reason = headers.get(HEADER_DEAD_REASON)
    if reason is None:
        deaths = headers.get("x-death")  # absent on every message RabbitMQ did not move
        return None if deaths is None else _server_reason(deaths)
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def _server_reason(deaths: Any) -> str | None:
    """The dead reason of a message whose latest dead-lettering (the first entry of its
    `x-death` header) was RabbitMQ's delivery limit."""
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
        return None
    latest = deaths[0]
    if latest.get("reason") not in ("delivery_limit", b"delivery_limit"):
        return None
    queue = latest.get("queue")
    queue = queue.decode(errors="replace") if isinstance(queue, bytes) else str(queue)
    return (f"delivered more times without being settled than the x-delivery-limit of "
            f"quorum queue '{queue}' allows (max_deliveries): its worker died or stalled "
            "each time; dead-lettered by RabbitMQ")


def describe(message: DeliveredMessage) -> str:
    """The job id of a message, for log lines ('?' when it has none)."""
    return str(message.header.properties.correlation_id or "?")


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value:
        raise PayloadDecodeError(f"{name} is missing or not a string: {value!r}")
    return value


def decode(message: DeliveredMessage, queue: str) -> tuple[DeliveredKey, str, Parameters]:
    """The repid message inside `message`, which belongs to `queue` (the queue it was read
    from, or whose dead-letter or delay part held it); PayloadDecodeError names what is
    wrong (a poison message, which the consumer moves to the dead-letter queue)."""
    properties = message.header.properties
    headers = properties.headers or {}
    try:
        payload = message.body.decode()
    except UnicodeDecodeError as exc:
        raise PayloadDecodeError(f"body is not UTF-8: {exc}") from exc
    params = Parameters.decode(_text(headers.get(HEADER_PARAMS), f"header {HEADER_PARAMS!r}"))
    if HEADER_DEAD_REASON in headers or "x-death" in headers:  # only a dead message's
        reason = _reason_in(headers)
        if reason is not None:  # its reason joins params.headers (promise 6)
            params.headers[DEAD_REASON_HEADER] = reason
    priority = headers.get(HEADER_PRIORITY, properties.priority)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PayloadDecodeError(f"priority {priority!r} is not an integer")
    key = DeliveredKey(
        id_=_text(properties.correlation_id, "correlation_id (the job id)"),
        topic=_text(properties.message_type, "type (the job's topic)"),
        queue=queue,
        priority=priority,
    )
    return key, payload, params
