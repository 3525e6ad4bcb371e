"""ConsumerLink: everything a consumer of one RabbitMQ queue asks of its broker, and
nothing more.

The broker builds one for each consumer it creates; consumers reach the broker only
through it. Through it a consumer checks that its queue exists, opens its channel on the
broker's robust connection, learns the arguments and the delivery-ack timeout of its
subscription, reads the broker's settings each time it uses one, and replaces a message
by a confirmed copy (the broker's `_move`): to count a delivery, to give a message back
uncounted, to dead-letter poison, or to send an early message back to the delay levels.
`EndedScans` keeps the ended DELAYED/DEAD scans whose handed-out messages are not all
settled, until a later scan of the same part takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any, Protocol

from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from repid.brokers.rabbitmq import _codec as codec
from repid.brokers.rabbitmq import _topology as topology
from repid.brokers.rabbitmq._acks import CHANNEL_ERRORS, return_to_queue, settle
from repid.brokers.rabbitmq._layout import ClassicLayout
from repid.data import MessageCategory, Parameters, RoutingKey
from repid.errors import EnqueueNotConfirmedError, PayloadDecodeError, QueueNotDeclaredError

logger = logging.getLogger("repid.brokers.rabbitmq")

#: RabbitMQ's own default delivery-acknowledgement timeout (consumer_timeout)
SERVER_DEFAULT_CONSUMER_TIMEOUT = timedelta(minutes=30)

#: the broker's `_move(message, exchange, routing_key, queue_name, set_headers)`
Move = Callable[[DeliveredMessage, str, str, str, dict[str, Any] | None], Awaitable[bool]]
#: the broker's `_enqueue_counted(key, payload, params, earlier deliveries)`
EnqueueCounted = Callable[[RoutingKey, str, Parameters, int], Awaitable[None]]


class BrokerSettings(Protocol):
    """The public settings of the broker its consumers read each time they use one."""

    operation_timeout: float
    reconnect_interval: float
    default_prefetch: int
    consumer_timeout: timedelta | None


class EndedScan(Protocol):
    """A DELAYED or DEAD scan as `EndedScans` sees it."""

    queue_name: str
    category: MessageCategory

    async def close_channel(self) -> None:
        """Close the scan's channel: RabbitMQ returns whatever it still holds."""


class EndedScans:
    """Ended DELAYED/DEAD scans whose handed-out messages are not all settled, kept
    (strongly) until those are settled or a later scan of the same part takes over."""

    __slots__ = ("_scans",)

    def __init__(self) -> None:
        self._scans: set[EndedScan] = set()

    def keep(self, scan: EndedScan) -> None:
        self._scans.add(scan)

    def forget(self, scan: EndedScan) -> None:
        self._scans.discard(scan)

    def clear(self) -> None:
        """The connection closes, and the scans' channels with it."""
        self._scans.clear()

    async def release(self, queue_name: str, category: MessageCategory) -> None:
        """Before a DELAYED or DEAD scan: return what earlier, ended scans of the same part
        handed out and never settled (their channels close; see `RabbitScanConsumer`)."""
        for scan in list(self._scans):
            if scan.queue_name == queue_name and scan.category is category:
                await scan.close_channel()


