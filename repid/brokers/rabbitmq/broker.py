"""The RabbitMQ message broker, on aio-pika.

Each of the base module's delivery promises is kept here, in `consumer.py` or in
`link.py`, and the comment next to the code that keeps it says which. The topology
(queues, dead-letter exchange, delay levels) is described in `topology.py` and
docs/brokers/rabbitmq.md. Consumers reach the broker only through the `ConsumerLink` it
gives each of them (`_link`), so its public API is `MessageBroker`'s and its options.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelClosed, ChannelNotFoundEntity
from pamqp.commands import Basic

from repid.brokers.base import (
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_SIZE,
    Consumer,
    MessageBroker,
    RawMessage,
)
from repid.brokers.dsn import mask_dsn, require_dsn
from repid.brokers.rabbitmq import codec, management, topology, v1_migration
from repid.brokers.rabbitmq.acks import CHANNEL_ERRORS, return_to_queue, settle
from repid.brokers.rabbitmq.consumer import (
    Delivery,
    RabbitConsumer,
    RabbitConsumerBase,
    RabbitScanConsumer,
)
from repid.brokers.rabbitmq.errors import ConnectErrors, PublishErrors, RabbitErrors
from repid.brokers.rabbitmq.link import ConsumerLink, EndedScans
from repid.brokers.rabbitmq.management import vhost_of
from repid.data import MessageCategory, Parameters, RoutingKey
from repid.errors import (
    BrokerConnectionError,
    EnqueueNotConfirmedError,
    QueueDeclareError,
    QueueNotDeclaredError,
)

logger = logging.getLogger("repid.brokers.rabbitmq")

#: enqueue_many keeps at most this many publishes awaiting their confirms at once
_MANY_WINDOW = 2000


class RabbitMessageBroker(MessageBroker):
    """Messages in RabbitMQ: durable queues, persistent messages, publisher confirms,
    priorities, a dead-letter queue per queue and delays without head-of-line blocking.

    `dsn` is an `amqp://` or `amqps://` URL (aio-pika handles TLS). `consumer_timeout` is
    the delivery-ack timeout to ask for per consumer on RabbitMQ >= 3.12; on older servers
    it is the server's `consumer_timeout` setting (default 30 min), which repid only warns
    about when a job's timeout exceeds it. `default_prefetch` is the prefetch of consumers
    created without `max_unacked_messages`. `connection_name` shows in RabbitMQ's
    connection list. `management_url` (e.g. `http://guest:guest@127.0.0.1:15672`) lets
    `queue_stats` report in-flight messages through the management plugin's HTTP API.
    `max_deliveries` is how many deliveries ending unsettled a message may have before the
    worker dead-letters it (counted in a header, see `consumer.py`); `max_message_size`
    bounds a payload (see `MessageBroker.max_message_size`).
    """

    system: ClassVar[str] = "rabbitmq"

    def __init__(
        self,
        dsn: str,
        *,
        publish_timeout: float = 30.0,
        operation_timeout: float = 30.0,
        reconnect_interval: float = 1.0,
        consumer_timeout: timedelta | None = None,
        default_prefetch: int = 100,
        connection_name: str = "repid",
        management_url: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries is {max_deliveries}; give 1 or more")
        self.max_deliveries = max_deliveries
        self.max_message_size = max_message_size
        self.dsn = require_dsn(dsn, "RabbitMessageBroker", "amqp://guest:guest@localhost:5672/")
        self.management_url = management_url
        self.publish_timeout = publish_timeout
        self.operation_timeout = operation_timeout
        self.reconnect_interval = reconnect_interval
        self.consumer_timeout = consumer_timeout
        self.default_prefetch = default_prefetch
        self.connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._connect_lock = asyncio.Lock()
        self._topology_lock = asyncio.Lock()
        self._topology_ready = False
        self._known_queues: set[str] = set()
        self._consumers: weakref.WeakSet[RabbitConsumerBase] = weakref.WeakSet()
        self._scans = EndedScans()

    def __repr__(self) -> str:
        # Secrets never reach a repr: the password is masked.
        extra = "" if self.management_url is None else (
            f", management_url={mask_dsn(self.management_url)!r}")
        return f"RabbitMessageBroker(dsn={mask_dsn(self.dsn)!r}{extra})"

    def _scrub(self, text: str) -> str:
        """`text` with the DSN's password masked, for error messages built from others'."""
        password = aio_pika.connection.make_url(self.dsn).password
        return text.replace(password, "***") if password else text

    # --- connection ---

    async def connect(self) -> None:
        """Open a robust connection (aio-pika reconnects it, re-opens its channels and
        resumes its consumers after a drop or a broker restart) and a confirm channel."""
        async with self._connect_lock:
            if self._connection is not None:
                return
            with ConnectErrors(self.dsn, self.operation_timeout, self._scrub):
                connection = await aio_pika.connect_robust(
                    self.dsn, reconnect_interval=self.reconnect_interval,
                    timeout=self.operation_timeout,
                    client_properties={"connection_name": self.connection_name},
                )
            try:
                # Confirmed enqueue: publisher confirms, and unroutable returns raise.
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
            except BaseException:
                await connection.close()
                raise
            assert isinstance(channel, AbstractRobustChannel)
            connection.reconnect_callbacks.add(self._on_reconnect)
            self._connection, self._channel = connection, channel

    def _on_reconnect(self, *_: Any) -> None:
        """After a reconnect the server may be a fresh one: check the topology again."""
        logger.info("reconnected to RabbitMQ at %s", mask_dsn(self.dsn))
        self._topology_ready = False
        self._known_queues.clear()

    async def disconnect(self) -> None:
        """Close the connection; RabbitMQ returns every unacked message to its queue."""
        async with self._connect_lock:
            # Consumers end (StopAsyncIteration) instead of waiting on a closed connection.
            for consumer in list(self._consumers):
                with suppress(*CHANNEL_ERRORS):
                    await consumer.finish()
            connection, self._connection = self._connection, None
            self._channel = None
            self._topology_ready = False
            self._known_queues.clear()
            self._scans.clear()  # their channels close with the connection
            if connection is not None:
                await connection.close()

    async def _robust_connection(self) -> AbstractRobustConnection:
        """The open connection; raises if `connect()` was not called."""
        if self._connection is None:
            raise BrokerConnectionError(
                f"{self!r} is not connected; call `await connection.connect()` first")
        return self._connection

    @asynccontextmanager
    async def _admin_channel(self) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A short-lived plain channel for declarations and passive checks: a 404 or 406
        closes only this channel, never the publishing or consuming ones."""
        connection = await self._robust_connection()
        if not connection.connected.is_set():
            # Only when reconnecting: asyncio.wait_for of Python < 3.12 can swallow a
            # cancellation that arrives as its inner wait completes.
            with RabbitErrors(BrokerConnectionError,
                              f"RabbitMQ at {mask_dsn(self.dsn)} is unreachable",
                              f"still reconnecting after {self.operation_timeout} s",
                              catch=(asyncio.TimeoutError,)):
                await asyncio.wait_for(connection.ready(), self.operation_timeout)
        transport = connection.transport
        if transport is None:
            raise BrokerConnectionError(f"RabbitMQ at {mask_dsn(self.dsn)} is unreachable")
        channel = await transport.connection.channel(
            publisher_confirms=False, timeout=self.operation_timeout)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with suppress(*CHANNEL_ERRORS):
                    await channel.close()

    def _server_version(self) -> tuple[int, ...]:
        """RabbitMQ's version from the connection handshake ((0,) when unknown)."""
        transport = self._connection.transport if self._connection else None
        if transport is None:
            return (0,)
        raw = transport.connection.server_properties.get("version", b"0")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            return tuple(int(part) for part in text.split(".")[:3])
        except ValueError:
            return (0,)

    # --- topology ---

    async def _ensure_topology(self) -> None:
        """Declare the shared exchanges and delay levels once per connection. Idempotent."""
        if self._topology_ready:
            return
        async with self._topology_lock:
            if self._topology_ready:
                return
            async with self._admin_channel() as channel:
                await self._declare_topology(channel)
            self._topology_ready = True

    async def _declare_topology(self, ch: aiormq.abc.AbstractChannel) -> None:
        # Nothing dropped silently: a delayed message whose queue was deleted meanwhile
        # lands in `repid.unroutable` through the deliver exchange's alternate exchange.
        await ch.exchange_declare(topology.UNROUTABLE_EXCHANGE, exchange_type="fanout",
                                  durable=True)
        await ch.queue_declare(topology.UNROUTABLE_QUEUE, durable=True)
        await ch.queue_bind(topology.UNROUTABLE_QUEUE, topology.UNROUTABLE_EXCHANGE)
        await ch.exchange_declare(topology.DEAD_EXCHANGE, exchange_type="direct", durable=True)
        await ch.exchange_declare(
            topology.DELIVER_EXCHANGE, exchange_type="topic", durable=True,
            arguments={"alternate-exchange": topology.UNROUTABLE_EXCHANGE})
        for level in range(topology.LEVELS):
            await ch.exchange_declare(topology.level_exchange(level), exchange_type="topic",
                                      durable=True)
        for level in range(topology.LEVELS):
            # Delays without head-of-line blocking: one fixed TTL per level queue, so every
            # message in it expires in arrival order; then it dead-letters onward.
            queue = topology.level_queue(level)
            await ch.queue_declare(queue, durable=True, arguments={
                "x-message-ttl": topology.level_ttl_ms(level),
                "x-dead-letter-exchange": topology.next_exchange(level),
            })
            await ch.queue_bind(queue, topology.level_exchange(level),
                                routing_key=topology.level_queue_pattern(level))
            await ch.exchange_bind(topology.next_exchange(level),
                                   topology.level_exchange(level),
                                   routing_key=topology.level_skip_pattern(level))

    async def _check_queue(self, queue_name: str) -> tuple[int, int]:
        """(ready, dead) message counts; QueueNotDeclaredError when it does not exist."""
        try:
            async with self._admin_channel() as channel:
                ready = await channel.queue_declare(queue_name, passive=True)
                dead = await channel.queue_declare(topology.dead_queue(queue_name),
                                                   passive=True)
        except ChannelNotFoundEntity:
            raise QueueNotDeclaredError(queue_name) from None
        self._known_queues.add(queue_name)
        return ready.message_count or 0, dead.message_count or 0

    async def _queue_declare(self, queue_name: str) -> None:
        await self._ensure_topology()
        try:
            async with self._admin_channel() as ch:
                # Durable queue; priorities through x-max-priority; nack dead-letters
                # through the dead-letter exchange into `<queue>:dead` (promise 6).
                await ch.queue_declare(queue_name, durable=True, arguments={
                    "x-max-priority": topology.MAX_PRIORITY,
                    "x-dead-letter-exchange": topology.DEAD_EXCHANGE,
                    "x-dead-letter-routing-key": queue_name,
                })
                await ch.queue_declare(topology.dead_queue(queue_name), durable=True)
                await ch.queue_bind(topology.dead_queue(queue_name), topology.DEAD_EXCHANGE,
                                    routing_key=queue_name)
                await ch.queue_bind(queue_name, topology.DELIVER_EXCHANGE,
                                    routing_key=topology.deliver_pattern(queue_name))
        except ChannelClosed as exc:
            v1 = await v1_migration.explain_declare_failure(self.dsn, queue_name)
            raise QueueDeclareError(v1 or
                f"cannot declare queue {queue_name!r} on RabbitMQ: {exc}. If it exists "
                "with other arguments (not declared by repid 2), delete it first.") from None
        self._known_queues.add(queue_name)

    async def _drop_delayed(self, queue_name: str) -> None:
        """Delete the queue's messages waiting in the shared delay levels."""
        scan = RabbitScanConsumer(self, self._link(queue_name), MessageCategory.DELAYED,
                                  stop_when_empty=True)
        try:
            while True:
                try:
                    key, _, _ = await scan.read()
                except StopAsyncIteration:
                    return
                await self._ack(key)
        finally:
            await scan.finish()

    async def _queue_flush(self, queue_name: str) -> None:
        await self._check_queue(queue_name)
        await self._drop_delayed(queue_name)
        async with self._admin_channel() as ch:
            await ch.queue_purge(queue_name)
            await ch.queue_purge(topology.dead_queue(queue_name))

    async def _queue_delete(self, queue_name: str) -> None:
        self._known_queues.discard(queue_name)
        with suppress(QueueNotDeclaredError):
            await self._check_queue(queue_name)
            await self._drop_delayed(queue_name)
        async with self._admin_channel() as ch:
            await ch.queue_delete(queue_name)
            await ch.queue_delete(topology.dead_queue(queue_name))
        self._known_queues.discard(queue_name)

    async def queue_stats(self, queue_name: str) -> dict[str, int]:
        """`ready` and `dead` from RabbitMQ's counts; `in_flight` from the management API
        when `management_url` is set (AMQP does not report it), else -1; `delayed` (spread
        over the shared delay levels) is -1."""
        ready, dead = await self._check_queue(queue_name)
        in_flight = -1
        if self.management_url:
            in_flight = await management.unacked(self.management_url, vhost_of(self.dsn),
                                                 queue_name, self.operation_timeout)
        return {"ready": ready, "delayed": -1, "in_flight": in_flight, "dead": dead}

    async def queue_names(self) -> list[str] | None:
        """repid's queues (not their dead-letter parts, nor the delay levels) through the
        management API; None without `management_url` (AMQP cannot list queues)."""
        if not self.management_url:
            return None
        return await management.repid_queues(self.management_url, vhost_of(self.dsn),
                                              self.operation_timeout)

    # --- publishing ---

    async def _publish(self, exchange: str, routing_key: str,
                       message: tuple[bytes, Basic.Properties], queue_name: str) -> None:
        """Publish with mandatory=True and wait for the confirm (promise 1): returns only
        once RabbitMQ has stored the message, else raises."""
        channel = self._channel
        if channel is None:
            raise BrokerConnectionError(
                f"{self!r} is not connected; call `await connection.connect()` first")
        body, properties = message
        with PublishErrors(queue_name, self.publish_timeout):
            try:
                if channel.is_closed:
                    # Reconnecting: nothing was sent yet, so waiting for the channel is safe.
                    await asyncio.wait_for(channel.ready(), self.publish_timeout)
                underlay = await channel.get_underlay_channel()
                assert isinstance(underlay, aiormq.Channel)
                # wait=False: no separate wait for the socket to drain, the confirm says
                # more.
                await underlay.basic_publish(
                    body, exchange=exchange, routing_key=routing_key, properties=properties,
                    mandatory=True, timeout=self.publish_timeout, wait=False)
            except ChannelNotFoundEntity:
                # An exchange of the shared topology is gone (a fresh server, or deleted by
                # hand): declare it again before the next delayed publish.
                self._topology_ready = False
                raise

    async def _route_known(self, queue_name: str) -> None:
        """Before a delayed publish: the delay levels exist and the queue does, since the
        delay levels accept any message and could not report an unknown queue."""
        await self._ensure_topology()
        if queue_name not in self._known_queues:
            await self._check_queue(queue_name)

    async def _enqueue(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        await self._enqueue_counted(key, payload, params, 0)

    async def _enqueue_counted(self, key: RoutingKey, payload: str, params: Parameters,
                               deliveries: int) -> None:
        """`_enqueue` of a message that carries over `deliveries` earlier unsettled
        deliveries of the one it replaces (0 for a new message)."""
        message = codec.encode(key, payload, params, deliveries)
        # Delays to the second: whole seconds rounded up, so never early.
        seconds = topology.delay_seconds(params.ready_at)
        if seconds:
            await self._route_known(key.queue)
            await self._publish(topology.entry_exchange(),
                                topology.delay_routing_key(seconds, key.queue),
                                message, key.queue)
        else:
            # Unknown queue: mandatory publish is returned -> QueueNotDeclaredError.
            await self._publish("", key.queue, message, key.queue)

    async def enqueue_many(self, messages: Iterable[RawMessage]) -> None:
        """Publish all, then await all confirms (one round instead of one per message);
        each message still passes through the middleware like `enqueue`. Sizes are checked
        first (`check_sizes`): nothing is published when one is over `max_message_size`.
        After every message has been answered, raises the first failure (the others may
        be stored)."""
        pending = self.check_sizes(messages)
        failures: list[BaseException] = []
        # Without plugins, `enqueue` is `_enqueue` after the size check just made: skip
        # one coroutine per message.
        enqueue = self.enqueue if self.is_hooked("enqueue") else self._enqueue
        for start in range(0, len(pending), _MANY_WINDOW):
            results = await asyncio.gather(
                *(enqueue(k, p, pa) for k, p, pa in pending[start:start + _MANY_WINDOW]),
                return_exceptions=True)
            failures.extend(r for r in results if isinstance(r, BaseException))
        if failures:
            if len(failures) > 1:
                logger.error("enqueue_many: %d of %d messages were not confirmed",
                             len(failures), len(pending))
            raise failures[0]

    # --- settling ---

    def _delivery(self, key: RoutingKey) -> Delivery:
        handle = key.handle
        if not isinstance(handle, Delivery) or handle.consumer.broker is not self:
            raise ValueError(f"message {key.id_!r} was not consumed from {self!r}")
        if handle.settled:
            raise RuntimeError(f"message {key.id_!r} was already settled")
        return handle

    def delivery_count(self, key: RoutingKey) -> int:
        """1 + the message's `x-repid-deliveries` header (see `consumer.py`)."""
        handle = key.handle
        if not isinstance(handle, Delivery):
            return 1
        return 1 + handle.earlier_deliveries()

    async def _settle(self, delivery: Delivery, what: str, requeue: bool | None) -> None:
        """basic.ack (requeue None) or basic.reject; a closed channel means RabbitMQ has
        already put the message back (at-least-once), which is reported, not hidden."""
        message = delivery.message
        try:
            with RabbitErrors(BrokerConnectionError,
                              f"could not {what} message {codec.describe(message)!r}: its "
                              "channel closed", "connection lost or RabbitMQ's "
                              "consumer_timeout exceeded. RabbitMQ delivers it again."):
                await settle(message, requeue)
        except BrokerConnectionError:
            await delivery.consumer.settled(delivery)  # its room is free all the same
            raise
        await delivery.consumer.settled(delivery)

    async def _or_give_back(self, delivery: Delivery, what: str, step: Awaitable[None]) -> None:
        """Run `step` (a settle that publishes first). If it raises, the message is not
        left held on a live channel, where RabbitMQ would never deliver it again: it goes
        back to its queue (basic.reject requeue=True, so its next delivery counts once),
        the consumer's room for it is freed, and a BrokerConnectionError says so."""
        try:
            await step
        except Exception as exc:
            if not delivery.settled:
                if delivery.category is MessageCategory.NORMAL:
                    await return_to_queue(delivery.message)
                elif isinstance(delivery.consumer, RabbitScanConsumer):
                    await delivery.consumer.hold(delivery)
                await delivery.consumer.settled(delivery)
            if isinstance(exc, BrokerConnectionError):
                raise
            raise BrokerConnectionError(
                f"could not {what} message {codec.describe(delivery.message)!r} "
                f"({type(exc).__name__}: {exc}); it was left in its queue, where RabbitMQ "
                "delivers it again") from exc

    async def _move(self, message: DeliveredMessage, exchange: str, routing_key: str,
                    queue_name: str, set_headers: dict[str, Any] | None = None) -> bool:
        """Replace `message` by a copy published to `exchange`/`routing_key` (with the
        AMQP headers in `set_headers` set): the copy is confirmed before the original is
        acked, so a failure in between leaves a duplicate, never a loss. False (and the
        original untouched, still held) when the copy could not be stored; True once it
        is, even if the ack then fails (RabbitMQ then delivers the original again too)."""
        try:
            await self._publish(exchange, routing_key, codec.copy(message, set_headers),
                                queue_name)
        except (EnqueueNotConfirmedError, QueueNotDeclaredError, BrokerConnectionError) as exc:
            logger.warning("could not store a copy of message %r for %r (%s)",
                           codec.describe(message), routing_key, exc)
            return False
        try:
            await settle(message, None)
        except CHANNEL_ERRORS:
            logger.info("message %r was copied to %r but its channel closed before the ack; "
                        "RabbitMQ delivers the original again (a duplicate)",
                        codec.describe(message), routing_key)
        return True

    async def _ack(self, key: RoutingKey) -> None:
        await self._settle(self._delivery(key), "ack", None)

    async def _nack(self, key: RoutingKey, reason: str | None = None) -> None:
        delivery = self._delivery(key)
        if delivery.category is MessageCategory.DEAD:
            assert isinstance(delivery.consumer, RabbitScanConsumer)
            await delivery.consumer.hold(delivery)  # already dead: it stays there
            return
        if delivery.category is MessageCategory.NORMAL and reason is None:
            # Dead letters kept (promise 6): reject without requeue dead-letters it through
            # the queue's DLX to `<queue>:dead`, body and headers unchanged (promise 5).
            await self._settle(delivery, "nack", requeue=False)
            return
        # With a reason, or from a delay level (which dead-letters onward, not to the DLQ):
        # a confirmed copy carrying the reason goes to `<queue>:dead`, then the original is
        # acked (a failure in between leaves a duplicate, never a loss).
        headers = None if reason is None else {
            codec.HEADER_DEAD_REASON: codec.dead_reason(reason)}
        await self._or_give_back(delivery, "nack", self._copy_then_ack(
            delivery, topology.dead_queue(key.queue), key.queue, headers))

    async def _copy_then_ack(self, delivery: Delivery, routing_key: str, queue_name: str,
                             headers: dict[str, Any] | None) -> None:
        await self._publish("", routing_key, codec.copy(delivery.message, headers), queue_name)
        await self._settle(delivery, "ack", None)

    async def _reject(self, key: RoutingKey) -> None:
        delivery = self._delivery(key)
        if delivery.category is MessageCategory.NORMAL:
            # Back to the queue as it was, no retry and no delivery counted: a confirmed
            # copy with the same headers replaces it (see `consumer.py`), or basic.reject
            # requeue=True when that copy cannot be stored.
            await self._or_give_back(delivery, "reject", self._move_or_reject(delivery))
        else:
            # A scanned DELAYED or DEAD message stays where it is (returned when the scan
            # ends, so the scan does not read it again).
            assert isinstance(delivery.consumer, RabbitScanConsumer)
            await delivery.consumer.hold(delivery)

    async def _move_or_reject(self, delivery: Delivery) -> None:
        queue_name = delivery.consumer.queue_name
        if await self._move(delivery.message, "", queue_name, queue_name):
            await delivery.consumer.settled(delivery)
        else:
            await self._settle(delivery, "reject", requeue=True)

    async def _requeue(self, key: RoutingKey, payload: str, params: Parameters,
                       reason: str | None = None) -> None:
        delivery = self._delivery(key)
        # A requeued message keeps its count of unsettled deliveries, except one sent back
        # from the dead-letter queue, which starts over.
        earlier = 0 if delivery.category is MessageCategory.DEAD \
            else delivery.earlier_deliveries()
        # The new message is confirmed before the old one is acked, so a crash in between
        # duplicates it rather than losing it (at-least-once).
        await self._or_give_back(delivery, "requeue", self._enqueue_then_ack(
            delivery, replace(key, handle=None), payload, params, earlier))

    async def _enqueue_then_ack(self, delivery: Delivery, key: RoutingKey, payload: str,
                                params: Parameters, earlier: int) -> None:
        await self._enqueue_counted(key, payload, params, earlier)
        await self._settle(delivery, "requeue", None)

    # --- consuming ---

    def _consumer(
        self,
        queue_name: str,
        topics: frozenset[str] | None,
        max_unacked_messages: int | None,
        category: MessageCategory,
        stop_when_empty: bool,
    ) -> Consumer:
        # RabbitMQ cannot filter one queue by topic, so `topics` is not applied here: the
        # worker returns messages of topics it does not handle.
        consumer: RabbitConsumerBase
        if category is MessageCategory.NORMAL:
            consumer = RabbitConsumer(self, self._link(queue_name), max_unacked_messages)
        else:
            consumer = RabbitScanConsumer(self, self._link(queue_name), category,
                                          stop_when_empty)
        self._consumers.add(consumer)
        return consumer

    def _link(self, queue_name: str) -> ConsumerLink:
        """What a consumer of `queue_name` may ask of this broker (its only way to reach
        it). `_move` and `_enqueue_counted` look up `_publish` at each call."""
        return ConsumerLink(queue_name, settings=self, connection=self._robust_connection,
                            check_queue=self._check_queue,
                            ensure_topology=self._ensure_topology,
                            server_version=self._server_version, move=self._move,
                            enqueue_counted=self._enqueue_counted, scans=self._scans)
