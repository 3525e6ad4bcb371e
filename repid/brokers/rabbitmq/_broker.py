"""The RabbitMQ message broker, on aio-pika.

Each of the base module's delivery promises is kept here, in `_consumer.py` or in
`_link.py`, and the comment next to the code that keeps it says which. The topology
(queues, dead-letter exchange, delay levels) is described in `_topology.py` and
docs/brokers/rabbitmq.md. Consumers reach the broker only through the `ConsumerLink` it
gives each of them (`_link`), so its public API is `MessageBroker`'s and its options.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any, ClassVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelClosed, ChannelNotFoundEntity, DeliveryError
from pamqp.commands import Basic

from repid.brokers._dsn import mask_dsn
from repid.brokers.base import (
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_SIZE,
    ConsumeRequest,
    MessageBroker,
    RawMessage,
)
from repid.brokers.rabbitmq import _codec as codec
from repid.brokers.rabbitmq import _layout as layout
from repid.brokers.rabbitmq import _management as management
from repid.brokers.rabbitmq import _topology as topology
from repid.brokers.rabbitmq import v1_migration
from repid.brokers.rabbitmq._acks import CHANNEL_ERRORS, return_to_queue, settle
from repid.brokers.rabbitmq._consumer import (
    AmqpHandle,
    RabbitConsumer,
    RabbitConsumerBase,
    RabbitScanConsumer,
)
from repid.brokers.rabbitmq._errors import ConnectErrors, PublishErrors, RabbitErrors
from repid.brokers.rabbitmq._failover import NodeRotation, connect_first
from repid.brokers.rabbitmq._hosts import HostRing, node_dsns
from repid.brokers.rabbitmq._link import ConsumerLink, EndedScans
from repid.brokers.rabbitmq._management import vhost_of
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

    `dsn` is an `amqp://` or `amqps://` URL (aio-pika handles TLS). For a cluster it may
    name several nodes: hosts separated by commas in one DSN
    (`amqp://user:password@host1:5672,host2:5672,host3:5672/`), or a list of DSNs, one per
    node. Connecting tries them in order; when the connection is lost, each reconnect tries
    the next node, and consumers subscribe again on the node reached (see `_failover.py`).
    `dsns` holds one single-host DSN per node; `dsn` is the string given (the first node's
    DSN when a list was given). `consumer_timeout` is
    the delivery-ack timeout to ask for per consumer on RabbitMQ >= 3.12; on older servers
    it is the server's `consumer_timeout` setting (default 30 min), which repid only warns
    about when a job's timeout exceeds it. `default_prefetch` is the prefetch of consumers
    created without `max_unacked_messages`. `connection_name` shows in RabbitMQ's
    connection list. `management_url` (e.g. `http://guest:guest@127.0.0.1:15672`) lets
    `queue_stats` report in-flight messages through the management plugin's HTTP API.
    `max_deliveries` is how many deliveries ending unsettled a message may have before the
    worker dead-letters it (counted in a header, see `_consumer.py`); `max_message_size`
    bounds a payload (see `MessageBroker.max_message_size`). `queue_type` is "classic"
    (the default, the queues of earlier releases) or "quorum": replicated quorum queues
    with at-least-once dead-lettering and RabbitMQ's own `x-delivery-limit` backing
    `max_deliveries` (RabbitMQ >= 3.10; see `_layout.py` and
    docs/scaling/rabbitmq-quorum.md).
    """

    system: ClassVar[str] = "rabbitmq"

    def __init__(
        self,
        dsn: str | Sequence[str],
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
        queue_type: str = "classic",
    ) -> None:
        self.set_limits(max_deliveries, max_message_size)
        #: "classic" or "quorum": the type of every queue this broker declares
        self.queue_type = layout.check_queue_type(queue_type)
        self._layout = layout.layout_for(self.queue_type, max_deliveries)
        #: one single-host DSN per node, in the order they are tried (see `_hosts.py`)
        self.dsns = node_dsns(dsn)
        self.dsn = dsn if isinstance(dsn, str) else self.dsns[0]
        self._shown_dsn = repr(mask_dsn(dsn)) if isinstance(dsn, str) else repr(
            [mask_dsn(item) for item in dsn])
        self._nodes = HostRing(self.dsns)
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
        #: replacing the publish channel after a nack (`_renew_channel`), and when it may
        #: be done again
        self._renewal: asyncio.Future[None] | None = None
        self._renew_after = 0.0
        #: replaced publish channels, each closed after `publish_timeout`
        self._retiring: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        # Secrets never reach a repr: the password is masked.
        extra = "" if self.management_url is None else (
            f", management_url={mask_dsn(self.management_url)!r}")
        return f"RabbitMessageBroker(dsn={self._shown_dsn}{extra})"

    def _scrub(self, text: str) -> str:
        """`text` with the DSNs' passwords masked, for error messages built from others'."""
        for node in self.dsns:
            password = aio_pika.connection.make_url(node).password
            text = text.replace(password, "***") if password else text
        return text

    def _where(self) -> str:
        """The node in use (or tried next), for messages: its DSN, password masked."""
        return mask_dsn(self._nodes.current)

    # --- connection ---

    async def connect(self) -> None:
        """Open a robust connection (aio-pika reconnects it, re-opens its channels and
        resumes its consumers after a drop or a broker restart) and a confirm channel.
        With several nodes, the first that answers, and each reconnect tries the next
        (`_failover.py`)."""
        async with self._connect_lock:
            if self._connection is not None:
                return
            connection = await connect_first(self._nodes, self._open_node)
            if len(self._nodes) > 1:
                connection.close_callbacks.add(NodeRotation(self._nodes))
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

    async def _open_node(self, dsn: str) -> AbstractRobustConnection:
        """A robust connection to the node at `dsn`; BrokerConnectionError if it fails."""
        with ConnectErrors(dsn, self.operation_timeout, self._scrub):
            return await aio_pika.connect_robust(
                dsn, reconnect_interval=self.reconnect_interval,
                timeout=self.operation_timeout,
                client_properties={"connection_name": self.connection_name},
            )

    def _on_reconnect(self, *_: Any) -> None:
        """After a reconnect the server may be a fresh one (or another node of the
        cluster): check the topology again."""
        logger.info("reconnected to RabbitMQ at %s", self._where())
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
            pending = [f for f in (self._renewal, *self._retiring)
                       if f is not None and not f.done()]
            self._renewal = None
            self._retiring.clear()
            for future in pending:  # their channels close with the connection
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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
                              f"RabbitMQ at {self._where()} is unreachable",
                              f"still reconnecting after {self.operation_timeout} s",
                              catch=(asyncio.TimeoutError,)):
                await asyncio.wait_for(connection.ready(), self.operation_timeout)
        transport = connection.transport
        if transport is None:
            raise BrokerConnectionError(f"RabbitMQ at {self._where()} is unreachable")
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
            self._check_server_supports_layout()
            async with self._admin_channel() as channel:
                await self._declare_topology(channel)
            self._topology_ready = True

    def _check_server_supports_layout(self) -> None:
        """Quorum queues need RabbitMQ 3.10 or later (message TTL and at-least-once
        dead-lettering of quorum queues came with it); an unknown version is let through."""
        version = self._server_version()
        if self.queue_type == "quorum" and version != (0,) and \
                version < layout.QUORUM_MIN_VERSION:
            shown = ".".join(map(str, version))
            raise QueueDeclareError(
                f"RabbitMQ {shown} at {self._where()} cannot hold repid's quorum queues: they "
                "need RabbitMQ 3.10 or later (message TTL and at-least-once dead-lettering "
                "of quorum queues). Upgrade RabbitMQ, or use queue_type='classic'.")

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
        # This broker's delay levels: the classic ones, or the quorum ones (classic and
        # quorum queues of one server never share a level queue, see `_layout.py`).
        levels = self._layout
        for level in range(topology.LEVELS):
            await ch.exchange_declare(levels.level_exchange(level), exchange_type="topic",
                                      durable=True)
        for level in range(topology.LEVELS):
            # Delays without head-of-line blocking: one fixed TTL per level queue, so every
            # message in it expires in arrival order; then it dead-letters onward.
            queue = levels.level_queue(level)
            await ch.queue_declare(queue, durable=True,
                                   arguments=levels.level_arguments(level))
            await ch.queue_bind(queue, levels.level_exchange(level),
                                routing_key=topology.level_queue_pattern(level))
            await ch.exchange_bind(levels.next_exchange(level),
                                   levels.level_exchange(level),
                                   routing_key=topology.level_skip_pattern(level))

    async def _check_queue(self, queue_name: str) -> tuple[int, int]:
        """(ready, dead) message counts (ready over all its priority-level queues, with
        quorum queues); QueueNotDeclaredError when it does not exist."""
        ready = 0
        try:
            async with self._admin_channel() as channel:
                for name in self._layout.work_queues(queue_name):
                    ready += (await channel.queue_declare(name, passive=True)).message_count \
                        or 0
                dead = await channel.queue_declare(topology.dead_queue(queue_name),
                                                   passive=True)
        except ChannelNotFoundEntity:
            raise QueueNotDeclaredError(queue_name) from None
        self._known_queues.add(queue_name)
        return ready, dead.message_count or 0

    async def _queue_declare(self, queue_name: str) -> None:
        await self._ensure_topology()
        dead = topology.dead_queue(queue_name)
        name = queue_name
        try:
            async with self._admin_channel() as ch:
                # Durable queue(s) of this broker's type (`_layout.py`): nack dead-letters
                # through the dead-letter exchange into `<queue>:dead` (promise 6).
                for name in self._layout.work_queues(queue_name):
                    await ch.queue_declare(name, durable=True,
                                           arguments=self._layout.work_arguments(queue_name))
                name = dead
                await ch.queue_declare(dead, durable=True,
                                       arguments=self._layout.dead_arguments())
                await ch.queue_bind(dead, topology.DEAD_EXCHANGE, routing_key=queue_name)
                for name in self._layout.work_queues(queue_name):
                    await ch.queue_bind(name, topology.DELIVER_EXCHANGE,
                                        routing_key=topology.deliver_pattern(name))
        except ChannelClosed as exc:
            raise QueueDeclareError(await self._explain_declare_failure(
                queue_name, name, str(exc))) from None
        self._known_queues.add(queue_name)

    async def _explain_declare_failure(self, queue_name: str, name: str, error: str) -> str:
        """Why RabbitMQ refused to declare `name` (a part of `queue_name`): a repid 1.x
        queue, a queue of the other type (never redeclared: RabbitMQ cannot change a
        queue's type), a quorum queue with another delivery limit, or other arguments."""
        v1 = await v1_migration.explain_declare_failure(self._nodes.current, queue_name)
        if v1:
            return v1
        existing = layout.existing_type(error)
        if existing is None:
            existing = await self._probe_type(name, queue_name)
        if existing is not None and existing != self.queue_type:
            return layout.type_mismatch(queue_name, existing, self.queue_type)
        mismatch = layout.mismatch_of(error)
        if mismatch is not None and mismatch[0] == "x-delivery-limit":
            return layout.limit_mismatch(queue_name, mismatch[2], self.max_deliveries)
        return (f"cannot declare queue {name!r} on RabbitMQ: {error}. If it exists with "
                "other arguments (not declared by this repid broker), delete it first.")

    async def _probe_type(self, name: str, queue_name: str) -> str | None:
        """The type of the existing queue `name` when RabbitMQ's refusal did not show it:
        declared again (a no-op when it matches) with the arguments the other layout gives
        it, on a channel of its own; that type if RabbitMQ accepts, else what its refusal
        shows, else None."""
        other = layout.layout_for(
            "classic" if self.queue_type == "quorum" else "quorum", self.max_deliveries)
        arguments = other.dead_arguments() if name == topology.dead_queue(queue_name) \
            else other.work_arguments(queue_name)
        try:
            async with self._admin_channel() as ch:
                await ch.queue_declare(name, durable=True, arguments=arguments)
        except ChannelClosed as exc:
            return layout.existing_type(str(exc))
        return other.queue_type

    async def _drop_delayed(self, queue_name: str) -> None:
        """Delete the queue's messages waiting in the shared delay levels."""
        scan = RabbitScanConsumer(self, self._link(queue_name), MessageCategory.DELAYED,
                                  stop_when_empty=True)
        try:
            while True:
                try:
                    delivery = await scan.read()
                except StopAsyncIteration:
                    return
                delivery.claim("ack")  # deleted without the hooks: a flush is one call
                await self._ack(delivery.key, delivery.handle)
        finally:
            await scan.finish()

    async def _queue_flush(self, queue_name: str) -> None:
        await self._check_queue(queue_name)
        await self._drop_delayed(queue_name)
        async with self._admin_channel() as ch:
            for name in self._layout.work_queues(queue_name):
                await ch.queue_purge(name)
            await ch.queue_purge(topology.dead_queue(queue_name))

    async def _queue_delete(self, queue_name: str) -> None:
        self._known_queues.discard(queue_name)
        with suppress(QueueNotDeclaredError):
            await self._check_queue(queue_name)
            await self._drop_delayed(queue_name)
        async with self._admin_channel() as ch:
            for name in self._layout.work_queues(queue_name):
                await ch.queue_delete(name)
            await ch.queue_delete(topology.dead_queue(queue_name))
        self._known_queues.discard(queue_name)

    async def queue_stats(self, queue_name: str) -> dict[str, int]:
        """`ready` and `dead` from RabbitMQ's counts; `in_flight` from the management API
        when `management_url` is set (AMQP does not report it), else -1; `delayed` (spread
        over the shared delay levels) is -1."""
        ready, dead = await self._check_queue(queue_name)
        in_flight = -1
        if self.management_url:
            counts = [await management.unacked(self.management_url, vhost_of(self.dsn),
                                               name, self.operation_timeout)
                      for name in self._layout.work_queues(queue_name)]
            in_flight = -1 if -1 in counts else sum(counts)
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
            except DeliveryError:
                self._renew_channel()
                raise

    def _renew_channel(self) -> None:
        """After RabbitMQ nacked a publish: publish on a new channel from now on. A nack
        can stick to a channel: on RabbitMQ 3.10 a channel reopened on another node while a
        quorum queue's leader moved may refuse every later publish to that queue, while a
        new channel is accepted. Done at most once per `reconnect_interval` (at least 1 s),
        so a queue that refuses on purpose (`x-overflow: reject-publish`) costs little."""
        now = time.monotonic()
        if now < self._renew_after or (self._renewal is not None and not self._renewal.done()):
            return
        self._renew_after = now + max(self.reconnect_interval, 1.0)
        self._renewal = asyncio.ensure_future(self._swap_channel())

    async def _swap_channel(self) -> None:
        """Open a confirm channel and publish on it; the old one closes once its pending
        confirms had `publish_timeout` to arrive."""
        connection, old = self._connection, self._channel
        if connection is None or old is None:
            return
        try:
            new = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except (*CHANNEL_ERRORS, RuntimeError) as exc:  # the connection is going down
            logger.info("could not open a new publish channel (%s: %s)",
                        type(exc).__name__, self._scrub(str(exc)))
            return
        assert isinstance(new, AbstractRobustChannel)
        if self._connection is not connection or self._channel is not old:
            await new.close()
            return
        self._channel = new
        logger.info("RabbitMQ refused a publish; publishing on a new channel from now on")
        retiring = asyncio.ensure_future(self._retire(old))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def _retire(self, channel: AbstractRobustChannel) -> None:
        await asyncio.sleep(self.publish_timeout)
        with suppress(*CHANNEL_ERRORS):
            await channel.close()

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
        # The RabbitMQ queue of its priority level (the queue itself, on classic queues).
        home = self._layout.home(key.queue, key.priority)
        # Delays to the second: whole seconds rounded up, so never early.
        seconds = topology.delay_seconds(params.ready_at)
        if seconds:
            await self._route_known(key.queue)
            await self._publish(self._layout.entry_exchange(),
                                topology.delay_routing_key(seconds, home),
                                message, key.queue)
        else:
            # Unknown queue: mandatory publish is returned -> QueueNotDeclaredError.
            await self._publish("", home, message, key.queue)

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

    def _delivery(self, key: RoutingKey, handle: Any) -> AmqpHandle:
        """The AMQP delivery to settle (a second settle never gets here: the `Delivery`
        refused it)."""
        if not isinstance(handle, AmqpHandle) or handle.consumer.broker is not self:
            raise ValueError(f"message {key.id_!r} was not consumed from {self!r}")
        return handle

    async def _settle(self, delivery: AmqpHandle, what: str, requeue: bool | None) -> None:
        """basic.ack (requeue None) or basic.reject; a closed channel means RabbitMQ has
        already put the message back (at-least-once), which is reported, not hidden."""
        message = delivery.message
        if self._layout.server_counts and isinstance(delivery.consumer, RabbitConsumer):
            # A quorum queue fills the prefetch an ack frees at once: were that message
            # sent to a subscription being cancelled (a pause), RabbitMQ would take it
            # back counted as an unsettled delivery, though no one received it. So the
            # settles of a pausing consumer wait for its cancel-ok.
            await delivery.consumer.until_unsubscribed()
        try:
            await settle(message, requeue)
        except CHANNEL_ERRORS as exc:
            # mapped here, not by a `with RabbitErrors(...)` around the call: that would
            # build its message for every settle, and this runs for every message
            await delivery.consumer.settled(delivery)  # its room is free all the same
            error = RabbitErrors(
                BrokerConnectionError,
                f"could not {what} message {codec.describe(message)!r}: its channel closed",
                "connection lost or RabbitMQ's consumer_timeout exceeded. RabbitMQ delivers "
                "it again.").map(exc)
            assert error is not None  # it maps CHANNEL_ERRORS, all of them
            raise error from None
        await delivery.consumer.settled(delivery)

    async def _or_give_back(self, delivery: AmqpHandle, what: str, step: Awaitable[None]) -> None:
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
        is, even if the ack then fails (RabbitMQ then delivers the original again too).

        A copy back to its own queue (`routing_key` is `queue_name`) goes, with quorum
        queues, to the queue of its priority level, and carries the deliveries RabbitMQ
        counted (`x-delivery-count`, which the copy starts again) in its
        `x-repid-deliveries` unless `set_headers` sets it."""
        if self._layout.server_counts and not exchange and routing_key == queue_name:
            routing_key = self._layout.home_of(queue_name, message)
            # A copy pushed to a subscription being cancelled (a consumer pausing) would
            # be returned by RabbitMQ counted as an unsettled delivery: wait until the
            # consumer it came from has no subscription left, if it is pausing.
            for consumer in list(self._consumers):
                if isinstance(consumer, RabbitConsumer) and consumer.delivered(message):
                    await consumer.until_unsubscribed()
            if codec.HEADER_DELIVERIES not in (set_headers or {}):
                set_headers = {**(set_headers or {}),
                               codec.HEADER_DELIVERIES: self._layout.earlier(message) or None}
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

    # `handle` is the `AmqpHandle` of a delivery: a key made by hand cannot be settled here
    # (ValueError), as RabbitMQ settles only on the channel that delivered the message

    async def _ack(self, key: RoutingKey, handle: Any) -> None:
        await self._settle(self._delivery(key, handle), "ack", None)

    async def _nack(self, key: RoutingKey, handle: Any, reason: str | None = None) -> None:
        delivery = self._delivery(key, handle)
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

    async def _copy_then_ack(self, delivery: AmqpHandle, routing_key: str, queue_name: str,
                             headers: dict[str, Any] | None) -> None:
        await self._publish("", routing_key, codec.copy(delivery.message, headers), queue_name)
        await self._settle(delivery, "ack", None)

    async def _reject(self, key: RoutingKey, handle: Any) -> None:
        delivery = self._delivery(key, handle)
        if delivery.category is MessageCategory.NORMAL:
            # Back to the queue as it was, no retry and no delivery counted: a confirmed
            # copy with the same headers replaces it (see `_consumer.py`), or basic.reject
            # requeue=True when that copy cannot be stored.
            await self._or_give_back(delivery, "reject", self._move_or_reject(delivery))
        else:
            # A scanned DELAYED or DEAD message stays where it is (returned when the scan
            # ends, so the scan does not read it again).
            assert isinstance(delivery.consumer, RabbitScanConsumer)
            await delivery.consumer.hold(delivery)

    async def _move_or_reject(self, delivery: AmqpHandle) -> None:
        queue_name = delivery.consumer.queue_name
        if await self._move(delivery.message, "", queue_name, queue_name):
            await delivery.consumer.settled(delivery)
        else:
            await self._settle(delivery, "reject", requeue=True)

    async def _requeue(self, key: RoutingKey, handle: Any, payload: str, params: Parameters,
                       reason: str | None = None) -> None:
        delivery = self._delivery(key, handle)
        # A requeued message keeps its count of unsettled deliveries, except one sent back
        # from the dead-letter queue, which starts over.
        earlier = 0 if delivery.category is MessageCategory.DEAD \
            else delivery.earlier_deliveries()
        # The new message is confirmed before the old one is acked, so a crash in between
        # duplicates it rather than losing it (at-least-once).
        await self._or_give_back(delivery, "requeue", self._enqueue_then_ack(
            delivery, RoutingKey(key.id_, key.topic, key.queue, key.priority), payload, params,
            earlier))

    async def _enqueue_then_ack(self, delivery: AmqpHandle, key: RoutingKey, payload: str,
                                params: Parameters, earlier: int) -> None:
        await self._enqueue_counted(key, payload, params, earlier)
        await self._settle(delivery, "requeue", None)

    # --- consuming ---

    def _consumer(self, request: ConsumeRequest) -> RabbitConsumerBase:
        # RabbitMQ cannot filter one queue by topic, so `topics` is not applied here: the
        # worker returns messages of topics it does not handle.
        consumer: RabbitConsumerBase
        link = self._link(request.queue_name)
        if request.category is MessageCategory.NORMAL:
            consumer = RabbitConsumer(self, link, request.max_unacked_messages)
        else:
            consumer = RabbitScanConsumer(self, link, request.category,
                                          request.stop_when_empty)
        self._consumers.add(consumer)
        return consumer

    def _link(self, queue_name: str) -> ConsumerLink:
        """What a consumer of `queue_name` may ask of this broker (its only way to reach
        it). `_move` and `_enqueue_counted` look up `_publish` at each call."""
        return ConsumerLink(queue_name, settings=self, connection=self._robust_connection,
                            check_queue=self._check_queue,
                            ensure_topology=self._ensure_topology,
                            server_version=self._server_version, move=self._move,
                            enqueue_counted=self._enqueue_counted, scans=self._scans,
                            layout=self._layout)
