"""Consumers of the RabbitMQ broker: a push subscription for NORMAL messages, and a
`basic.get` scan for the DELAYED and DEAD parts of a queue (one pass, or waiting).

Deliveries counted (promise 8). RabbitMQ 3.10 classic queues keep no delivery count, only
the `redelivered` flag, so the count travels in the message's `x-repid-deliveries` header:
the earlier deliveries that ended unsettled. A NORMAL message arriving with `redelivered`
set (its previous holder died, lost its connection or passed RabbitMQ's consumer_timeout)
is not handed out: the broker's `_move` (through `ConsumerLink.replace`) publishes a copy
with the header one higher to the same queue, waits for the confirm, and only then acks
the original, so the worst case is a duplicate, never a loss. Only redelivered messages
pay for this.

Returns on purpose must not count, yet `basic.reject(requeue=True)` sets `redelivered`
too. So every deliberate return of a NORMAL message (`reject`, `finish()` giving back its
prefetched messages) is the same move with the header unchanged; only when that copy
cannot be stored does it fall back to `basic.reject`, which then counts once (a broker
fault, not a worker's choice). A returned message goes to the tail of its priority.

With quorum queues (`RabbitMessageBroker(queue_type="quorum")`, see `_layout.py`) RabbitMQ
counts the unsettled deliveries itself (`x-delivery-count`): a redelivered message is
handed out as it is, counted as that header plus `x-repid-deliveries`, and a deliberate
return's copy carries that sum in `x-repid-deliveries`. A consumer then subscribes to one
quorum queue per priority level, and its buffer hands out the highest level first without
starving the lower ones (`_levels.py`).

Pausing (`pause()`, while the worker runs a suspect alone, see `repid.worker._isolation`): the
subscription is cancelled, and what was buffered or arrives before the cancel-ok is given
back (uncounted), so a suspect that kills the process takes nothing else down with it.
Subscribing and cancelling hold one lock, so a pause never misses a subscription being
made, and a give-back waits until no subscription is active (a quorum queue returns a
message it delivered to a subscription being cancelled, counted once more, though no
client received it). So with quorum queues nothing may be on its way when the cancel
arrives: the settles of a pausing consumer wait for its cancel-ok (each ack frees prefetch
that RabbitMQ would fill at once), and the cancel waits until nothing has arrived for
`_QUIET_SECONDS` since the pause began (RabbitMQ may still be sending what the prefetch
allowed, and quorum queues send a little past it). Only a message published during those
few milliseconds can still be counted once (`docs/decisions.md`). `resume()` subscribes
again. (basic.qos would not do: RabbitMQ applies a new prefetch to new consumers only.)

The consumers reach their broker only through the `ConsumerLink` it gives them
(`_link.py`); the acknowledgements themselves are in `_acks.py`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from repid.brokers._poison import poison_message
from repid.brokers.base import Consumer, MessageBroker
from repid.brokers.delivery import Delivery
from repid.brokers.rabbitmq import _codec as codec
from repid.brokers.rabbitmq import _topology as topology
from repid.brokers.rabbitmq._acks import CHANNEL_ERRORS, return_to_queue, settle
from repid.brokers.rabbitmq._link import ConsumerLink, poison_reason
from repid.data import MessageCategory, utcnow
from repid.errors import BrokerConnectionError, PayloadDecodeError, QueueNotDeclaredError

logger = logging.getLogger("repid.brokers.rabbitmq")

#: how long deliveries to a cancelled subscription are still received (see `_cancel_subscribed`)
_LATE_DELIVERIES_SECONDS = 30.0
#: quorum queues: a pause cancels once nothing has arrived for this long (see `pause`)
_QUIET_SECONDS = 0.1
#: ... or after this long at most
_QUIET_LIMIT_SECONDS = 2.0
#: a message arriving this much before its time is sent back to the delay levels
_EARLY_TOLERANCE = timedelta(seconds=1)


@dataclass(eq=False, slots=True)
class AmqpHandle:
    """The `handle` of a `Delivery` a RabbitMQ consumer hands out: the AMQP delivery, where
    it was read from, and the consumer that owns it until it is settled."""

    message: DeliveredMessage
    category: MessageCategory
    consumer: RabbitConsumerBase
    settled: bool = False
    #: earlier deliveries that ended unsettled; -1 until first needed (read from the
    #: header once, when the delivery is handed out or sent back to the delay levels)
    earlier: int = -1

    def alive(self) -> bool:
        """False once the delivery's channel closed: RabbitMQ has already requeued it."""
        return not self.message.channel.is_closed

    def earlier_deliveries(self) -> int:
        if self.earlier < 0:
            self.earlier = codec.deliveries(self.message)
        return self.earlier


