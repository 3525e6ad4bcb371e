"""Consumers of the RabbitMQ broker: a push subscription for NORMAL messages, and a
`basic.get` scan for the DELAYED and DEAD parts of a queue."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pamqp.commands import Basic

from repid.brokers.base import Consumer, Message
from repid.brokers.rabbitmq import codec, topology
from repid.data import MessageCategory, utcnow
from repid.errors import PayloadDecodeError, QueueNotDeclaredError

if TYPE_CHECKING:
    from repid.brokers.rabbitmq.broker import RabbitMessageBroker

logger = logging.getLogger("repid.brokers.rabbitmq")

#: errors of a channel or connection that went away under us
CHANNEL_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, asyncio.TimeoutError)

#: a message arriving this much before its time is sent back to the delay levels
_EARLY_TOLERANCE = timedelta(seconds=1)


@dataclass(eq=False, slots=True)
class Delivery:
    """What `RoutingKey.handle` holds for a consumed message: the AMQP delivery, where it
    was read from, and the consumer that owns it until it is settled."""

    message: DeliveredMessage
    category: MessageCategory
    consumer: RabbitConsumerBase
    settled: bool = False

    def alive(self) -> bool:
        """False once the delivery's channel closed: RabbitMQ has already requeued it."""
        return not self.message.channel.is_closed


async def settle(message: DeliveredMessage, requeue: bool | None) -> None:
    """basic.ack (requeue None) or basic.reject on the channel the message came from.

    Returns once the frame is written to the socket, so a settled message is not
    redelivered because this process stopped right after settling it."""
    tag = message.delivery_tag
    assert tag is not None
    if requeue is None:
        await message.channel.basic_ack(tag)
    else:
        await message.channel.basic_reject(tag, requeue=requeue)


async def _return_to_queue(message: DeliveredMessage) -> None:
    """basic.reject requeue=True, ignoring a closed channel (which returns it anyway)."""
    try:
        await settle(message, requeue=True)
    except CHANNEL_ERRORS:
        logger.debug("channel closed before a message could be returned; RabbitMQ "
                     "returns it by itself")


class RabbitConsumerBase(Consumer):
    """Channel handling shared by both kinds of consumer.

    The channel stays open while a handed-out message is unsettled (closing it would hand
    the message to someone else while it runs); it closes once the consumer is finished
    and everything it handed out is settled.
    """

    def __init__(self, broker: RabbitMessageBroker, queue_name: str,
                 category: MessageCategory) -> None:
        super().__init__(broker, queue_name, category)
        self._rabbit = broker
        self._channel: AbstractRobustChannel | None = None
        self._outstanding = 0
        self._finished = False

    async def settled(self, delivery: Delivery) -> None:
        """The broker settled a message this consumer handed out."""
        delivery.settled = True
        self._outstanding -= 1
        if self._finished and self._outstanding <= 0:
            await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except CHANNEL_ERRORS:
                logger.debug("consumer channel of %s was already gone", self.queue_name)

    def _hand_out(self, message: Message) -> Message:
        self._outstanding += 1
        return message