class ConsumerLink:
    """What the consumers of one queue use of their broker (see the module docstring)."""

    __slots__ = ("_check_queue", "_connection", "_enqueue_counted", "_ensure_topology",
                 "_move", "_server_version", "layout", "queue", "scans", "settings")

    def __init__(self, queue: str, *, settings: BrokerSettings,
                 connection: Callable[[], Awaitable[AbstractRobustConnection]],
                 check_queue: Callable[[str], Awaitable[tuple[int, int]]],
                 ensure_topology: Callable[[], Awaitable[None]],
                 server_version: Callable[[], tuple[int, ...]],
                 move: Move, enqueue_counted: EnqueueCounted, scans: EndedScans,
                 layout: ClassicLayout | None = None) -> None:
        self.queue = queue
        #: how the broker lays queues out (classic or quorum queues, see `_layout.py`)
        self.layout = layout or ClassicLayout()
        #: the broker's ended scans (shared by all its consumers)
        self.scans = scans
        #: the broker's public settings, read at each use so a changed one applies at once
        self.settings = settings
        self._connection = connection
        self._check_queue = check_queue
        self._ensure_topology = ensure_topology
        self._server_version = server_version
        self._move = move
        self._enqueue_counted = enqueue_counted

    # --- the connection and the topology ---

    def connection(self) -> Awaitable[AbstractRobustConnection]:
        """The broker's open robust connection; BrokerConnectionError if not connected."""
        return self._connection()

    def check_queue(self) -> Awaitable[tuple[int, int]]:
        """(ready, dead) message counts of the queue; QueueNotDeclaredError when it does not
        exist (checked on a short-lived channel, never the consumer's own)."""
        return self._check_queue(self.queue)

    def ensure_topology(self) -> Awaitable[None]:
        """Declare the shared exchanges and delay levels once per connection."""
        return self._ensure_topology()

    def _per_consumer_timeout_supported(self) -> bool:
        return self._server_version() >= (3, 12)

    def consumer_arguments(self) -> dict[str, Any] | None:
        """basic.consume arguments: `x-consumer-timeout` where the server supports it."""
        timeout = self.settings.consumer_timeout
        if timeout is None or not self._per_consumer_timeout_supported():
            return None
        return {"x-consumer-timeout": int(timeout.total_seconds() * 1000)}

    def effective_consumer_timeout(self) -> timedelta | None:
        """The delivery-ack timeout RabbitMQ applies to the broker's consumers."""
        timeout = self.settings.consumer_timeout
        if timeout is not None and self._per_consumer_timeout_supported():
            return timeout
        return timeout or SERVER_DEFAULT_CONSUMER_TIMEOUT

    # --- the queue's layout (classic or quorum queues) ---

    def sources(self) -> list[str]:
        """The RabbitMQ queues a consumer of NORMAL messages subscribes to, highest
        priority first (one per priority level with quorum queues, see `_levels.py`)."""
        return self.layout.work_queues(self.queue)

    def delay_levels(self) -> list[str]:
        """The broker's delay-level queues, longest first (a DELAYED scan reads them)."""
        return [self.layout.level_queue(k) for k in reversed(range(topology.LEVELS))]

    def holds_delayed(self, routing_key: str) -> bool:
        """Whether a message read from a delay level, with `routing_key`, is this queue's."""
        return topology.queue_of(topology.destination_of(routing_key)) == self.queue

    async def count_redelivery(self, message: DeliveredMessage) -> int | None:
        """Deliveries counted (promise 8), for a NORMAL message arriving `redelivered`: the
        earlier deliveries to hand it out with, or None when it was replaced instead by a
        copy carrying them (classic queues keep no count, see `_consumer.py`); with quorum
        queues RabbitMQ counts them, and the message is handed out as it is."""
        earlier = self.layout.earlier(message)
        if self.layout.server_counts:
            return earlier
        if await self.replace(message, {codec.HEADER_DELIVERIES: earlier}):
            return None
        return earlier  # no counted copy stored: hand out, counted here

    # --- replacing a message by a confirmed copy ---

    def replace(self, message: DeliveredMessage,
                set_headers: dict[str, Any] | None) -> Awaitable[bool]:
        """Replace `message` by a copy at the tail of this queue (with the AMQP headers in
        `set_headers` set), confirmed before the original is acked: False (the original
        still held) when the copy could not be stored (see the broker's `_move`)."""
        return self._move(message, "", self.queue, self.queue, set_headers)

    async def give_back(self, message: DeliveredMessage) -> None:
        """Return a NORMAL message to its queue on purpose, uncounted: a copy with the same
        `x-repid-deliveries` replaces it (see `_consumer.py`); basic.reject requeue=True
        (which counts once) only if that copy cannot be stored."""
        if not await self._move(message, "", self.queue, self.queue, None):
            await return_to_queue(message)

    async def delay_again(self, message: DeliveredMessage, earlier: int, key: RoutingKey,
                          payload: str, params: Parameters) -> None:
        """Send a message that arrived before its time back to the delay levels, carrying
        its `earlier` unsettled deliveries. If that fails it is returned to its queue after
        `reconnect_interval` (not at once, which would spin while RabbitMQ refuses
        publishes)."""
        try:
            await self._enqueue_counted(_plain(key), payload, params, earlier)
        except (EnqueueNotConfirmedError, QueueNotDeclaredError, *CHANNEL_ERRORS) as exc:
            logger.warning("could not delay message %r again (%s); returning it to %r in "
                           "%.1f s", key.id_, exc, key.queue, self.settings.reconnect_interval)
            await asyncio.sleep(self.settings.reconnect_interval)
            await return_to_queue(message)
            return
        with suppress(*CHANNEL_ERRORS):  # closed: RabbitMQ delivers it again (a duplicate)
            await settle(message, None)

    async def dead_letter_poison(self, message: DeliveredMessage,
                                 reason: PayloadDecodeError) -> bool:
        """Poison isolated (promise 7): log why, and move the undecodable message alone to
        the queue's DLQ, as a confirmed copy carrying the reason in `x-repid-dead-reason`,
        then ack it; the consumer carries on. False when the copy could not be stored (the
        message is then still held; the caller decides where it goes)."""
        dead = topology.dead_queue(self.queue)
        logger.error("message %r on queue %r cannot be decoded (%s); moved to %r",
                     codec.describe(message), self.queue, reason, dead)
        return await self._move(message, "", dead, self.queue, {
            codec.HEADER_DEAD_REASON: poison_reason(reason)})


def poison_reason(error: PayloadDecodeError) -> str:
    """The dead reason of a poison message: its `x-repid-dead-reason` header, and the
    `reason` of the `repid_nack` hook its dead-lettering fires."""
    return codec.dead_reason(f"cannot be decoded: {error}")


def _plain(key: RoutingKey) -> RoutingKey:
    """`key` as plain data (a consumed key also knows its delivery), for a new message."""
    return RoutingKey(key.id_, key.topic, key.queue, key.priority)