def _raise_if_cancelling() -> None:
    """Raise CancelledError if the current task is being cancelled. The checks of a lost
    queue await channel operations that use asyncio.wait_for, which on Python < 3.12 can
    swallow a cancellation arriving as it completes; a take must not then wait for ever
    in a task that was told to stop (a worker shutting down)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


class RabbitConsumerBase(Consumer):
    """Channel handling shared by both kinds of consumer.

    The channel stays open while a handed-out message is unsettled (closing it would hand
    the message to someone else while it runs); it closes once the consumer is finished
    and everything it handed out is settled.
    """

    def __init__(self, broker: MessageBroker, link: ConsumerLink,
                 category: MessageCategory) -> None:
        super().__init__(broker, link.queue, category)
        self._link = link
        self._channel: AbstractRobustChannel | None = None
        self._outstanding = 0
        self._finished = False

    async def settled(self, delivery: AmqpHandle) -> None:
        """The broker settled a message this consumer handed out, or gave up settling it
        (it then frees the room all the same; RabbitMQ has the message back or gets it
        back when the channel closes). Counted once per delivery."""
        if delivery.settled:
            return
        delivery.settled = True
        self._outstanding -= 1
        if self._finished and self._outstanding <= 0:
            await self.close_channel()

    async def close_channel(self) -> None:
        """Close the channel (RabbitMQ returns whatever it still holds); a scan that ended
        is no longer kept for a later one to take over."""
        self._link.scans.forget(self)
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except CHANNEL_ERRORS:
                logger.debug("consumer channel of %s was already gone", self.queue_name)

    def _hand_out(self, message: Delivery) -> Delivery:
        self._outstanding += 1
        return message


class _Wake:
    """Put in a consumer's buffer to wake a waiting take so it looks at the queue's state."""


_WAKE: Final = _Wake()


class RabbitConsumer(RabbitConsumerBase):
    """NORMAL messages of one queue, pushed by RabbitMQ with prefetch = max_unacked.

    Delivered messages wait in a local buffer until `__anext__` takes them. At-least-once:
    every buffered message is unacked on the server, so if this process dies RabbitMQ
    redelivers it; `finish()` returns the buffered ones at once (uncounted, see above).

    Lost state: when the queue is gone (deleted, or a fresh server after a reconnect),
    `__anext__` raises QueueNotDeclaredError, after checking that it is still gone, so a
    worker can declare it again; the consumer subscribes again as soon as it exists. While
    the channel is down or the queue missing, `problem` says so; it clears once the
    subscription is back.
    """

    def __init__(self, broker: MessageBroker, link: ConsumerLink,
                 max_unacked_messages: int | None) -> None:
        super().__init__(broker, link, MessageCategory.NORMAL)
        self.prefetch = max_unacked_messages or link.settings.default_prefetch
        # In arrival order on classic queues; by priority level with quorum queues
        # (`_levels.py`).
        self._buffer: asyncio.Queue[Delivery | _Wake | None] = link.layout.new_buffer()
        self._underlay: AbstractChannel | None = None
        #: consumer tags of the subscriptions (one per RabbitMQ queue of `link.sources()`)
        self._tags: list[str] = []
        #: held while subscribing or cancelling, so a pause never misses a subscription
        #: being made (one per queue of `link.sources()`, made one after the other)
        self._subscribing = asyncio.Lock()
        self._unsubscribed = asyncio.Event()  # set: no subscription is active
        self._unsubscribed.set()
        self._timeout_limit: timedelta | None = None
        self._warned_timeout = False
        self._recovery: asyncio.Future[None] | None = None
        self._retry_now = asyncio.Event()  # set: the recovery loop tries again at once
        self._missing = False  # the last check found the queue gone
        self._paused = False  # subscription cancelled by `pause()`
        self._receiving = 0  # pushed messages still being handled by `_on_message`
        self._quiet = asyncio.Event()  # set when `_receiving` drops to 0
        self._arrived = asyncio.Event()  # set by a message pushed while pausing

    async def start(self) -> None:
        """Subscribe on a robust channel of its own: aio-pika reopens it (with its prefetch)
        after a connection drop, a broker restart or a server-side channel close, and the
        reopen callback subscribes again, so consuming resumes by itself."""
        if self._channel is not None or self._finished:
            return
        await self._link.check_queue()
        connection = await self._link.connection()
        channel = await connection.channel(publisher_confirms=False)
        assert isinstance(channel, AbstractRobustChannel)
        try:
            # Prefetch bounded by max_unacked_messages: RabbitMQ never pushes more than
            # this many unsettled messages to this consumer (with quorum queues, twice
            # this many per priority level: see `_levels.py`).
            await channel.set_qos(prefetch_count=self._link.layout.level_prefetch(
                self.prefetch))
            self._timeout_limit = self._link.effective_consumer_timeout()
            await self._subscribe(channel)
        except BaseException:
            await channel.close()
            raise
        channel.reopen_callbacks.add(self._resubscribe)
        channel.close_callbacks.add(self._on_channel_close)
        self._channel = channel

    async def _subscribe(self, channel: AbstractRobustChannel) -> None:
        """Subscribe to each RabbitMQ queue of the queue, the highest priority first (so
        its messages arrive first); subscriptions still active on the same channel (one
        of several was cancelled) are cancelled first, so none is doubled."""
        self._unsubscribed.clear()  # at once, before any wait: copies wait for the cancel
        async with self._subscribing:
            underlay = await channel.get_underlay_channel()
            if underlay is not self._underlay:
                underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
                self._tags = []  # a new channel: the old subscriptions went with it
            else:
                await self._cancel_subscribed()
            self._unsubscribed.clear()
            self._underlay = underlay
            for source in self._link.sources():
                ok = await underlay.basic_consume(
                    source, self._on_message, no_ack=False,
                    arguments=self._link.consumer_arguments(),
                    timeout=self._link.settings.operation_timeout)
                assert ok.consumer_tag is not None
                self._tags.append(ok.consumer_tag)

    async def _cancel_subscriptions(self) -> None:
        """basic.cancel each subscription, once one being made is complete (a closed
        channel has ended them already)."""
        async with self._subscribing:
            await self._cancel_subscribed()

    async def _cancel_subscribed(self) -> None:
        """basic.cancel each subscription, waiting for each cancel-ok (a quorum queue has
        then stopped delivering to it). A delivery that still comes after the cancel-ok
        would be dropped by aiormq, which has forgotten the consumer, and stay unacked
        here until the channel closes (then coming back counted once more), so the
        subscription's callback is put back for a while: `_on_message` gives such a
        delivery back while paused or finished."""
        underlay, tags, self._tags = self._underlay, self._tags, []
        if tags:
            self._unsubscribed.clear()  # subscribed until the cancel-oks
        loop = asyncio.get_running_loop()
        try:
            for tag in tags if underlay is not None else ():
                assert underlay is not None
                try:
                    await underlay.basic_cancel(tag,
                                                timeout=self._link.settings.operation_timeout)
                except CHANNEL_ERRORS as exc:  # the channel is gone: nothing more arrives
                    logger.debug("could not cancel a consumer of %r (%s)", self.queue_name, exc)
                    continue
                if isinstance(underlay, aiormq.Channel):
                    underlay.consumers.setdefault(tag, self._on_message)
                    loop.call_later(_LATE_DELIVERIES_SECONDS, underlay.consumers.pop, tag, None)
        finally:
            # also when a cancel failed otherwise (a timeout): settles and copies waiting
            # in `until_unsubscribed` go on rather than wait for ever
            self._unsubscribed.set()

    def _on_channel_close(self, channel: Any, exc: BaseException | None = None) -> None:
        """The channel closed under us (connection lost, server stopping): say so until
        the subscription is back (the robust connection reopens the channel)."""
        if channel is self._channel and not self._finished:
            self.report_problem(f"RabbitMQ channel of {self.queue_name!r} closed "
                                f"({type(exc).__name__ if exc else 'no error'}: {exc}); "
                                "reconnecting")

    async def _resubscribe(self, channel: Any) -> None:
        """The channel was reopened after a drop: subscribe again (unless finished)."""
        if channel is self._channel:
            self._start_recovery("the channel was reopened")

    def _on_cancel(self, frame: Basic.Cancel) -> None:
        """RabbitMQ cancelled the subscription (the queue was deleted, say): keep trying."""
        if frame.consumer_tag in self._tags:
            logger.warning("RabbitMQ cancelled the consumer of %r", self.queue_name)
            self._start_recovery("RabbitMQ cancelled the consumer")

    def _start_recovery(self, why: str) -> None:
        if self._finished or (self._recovery is not None and not self._recovery.done()):
            return
        self._recovery = asyncio.ensure_future(self._recover(why))

    async def _recover(self, why: str) -> None:
        """Subscribe again until it works or the consumer is finished, one try per
        `reconnect_interval` (or at once when a take found the queue back). The queue is
        checked on a separate channel first, so a missing queue never closes the consumer's
        own. A missing queue wakes a waiting take, which raises QueueNotDeclaredError."""
        delay = 0.0
        failures = 0
        while not self._finished and self._channel is not None:
            if delay:
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._retry_now.wait(), delay)
            self._retry_now.clear()
            delay = max(self._link.settings.reconnect_interval, 0.1)
            channel = self._channel
            if self._finished or channel is None:
                return
            try:
                await self._link.check_queue()
                if self._finished:
                    return
                if not self._paused:  # else `resume()` subscribes
                    await self._subscribe(channel)
            except QueueNotDeclaredError:
                if not self._missing:
                    logger.warning("queue %r does not exist (%s); waiting for it to be "
                                   "declared again", self.queue_name, why)
                    self._missing = True
                    self._buffer.put_nowait(_WAKE)
                self.report_problem(f"RabbitMQ queue {self.queue_name!r} does not exist "
                                    "(deleted, or the server lost its state); declare it")
            except Exception as exc:  # unreachable, reconnecting, or anything else: retry
                failures += 1
                log = logger.warning if failures % 30 == 1 else logger.debug
                log("resuming the consumer of %r failed (%s: %s); retrying every %.1f s",
                    self.queue_name, type(exc).__name__, exc, delay)
                self.report_problem(f"RabbitMQ unreachable for {self.queue_name!r}: "
                                    f"{type(exc).__name__}: {exc}")
            else:
                self._missing = False
                self.report_problem(None)
                logger.info("resumed consuming %r (%s)", self.queue_name, why)
                return

    async def _check_missing(self) -> None:
        """The queue was found gone: raise QueueNotDeclaredError while it still is, else
        have the recovery loop subscribe again now."""
        try:
            await self._link.check_queue()
        except QueueNotDeclaredError:
            self.report_problem(f"RabbitMQ queue {self.queue_name!r} does not exist "
                                "(deleted, or the server lost its state); declare it")
            raise
        self._retry_now.set()
        self._start_recovery("the queue exists again")

    async def _on_message(self, message: DeliveredMessage) -> None:
        """Decode a pushed message into the buffer; poison goes to the dead-letter queue.
        Whatever fails here, the message is never left held for ever: it goes back to the
        queue after `reconnect_interval` (not at once, which could spin)."""
        self._receiving += 1
        try:
            await self._receive(message)
        except Exception:
            logger.exception("could not handle message %r from %r; returning it to the "
                             "queue", codec.describe(message), self.queue_name)
            await asyncio.sleep(self._link.settings.reconnect_interval)
            await return_to_queue(message)
        finally:
            self._receiving -= 1
            if not self._receiving:
                self._quiet.set()

    async def _dead_letter(self, message: DeliveredMessage, reason: PayloadDecodeError) -> None:
        """Poison isolated (promise 7): to the DLQ with its reason; if that copy cannot be
        stored, through the queue's DLX instead (reason only in the log), never kept."""
        if not await self._link.dead_letter_poison(message, reason):
            with suppress(*CHANNEL_ERRORS):
                await settle(message, requeue=False)

    async def _receive(self, message: DeliveredMessage) -> None:
        redelivered = message.redelivered
        counted_by_copy = redelivered and not self._link.layout.server_counts
        if self._finished or (self._paused and not counted_by_copy):
            # Arrived while finishing or pausing: give it back (with quorum queues,
            # carrying the deliveries RabbitMQ counted), never drop it; once no
            # subscription is active, so the copy is not pushed straight back to this
            # consumer (a quorum queue would count a delivery the cancel then stops).
            self._arrived.set()  # not quiet yet (see `_until_quiet`)
            await self._unsubscribed.wait()
            await self._link.give_back(message)
            return
        handle = AmqpHandle(message, MessageCategory.NORMAL, self)
        if redelivered:
            # Deliveries counted: its last delivery ended unsettled (see the module; with
            # quorum queues RabbitMQ counts, see `_layout.py`).
            earlier = await self._link.count_redelivery(message)
            if earlier is None:
                return  # replaced by a counted copy
            handle.earlier = earlier
        try:
            key, payload, params = codec.decode(message, self.queue_name)
        except Exception as exc:  # any failure to read it makes it poison, never stuck here
            reason = as_decode_error(exc)
            await self.poison_nack(codec.describe(message), poison_reason(reason),
                                   functools.partial(self._dead_letter, message, reason))
            return
        if params.ready_at is not None and params.ready_at - utcnow() > _EARLY_TOLERANCE:
            # Delays to the second: a message that arrives before its time (a delay longer
            # than the delay levels reach, or a message published straight to the queue)
            # goes back to the delay levels.
            await self._link.delay_again(message, handle.earlier_deliveries(), key,
                                         payload, params)
            return
        self._buffer.put_nowait(Delivery(self.broker, key, payload, params,
                                         MessageCategory.NORMAL, handle,
                                         1 + handle.earlier_deliveries()))

    async def _next(self) -> Delivery:
        if self._channel is None and not self._finished:
            await self.start()  # QueueNotDeclaredError while the queue does not exist
            _raise_if_cancelling()
        while True:
            if self._finished and self._buffer.empty():
                raise StopAsyncIteration
            if self._missing:
                _raise_if_cancelling()
                await self._check_missing()
                _raise_if_cancelling()
            # asyncio.Queue.get is cancel-safe: a cancelled take leaves the message in the
            # buffer for the next one, so cancelling __anext__ never loses a message.
            item = await self._buffer.get()
            if item is None:
                self._buffer.put_nowait(None)  # wake any other waiter too
                raise StopAsyncIteration
            if isinstance(item, _Wake):
                continue  # look at `_missing` again
            if not item.handle.alive():
                # Its channel dropped; RabbitMQ requeued it and will deliver it again on
                # the restored channel. Handing it out now would run it twice.
                continue
            self._check_consumer_timeout(item)
            return self._hand_out(item)

    async def pause(self) -> None:
        """Cancel the subscription and give back (uncounted) what is buffered or arrived
        before the cancel-ok; returns once all of that is settled, so this consumer holds
        only what it handed out. A take waiting meanwhile gets nothing until `resume()`."""
        if self._paused or self._finished:
            return
        self._paused = True
        try:
            if self._link.layout.server_counts:
                await self._until_quiet()
            await self._cancel_subscriptions()
        except asyncio.CancelledError:
            if self._tags:  # stopped before its cancel: still subscribed, so not paused;
                self._paused = False  # wake whatever waits for the cancel
                self._unsubscribed.set()
            raise
        # Deliveries sent before cancel-ok precede it on the channel: their `_on_message`
        # tasks exist now; one loop turn lets them start and count themselves.
        await asyncio.sleep(0)
        for sentinel in await self._give_back_buffered():
            self._buffer.put_nowait(sentinel)
        while self._receiving:  # arrivals being given back (or moved, if redelivered)
            self._quiet.clear()
            await self._quiet.wait()

    async def _until_quiet(self) -> None:
        """Quorum queues: before a pause cancels, wait until RabbitMQ has sent what it
        will (nothing arrived for `_QUIET_SECONDS` since the pause began; settles wait
        meanwhile, so no prefetch is freed), so that no delivery is on its way when the
        cancel arrives: RabbitMQ 3.10 would take it back counted as an unsettled delivery.
        What arrives meanwhile is given back after the cancel, as any arrival during a
        pause (`_receive` sets `_arrived` there, so messages not paused pay nothing)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _QUIET_LIMIT_SECONDS
        while loop.time() < give_up:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), _QUIET_SECONDS)
            except asyncio.TimeoutError:
                return

    def delivered(self, message: DeliveredMessage) -> bool:
        """Whether `message` came through this consumer's channel."""
        return self._underlay is not None and message.channel is self._underlay

    async def until_unsubscribed(self) -> None:
        """While pausing or finishing: return once no subscription is active any more (a
        quorum queue returns, counted, a delivery its leader sent to a subscription
        being cancelled); at once otherwise. The broker's copies back to the queue wait
        here, and so do its settles on quorum queues: an ack frees prefetch, and RabbitMQ
        would fill it with a message for the subscription being cancelled."""
        if self._paused or self._finished:
            await self._unsubscribed.wait()

    async def _give_back_buffered(self) -> list[_Wake | None]:
        """Give back every buffered, not handed-out message (confirmed copies, count
        unchanged, all in one round); returns the wake-ups and end marks found beside
        them."""
        returns, others = [], []
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if isinstance(item, Delivery):
                handle: AmqpHandle = item.handle
                if handle.alive():
                    returns.append(self._link.give_back(handle.message))
            else:
                others.append(item)
        if returns:
            await asyncio.gather(*returns)
        return others

    async def resume(self) -> None:
        """Subscribe again after `pause()` (unless a recovery already did); if that fails,
        the recovery loop keeps trying."""
        if not self._paused:
            return
        self._paused = False
        channel = self._channel
        if channel is None or self._tags or self._finished:
            return
        try:
            await self._subscribe(channel)
        except Exception as exc:
            logger.info("could not resume consuming %r (%s); retrying", self.queue_name, exc)
            self._start_recovery("resuming after a pause failed")

    def _check_consumer_timeout(self, item: Delivery) -> None:
        """Warn once when a job may outlive RabbitMQ's delivery-ack timeout, after which
        the server closes the channel and redelivers the message (it would run twice)."""
        limit = self._timeout_limit
        if self._warned_timeout or limit is None or item.params.execution_timeout < limit:
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
        queue (uncounted, see the module), so none is lost or held by a stopping worker."""
        if self._finished:
            return
        self._finished = True
        if self._channel is not None:
            self._channel.reopen_callbacks.discard(self._resubscribe)
        if self._recovery is not None:
            self._recovery.cancel()
        await self._cancel_subscriptions()
        await self._give_back_buffered()
        self._buffer.put_nowait(None)
        if self._outstanding <= 0:
            await self.close_channel()


class RabbitScanConsumer(RabbitConsumerBase):
    """DELAYED or DEAD messages of one queue, read with basic.get.

    DEAD reads `<queue>:dead`, and hands out a message there that cannot be decoded as a
    poison message (`repid.brokers._poison`: its correlation_id, its AMQP body as text, its
    `x-repid-dead-reason`, else why it cannot be decoded now), which `ack` deletes. DELAYED
    reads the shared delay-level queues and hands out only the messages bound for this
    queue; one that cannot be decoded is dead-lettered. Every other message read (one held
    with `reject`/`nack`, a poison one that could not be dead-lettered) stays unacked until
    the scan ends and then goes back to where it was, so the scan sees each message once.
    Another queue's delayed message goes back when the pass over the levels that read it
    ends.

    With `stop_when_empty` the scan makes one pass over its queues and ends. Otherwise (as
    repid 1.x's consumers did) it waits: after a pass that found nothing more it waits
    `POLL_INTERVAL` and passes again, until it is finished; a lost connection is waited
    out (reported through `report_problem`), a deleted queue raises QueueNotDeclaredError.

    A basic.get cancelled while RabbitMQ answers (`wait_for(anext(...))` timing out) is
    waited for, and the message it brought is handed out by the next take or, if the scan
    finishes first, returned where it was: a cancelled take never strands a message.

    A handed-out message stays owned by the scan until it is settled, even after the scan
    ended, so it can be settled after the loop that read it. A later scan of the same part
    of the same queue takes over: it first returns the messages earlier, ended scans
    handed out and never settled (their channel closes), so a message only read, never
    settled, is where it was for the next reader. Settling one of those afterwards raises
    BrokerConnectionError and leaves it where it is.
    """

    #: seconds between two passes of a waiting scan that found nothing more
    POLL_INTERVAL = 0.5

    def __init__(self, broker: MessageBroker, link: ConsumerLink,
                 category: MessageCategory, stop_when_empty: bool) -> None:
        super().__init__(broker, link, category)
        self._stop_when_empty = stop_when_empty
        self._sources: list[str] = []
        self._index = 0
        #: read and kept (unacked) until the scan ends
        self._held: list[DeliveredMessage] = []
        #: other queues' delayed messages, returned when the pass ends
        self._foreign: list[DeliveredMessage] = []
        #: brought by a cancelled basic.get, handed out by the next take
        self._received: list[DeliveredMessage] = []
        self._started = False

    async def start(self) -> None:
        """Open the channel and name the queues to scan."""
        if self._started:
            return
        await self._link.check_queue()
        await self._link.scans.release(self.queue_name, self.category)
        if self.category is MessageCategory.DELAYED:
            await self._link.ensure_topology()
            self._sources = self._link.delay_levels()
        else:
            self._sources = [topology.dead_queue(self.queue_name)]
        connection = await self._link.connection()
        channel = await connection.channel(publisher_confirms=False)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        self._started = True

    async def _next(self) -> Delivery:
        return await self.read()

    async def read(self) -> Delivery:
        """The next message the scan hands out (StopAsyncIteration once it ends), without
        the consume hooks: the broker's own scans (flush, delete) use it."""
        if not self._started:
            await self.start()
        while not self._finished:
            if self._received:
                message = self._received.pop(0)
            elif self._index >= len(self._sources):
                if self._stop_when_empty:
                    await self._end()
                    break
                await self._next_pass()
                continue
            else:
                try:
                    got = await self._get(self._sources[self._index])
                except CHANNEL_ERRORS as exc:
                    if self._stop_when_empty:
                        raise
                    await self._wait_out(exc)
                    continue
                self.report_problem(None)
                if got is None:
                    self._index += 1
                    continue
                message = got
            if (self.category is MessageCategory.DELAYED
                    and not self._link.holds_delayed(message.routing_key or "")):
                self._foreign.append(message)  # another queue's delayed message
                continue
            handle = AmqpHandle(message, self.category, self)
            try:
                key, payload, params = codec.decode(message, self.queue_name)
            except Exception as exc:  # unreadable: poison
                reason = as_decode_error(exc)
                if self.category is MessageCategory.DEAD:
                    return self._hand_out(self._poison(message, handle, reason))
                if not await self._dead_letter(message, reason):
                    self._held.append(message)  # returned where it was when the scan ends
                continue
            return self._hand_out(Delivery(self.broker, key, payload, params, self.category,
                                           handle, 1 + handle.earlier_deliveries()))
        raise StopAsyncIteration

    def _poison(self, message: DeliveredMessage, handle: AmqpHandle,
                error: PayloadDecodeError) -> Delivery:
        """A dead message that cannot be decoded (`error`), as a poison message whose
        `ack` deletes it."""
        reason = codec.stored_reason(message) or poison_reason(error)
        return poison_message(self, message.header.properties.correlation_id, message.body,
                              reason, handle)

    async def _dead_letter(self, message: DeliveredMessage, reason: PayloadDecodeError) -> bool:
        """Poison isolated (promise 7), through the `repid_nack` hook: move the message
        to the DLQ with its reason; False when that copy could not be stored (the message
        is still held, and the hook's wrappers saw a BrokerConnectionError)."""
        moved = False

        async def move() -> None:
            nonlocal moved
            moved = await self._link.dead_letter_poison(message, reason)
            if not moved:
                raise BrokerConnectionError(
                    f"poison message {codec.describe(message)!r} could not be stored in the "
                    f"dead-letter queue of {self.queue_name!r}; it stays where it was")

        with suppress(BrokerConnectionError):
            await self.poison_nack(codec.describe(message), poison_reason(reason), move)
        return moved

    async def _get(self, source: str) -> DeliveredMessage | None:
        """basic.get one message of `source` (None when it is empty). If the caller is
        cancelled meanwhile, the answer is still awaited and a message it brings is kept
        for the next take (or returned when the scan ends), then the cancel goes on."""
        assert self._channel is not None
        underlay = await self._channel.get_underlay_channel()
        get = asyncio.ensure_future(underlay.basic_get(
            source, no_ack=False, timeout=self._link.settings.operation_timeout))
        try:
            message = await asyncio.shield(get)
        except asyncio.CancelledError:
            await asyncio.wait({get})  # bounded by the get's own timeout
            if not get.cancelled() and get.exception() is None:
                late = get.result()
                if not isinstance(late.delivery, Basic.GetEmpty):
                    self._received.append(late)
            raise
        return None if isinstance(message.delivery, Basic.GetEmpty) else message

    async def _next_pass(self) -> None:
        """A waiting scan found nothing more: return other queues' delayed messages (their
        time runs), wait, and read the queues again from the first."""
        foreign, self._foreign = self._foreign, []
        for message in foreign:
            await return_to_queue(message)
        await asyncio.sleep(self.POLL_INTERVAL)
        self._index = 0

    async def _wait_out(self, exc: BaseException) -> None:
        """A waiting scan lost its channel: what it held went back with it. Raise
        QueueNotDeclaredError if the queue is gone, else try again after a while."""
        self._held.clear()
        self._foreign.clear()
        self._received.clear()
        try:
            await self._link.check_queue()
        except QueueNotDeclaredError:
            raise
        except Exception as check:  # still unreachable: wait as for the first error
            exc = check
        if self.problem is None:
            logger.warning("reading the %s messages of %r failed (%s: %s); retrying",
                           self.category.name, self.queue_name, type(exc).__name__, exc)
        self.report_problem(f"RabbitMQ unreachable for {self.queue_name!r}: "
                            f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(self.POLL_INTERVAL)
        self._index = 0

    async def hold(self, delivery: AmqpHandle) -> None:
        """Leave the message where it was: returned now if the scan is over, else at its end."""
        if self._finished:
            await return_to_queue(delivery.message)
        else:
            self._held.append(delivery.message)
        await self.settled(delivery)

    async def _end(self) -> None:
        """Nothing left to read: return what was held; close once all is settled."""
        self._finished = True
        held = [*self._received, *self._held, *self._foreign]
        self._received, self._held, self._foreign = [], [], []
        for message in held:
            await return_to_queue(message)
        if self._outstanding <= 0:
            await self.close_channel()
        else:  # kept (strongly) until settled or taken over by a later scan
            self._link.scans.keep(self)

    async def finish(self) -> None:
        """Stop the scan early; held messages go back to their queues."""
        if not self._finished:
            await self._end()


def as_decode_error(exc: Exception) -> PayloadDecodeError:
    """Any failure to read a message, as the PayloadDecodeError that makes it poison."""
    return exc if isinstance(exc, PayloadDecodeError) else PayloadDecodeError(
        f"{type(exc).__name__}: {exc}")