class RabbitConsumer(RabbitConsumerBase):
    """NORMAL messages of one queue, pushed by RabbitMQ with prefetch = max_unacked.

    Delivered messages wait in a local buffer until `__anext__` takes them. At-least-once:
    every buffered message is unacked on the server, so if this process dies RabbitMQ
    redelivers it; `finish()` returns the buffered ones at once (basic.reject requeue=True).
    """

    def __init__(self, broker: RabbitMessageBroker, queue_name: str,
                 max_unacked_messages: int | None) -> None:
        super().__init__(broker, queue_name, MessageCategory.NORMAL)
        self.prefetch = max_unacked_messages or broker.default_prefetch
        self._buffer: asyncio.Queue[Message | None] = asyncio.Queue()
        self._underlay: AbstractChannel | None = None
        self._tag: str | None = None
        self._timeout_limit: timedelta | None = None
        self._warned_timeout = False
        self._recovery: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Subscribe on a robust channel of its own: aio-pika reopens it (with its prefetch)
        after a connection drop, a broker restart or a server-side channel close, and the
        reopen callback subscribes again, so consuming resumes by itself."""
        if self._channel is not None or self._finished:
            return
        await self._rabbit.check_queue(self.queue_name)
        connection = await self._rabbit.robust_connection()
        channel = await connection.channel(publisher_confirms=False)
        assert isinstance(channel, AbstractRobustChannel)
        try:
            # Prefetch bounded by max_unacked_messages: RabbitMQ never pushes more than
            # this many unsettled messages to this consumer.
            await channel.set_qos(prefetch_count=self.prefetch)
            self._timeout_limit = self._rabbit.effective_consumer_timeout()
            await self._subscribe(channel)
        except BaseException:
            await channel.close()
            raise
        channel.reopen_callbacks.add(self._resubscribe)
        self._channel = channel

    async def _subscribe(self, channel: AbstractRobustChannel) -> None:
        underlay = await channel.get_underlay_channel()
        if underlay is not self._underlay:
            underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
        ok = await underlay.basic_consume(
            self.queue_name, self._on_message, no_ack=False,
            arguments=self._rabbit.consumer_arguments(),
            timeout=self._rabbit.operation_timeout)
        self._underlay, self._tag = underlay, ok.consumer_tag

    async def _resubscribe(self, channel: Any) -> None:
        """The channel was reopened after a drop: subscribe again (unless finished)."""
        if channel is self._channel:
            self._start_recovery("the channel was reopened")

    def _on_cancel(self, frame: Basic.Cancel) -> None:
        """RabbitMQ cancelled the subscription (the queue was deleted, say): keep trying."""
        if frame.consumer_tag == self._tag:
            logger.warning("RabbitMQ cancelled the consumer of %r", self.queue_name)
            self._start_recovery("RabbitMQ cancelled the consumer")

    def _start_recovery(self, why: str) -> None:
        if self._finished or (self._recovery is not None and not self._recovery.done()):
            return
        self._recovery = asyncio.ensure_future(self._recover(why))

    async def _recover(self, why: str) -> None:
        """Subscribe again until it works or the consumer is finished. The queue is checked
        on a separate channel first, so a missing queue never closes the consumer's own."""
        delay = 0.0
        while not self._finished and self._channel is not None:
            await asyncio.sleep(delay)
            delay = max(self._rabbit.reconnect_interval, 0.1)
            channel = self._channel
            if self._finished or channel is None:
                return
            try:
                await self._rabbit.check_queue(self.queue_name)
                if self._finished:
                    return
                await self._subscribe(channel)
            except QueueNotDeclaredError:
                logger.warning("queue %r does not exist (%s); waiting for it to be "
                               "declared again", self.queue_name, why)
            except CHANNEL_ERRORS as exc:
                logger.info("resuming the consumer of %r failed (%s); retrying",
                            self.queue_name, exc)
            else:
                logger.info("resumed consuming %r (%s)", self.queue_name, why)
                return

    async def _on_message(self, message: DeliveredMessage) -> None:
        """Decode a pushed message into the buffer; poison goes to the dead-letter queue."""
        if self._finished:
            # Arrived between basic.cancel and cancel-ok: give it back, never drop it.
            await _return_to_queue(message)
            return
        delivery = Delivery(message, MessageCategory.NORMAL, self)
        try:
            key, payload, params = codec.decode(message, self.queue_name, delivery)
        except Exception as exc:  # any failure to read it makes it poison, never stuck here
            reason = exc if isinstance(exc, PayloadDecodeError) else PayloadDecodeError(
                f"{type(exc).__name__}: {exc}")
            await self._rabbit.dead_letter_poison(message, self.queue_name, reason,
                                                  via_dlx=True)
            return
        if params.ready_at is not None and params.ready_at - utcnow() > _EARLY_TOLERANCE:
            # Delays to the second: a message that arrives before its time (a delay longer
            # than the delay levels reach, or a message published straight to the queue)
            # goes back to the delay levels.
            await self._rabbit.delay_again(delivery, key, payload, params)
            return
        self._buffer.put_nowait((key, payload, params))

    async def _next(self) -> Message:
        if self._channel is None and not self._finished:
            await self.start()
        while True:
            if self._finished and self._buffer.empty():
                raise StopAsyncIteration
            # asyncio.Queue.get is cancel-safe: a cancelled take leaves the message in the
            # buffer for the next one, so cancelling __anext__ never loses a message.
            item = await self._buffer.get()
            if item is None:
                self._buffer.put_nowait(None)  # wake any other waiter too
                raise StopAsyncIteration
            delivery = item[0].handle
            assert isinstance(delivery, Delivery)
            if not delivery.alive():
                # Its channel dropped; RabbitMQ requeued it and will deliver it again on
                # the restored channel. Handing it out now would run it twice.
                continue
            self._check_consumer_timeout(item)
            return self._hand_out(item)

    def _check_consumer_timeout(self, item: Message) -> None:
        """Warn once when a job may outlive RabbitMQ's delivery-ack timeout, after which
        the server closes the channel and redelivers the message (it would run twice)."""
        limit = self._timeout_limit
        if self._warned_timeout or limit is None or item[2].execution_timeout < limit:
            return
        self._warned_timeout = True
        logger.warning(
            "queue %r: message %r may run for %s, longer than RabbitMQ's consumer_timeout "
            "(%s); the server would close the channel and deliver it again. Raise "
            "consumer_timeout in rabbitmq.conf (RabbitMQ < 3.12), or pass "
            "RabbitMessageBroker(consumer_timeout=...) on RabbitMQ >= 3.12.",
            self.queue_name, item[0].id_, item[2].execution_timeout, limit)

    async def finish(self) -> None:
        """Cancel the subscription and return prefetched, not handed-out messages to the
        queue (basic.reject requeue=True), so none is lost or held by a stopping worker."""
        if self._finished:
            return
        self._finished = True
        if self._channel is not None:
            self._channel.reopen_callbacks.discard(self._resubscribe)
        if self._recovery is not None:
            self._recovery.cancel()
        if self._underlay is not None and self._tag is not None:
            try:
                await self._underlay.basic_cancel(self._tag,
                                                  timeout=self._rabbit.operation_timeout)
            except CHANNEL_ERRORS:
                logger.debug("cancelling the consumer of %s failed; channel is gone",
                             self.queue_name)
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if item is not None:
                delivery = item[0].handle
                assert isinstance(delivery, Delivery)
                await _return_to_queue(delivery.message)
        self._buffer.put_nowait(None)
        if self._outstanding <= 0:
            await self._close_channel()


class RabbitScanConsumer(RabbitConsumerBase):
    """DELAYED or DEAD messages of one queue, read with basic.get until none is left.

    DEAD reads `<queue>:dead`. DELAYED reads the shared delay-level queues and hands out
    only the messages bound for this queue. Every other message read (another queue's, a
    poison one in the DLQ, one held with `reject`/`nack`) stays unacked until the scan
    ends and then goes back to where it was, so the scan sees each message once.
    """

    def __init__(self, broker: RabbitMessageBroker, queue_name: str,
                 category: MessageCategory) -> None:
        super().__init__(broker, queue_name, category)
        self._sources: list[str] = []
        self._index = 0
        self._held: list[DeliveredMessage] = []
        self._started = False

    async def start(self) -> None:
        """Open the channel and name the queues to scan."""
        if self._started:
            return
        await self._rabbit.check_queue(self.queue_name)
        if self.category is MessageCategory.DELAYED:
            await self._rabbit.ensure_topology()
            self._sources = [topology.level_queue(k) for k in reversed(range(topology.LEVELS))]
        else:
            self._sources = [topology.dead_queue(self.queue_name)]
        connection = await self._rabbit.robust_connection()
        channel = await connection.channel(publisher_confirms=False)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        self._started = True

    async def _next(self) -> Message:
        if not self._started:
            await self.start()
        while not self._finished:
            if self._index >= len(self._sources):
                await self._end()
                break
            assert self._channel is not None
            underlay = await self._channel.get_underlay_channel()
            message = await underlay.basic_get(self._sources[self._index], no_ack=False,
                                               timeout=self._rabbit.operation_timeout)
            if isinstance(message.delivery, Basic.GetEmpty):
                self._index += 1
                continue
            if (self.category is MessageCategory.DELAYED
                    and topology.destination_of(message.routing_key or "") != self.queue_name):
                self._held.append(message)  # another queue's delayed message
                continue
            delivery = Delivery(message, self.category, self)
            try:
                item = codec.decode(message, self.queue_name, delivery)
            except Exception as exc:  # unreadable: poison
                if not isinstance(exc, PayloadDecodeError):
                    exc = PayloadDecodeError(f"{type(exc).__name__}: {exc}")
                if self.category is MessageCategory.DEAD:
                    logger.warning("dead-letter queue of %r holds an undecodable message "
                                   "(%s); left there", self.queue_name, exc)
                    self._held.append(message)
                else:
                    await self._rabbit.dead_letter_poison(message, self.queue_name, exc,
                                                          via_dlx=False)
                continue
            return self._hand_out(item)
        raise StopAsyncIteration

    async def hold(self, delivery: Delivery) -> None:
        """Leave the message where it was: returned now if the scan is over, else at its end."""
        if self._finished:
            await _return_to_queue(delivery.message)
        else:
            self._held.append(delivery.message)
        await self.settled(delivery)

    async def _end(self) -> None:
        """Nothing left to read: return what was held; close once all is settled."""
        self._finished = True
        held, self._held = self._held, []
        for message in held:
            await _return_to_queue(message)
        if self._outstanding <= 0:
            await self._close_channel()

    async def finish(self) -> None:
        """Stop the scan early; held messages go back to their queues."""
        if not self._finished:
            await self._end()
