"""The abstract brokers, and the promises every concrete broker keeps.

A message is a `(key, payload, params)` triple: a `RoutingKey`, the encoded arguments
(a string), and `Parameters`. A consumer hands each message out as a
`repid.brokers.delivery.Delivery`, which is that triple too and the one owner of its
settle. Brokers store and move messages; they never run actors and never decide
retries. The public methods here pass each call through the middleware (one `is None`
check when no plugin is registered; see `repid.middleware._chain`);
concrete brokers implement the underscored methods.

Delivery promises of every `MessageBroker`:

1. **Confirmed enqueue.** `enqueue` returns only once the broker has stored the message;
   otherwise it raises (`QueueNotDeclaredError` for a queue that is not declared, where
   the broker requires it: RabbitMQ, Redis and in-memory with `require_declared_queues=True`;
   a `ConnectionError` when the broker cannot confirm). Nothing is dropped silently.
2. **At-least-once delivery.** A consumed message stays owned by the broker until it is
   settled with exactly one of `ack`, `nack`, `reject` or `requeue`. If the consumer
   dies first (even `kill -9`), the message is delivered again.
3. **Delays to the second.** A message whose `params.delay.next_execution_time` is in the
   future is not delivered before that time and is delivered within about a second
   after it; a long delay never holds back a shorter one.
4. **Priorities.** Among ready messages of one queue, higher `key.priority` goes first.
5. **Headers intact.** `params.headers` reaches the consumer unchanged, through
   `requeue` and the dead-letter queue too.
6. **Dead letters kept.** `nack` moves a message to its queue's dead-letter part, where
   `consume(category=DEAD)` can read it and `requeue` sends it back. The reason given to
   `nack` is in the dead message's `params.headers[DEAD_REASON_HEADER]`.
7. **Poison isolated.** A stored message that cannot be decoded, for any reason, is
   moved to the dead-letter part by the consumer, alone, with the reason logged and in its
   `DEAD_REASON_HEADER`, through the `repid_nack` hook like every dead-lettering
   (`Consumer.poison_nack`); the rest of what was taken with it is handed out, and
   consuming goes on. `consume(category=DEAD)` hands it out as a poison message (its id,
   its raw body as text, its reason; see `repid.brokers._poison`), which `ack` deletes and
   nothing sends back to the queue.
8. **Deliveries counted.** `delivery_count(key)` tells how many times a consumed message
   was delivered without being settled, so the worker can dead-letter one that keeps
   killing its process (`max_deliveries`).

Errors: consuming a queue that was never declared raises `QueueNotDeclaredError` from
`__anext__`. A settle (`ack`, `nack`, `reject`, `requeue`) may raise `BrokerConnectionError`
when the connection that delivered the message is gone; the broker then still owns the
message and delivers it again (promise 2), so the caller only logs it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from repid.brokers._poison import refuse_requeue
from repid.brokers.delivery import Delivery, claimed, delivery_of
from repid.data import BucketT, MessageCategory, Parameters, RoutingKey
from repid.data.headers import DEAD_REASON_HEADER as DEAD_REASON_HEADER
from repid.errors import MessageTooLargeError
from repid.middleware._chain import NO_ARGS
from repid.middleware._hooked import Hooked

#: a message as brokers move it: the key, the encoded arguments, the parameters (the
#: public `repid.Message` is what a consumer of `Queue.get_messages` sees)
RawMessage = tuple[RoutingKey, str, Parameters]

#: default of `MessageBroker.max_deliveries`
DEFAULT_MAX_DELIVERIES = 5
#: why a message is requeued, the `reason` of `MessageBroker.requeue` and `repid_requeue`:
#: a retry after a failed run, a recurring job's next run, an eager `msg.reschedule()`, a
#: failure between its run and its settle, a topic no actor of that worker handles
REQUEUE_REASONS = ("retry", "schedule", "reschedule", "recovery", "unknown_topic")
#: default of `MessageBroker.max_message_size`: 16 MiB
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


# --- the hooks' arguments, built only when a wrapper or a v1 subscriber names one
# (`HookChain.takes_args`) ---


def _message_args(broker: MessageBroker, key: RoutingKey, payload: str,
                  params: Parameters) -> Mapping[str, Any]:
    return {"connection": broker.hook_connection, "broker": broker, "queue": key.queue,
            "key": key, "payload": payload, "params": params}


def _requeue_args(broker: MessageBroker, delivery: Delivery, payload: str,
                  params: Parameters, reason: str | None) -> Mapping[str, Any]:
    key = delivery.key
    return {"connection": broker.hook_connection, "broker": broker, "queue": key.queue,
            "key": key, "payload": payload, "params": params, "reason": reason,
            "stash": delivery.stash}


def _key_args(broker: MessageBroker, delivery: Delivery) -> Mapping[str, Any]:
    key = delivery.key
    return {"connection": broker.hook_connection, "broker": broker, "queue": key.queue,
            "key": key, "stash": delivery.stash}


def _nack_args(broker: MessageBroker, delivery: Delivery,
               reason: str | None) -> Mapping[str, Any]:
    key = delivery.key
    return {"connection": broker.hook_connection, "broker": broker, "queue": key.queue,
            "key": key, "stash": delivery.stash, "reason": reason}


def _queue_args(broker: MessageBroker, queue_name: str) -> Mapping[str, Any]:
    return {"connection": broker.hook_connection, "broker": broker, "queue": queue_name}


def _bucket_args(broker: BucketBroker, id_: str) -> Mapping[str, Any]:
    return {"connection": broker.hook_connection, "broker": broker, "id_": id_}


def _store_args(broker: BucketBroker, id_: str,
                payload: BucketT) -> Mapping[str, Any]:
    return {"connection": broker.hook_connection, "broker": broker, "id_": id_,
            "payload": payload}


def _check_size(broker: MessageBroker, key: RoutingKey, payload: str) -> None:
    if len(payload) > broker.max_message_size >> 2:  # a character is 1 to 4 bytes
        broker.check_size(key, payload)


@dataclass(frozen=True, slots=True)
class ConsumeRequest:
    """What `MessageBroker.consume()` was asked for, as a broker's `_consumer` gets it."""

    queue_name: str
    #: the topics to take, where the broker can filter (None: every topic)
    topics: frozenset[str] | None
    #: how many messages the consumer may hold unsettled (None: the broker's default)
    max_unacked_messages: int | None
    category: MessageCategory
    #: DELAYED or DEAD: read what is there and end, instead of waiting for more
    stop_when_empty: bool


class _HasMiddleware(Hooked):
    """The middleware slot shared by both kinds of broker (`repid.middleware._hooked`)."""

    #: `messaging.system` of OpenTelemetry: in_memory, redis, rabbitmq
    system: ClassVar[str] = "unknown"


class MessageBroker(_HasMiddleware, ABC):
    """Stores messages in queues and hands them to consumers; see the module's promises."""

    #: a message delivered this many times without being settled is dead-lettered by the
    #: worker (an actor may set its own limit); brokers take it as `max_deliveries=`
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    #: the largest payload (encoded arguments, in UTF-8 bytes) `enqueue` accepts; brokers
    #: take it as `max_message_size=`
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def set_limits(self, max_deliveries: int, max_message_size: int) -> None:
        """Set `max_deliveries` and `max_message_size` from a broker's own arguments,
        refusing a limit under 1 (`ValueError`)."""
        for name, limit in (("max_deliveries", max_deliveries),
                            ("max_message_size", max_message_size)):
            if limit < 1:
                raise ValueError(f"{name} is {limit}; give 1 or more")
        self.max_deliveries = max_deliveries
        self.max_message_size = max_message_size

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection. Idempotent."""

    @abstractmethod
    async def disconnect(self) -> None:
        """Close the connection. Idempotent."""

    # --- public calls, through the middleware ---

    def enqueue(self, key: RoutingKey, payload: str,
                params: Parameters) -> Coroutine[Any, Any, None]:
        """Store a new message (ready at `params.delay.next_execution_time`, or now).

        `MessageTooLargeError` when the payload is over `max_message_size`."""
        _check_size(self, key, payload)
        chain = self._chains.enqueue
        if chain is None:
            return self._enqueue(key, payload, params)
        hook_args = _message_args(self, key, payload, params) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._enqueue, key, payload, params)

    def check_size(self, key: RoutingKey, payload: str) -> None:
        """Refuse a payload over `max_message_size` bytes (`MessageTooLargeError`)."""
        size = len(payload.encode())
        if size > self.max_message_size:
            raise MessageTooLargeError(key, size, self.max_message_size)

    def check_sizes(self, messages: Iterable[RawMessage]) -> list[RawMessage]:
        """`messages` as a list, once no payload is over `max_message_size`
        (`MessageTooLargeError` names the first that is). Every `enqueue_many` calls it
        before it stores anything, so a batch with one message too large stores none; like
        `enqueue`, it encodes only a payload long enough to be over."""
        batch = list(messages)
        quarter = self.max_message_size >> 2  # a character is 1 to 4 bytes
        for key, payload, _ in batch:
            if len(payload) > quarter:
                self.check_size(key, payload)
        return batch

    async def enqueue_many(self, messages: Iterable[RawMessage]) -> None:
        """Store many messages; brokers may confirm them in one round. Sizes are checked
        first (`check_sizes`): nothing is stored when one is too large."""
        for key, payload, params in self.check_sizes(messages):
            await self.enqueue(key, payload, params)

    # The settles: each takes the `Delivery` a consumer yielded, or its key (repid 1.x),
    # or a plain key of a message known by id (settled by id where the broker can), and
    # claims the delivery first (`claimed`: one settle per delivery).

    def requeue(self, message: RoutingKey | Delivery, payload: str, params: Parameters,
                reason: str | None = None) -> Coroutine[Any, Any, None]:
        """Replace a consumed message by one with new parameters, ready at its delay;
        `reason` says why, for plugins (one of `REQUEUE_REASONS`). Refused, with the message
        left unsettled: a `payload` over `max_message_size` (`MessageTooLargeError`), and a
        poison message, which can only be deleted (`PoisonMessageError`)."""
        key = message.key if isinstance(message, Delivery) else message
        _check_size(self, key, payload)
        refuse_requeue(key, "requeue")
        delivery = claimed(self, message, "requeue")
        chain = self._chains.requeue
        if chain is None:
            return self._requeue(delivery.key, delivery.handle, payload, params, reason)
        hook_args = (_requeue_args(self, delivery, payload, params, reason)
                     if chain.takes_args else NO_ARGS)
        return chain.around(hook_args, self._requeue, delivery.key, delivery.handle, payload,
                            params, reason)

    def ack(self, message: RoutingKey | Delivery) -> Coroutine[Any, Any, None]:
        """The message is done: remove it."""
        delivery = claimed(self, message, "ack")
        chain = self._chains.ack
        if chain is None:
            return self._ack(delivery.key, delivery.handle)
        hook_args = _key_args(self, delivery) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._ack, delivery.key, delivery.handle)

    def nack(self, message: RoutingKey | Delivery,
             reason: str | None = None) -> Coroutine[Any, Any, None]:
        """Move the message to its queue's dead-letter part; `reason`, when given, is kept
        in the dead message's `headers[DEAD_REASON_HEADER]`."""
        delivery = claimed(self, message, "nack")
        chain = self._chains.nack
        if chain is None:
            return self._nack(delivery.key, delivery.handle, reason)
        hook_args = _nack_args(self, delivery, reason) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._nack, delivery.key, delivery.handle, reason)

    def reject(self, message: RoutingKey | Delivery) -> Coroutine[Any, Any, None]:
        """Return the message to its queue as it was, no retry counted."""
        delivery = claimed(self, message, "reject")
        chain = self._chains.reject
        if chain is None:
            return self._reject(delivery.key, delivery.handle)
        hook_args = _key_args(self, delivery) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._reject, delivery.key, delivery.handle)

    def queue_declare(self, queue_name: str) -> Coroutine[Any, Any, None]:
        """Create the queue with its delayed and dead-letter parts. Idempotent."""
        chain = self._chains.queue_declare
        if chain is None:
            return self._queue_declare(queue_name)
        hook_args = _queue_args(self, queue_name) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._queue_declare, queue_name)

    def queue_flush(self, queue_name: str) -> Coroutine[Any, Any, None]:
        """Remove every message of the queue: ready, delayed, dead and in flight."""
        chain = self._chains.queue_flush
        if chain is None:
            return self._queue_flush(queue_name)
        hook_args = _queue_args(self, queue_name) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._queue_flush, queue_name)

    def queue_delete(self, queue_name: str) -> Coroutine[Any, Any, None]:
        """Delete the queue and everything in it."""
        chain = self._chains.queue_delete
        if chain is None:
            return self._queue_delete(queue_name)
        hook_args = _queue_args(self, queue_name) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._queue_delete, queue_name)

    def consume(
        self,
        queue_name: str,
        topics: Iterable[str] | None = None,
        max_unacked_messages: int | None = None,
        category: MessageCategory = MessageCategory.NORMAL,
        *,
        stop_when_empty: bool = False,
    ) -> Consumer:
        """A consumer of one queue's messages of one category.

        `topics` limits what it takes where the broker can filter (others may still
        arrive); `max_unacked_messages` bounds how many it holds unsettled at once.
        Every category waits for new messages until `finish()` (as in repid 1.x);
        `stop_when_empty=True` makes a DELAYED or DEAD consumer read what is there and end
        (a NORMAL consumer always waits: it raises ValueError).
        """
        if stop_when_empty and category is MessageCategory.NORMAL:
            raise ValueError(
                "stop_when_empty=True applies to the DELAYED and DEAD categories; a NORMAL "
                "consumer waits for messages until you stop iterating (or finish() it)")
        return self._consumer(ConsumeRequest(
            queue_name, None if topics is None else frozenset(topics), max_unacked_messages,
            category, stop_when_empty))

    # --- what a concrete broker implements ---

    @abstractmethod
    async def _enqueue(self, key: RoutingKey, payload: str, params: Parameters) -> None: ...

    # The settles receive the delivery's key and the broker's `handle` of it (None for a
    # key the caller made: act on the message by id, or refuse).

    @abstractmethod
    async def _requeue(self, key: RoutingKey, handle: Any, payload: str, params: Parameters,
                       reason: str | None = None) -> None: ...

    @abstractmethod
    async def _ack(self, key: RoutingKey, handle: Any) -> None: ...

    @abstractmethod
    async def _nack(self, key: RoutingKey, handle: Any, reason: str | None = None) -> None: ...

    @abstractmethod
    async def _reject(self, key: RoutingKey, handle: Any) -> None: ...

    @abstractmethod
    async def _queue_declare(self, queue_name: str) -> None: ...

    @abstractmethod
    async def _queue_flush(self, queue_name: str) -> None: ...

    @abstractmethod
    async def _queue_delete(self, queue_name: str) -> None: ...

    @abstractmethod
    def _consumer(self, request: ConsumeRequest) -> Consumer:
        """A consumer for what `consume()` was asked (`request`)."""

    def delivery_count(self, message: RoutingKey | Delivery) -> int:
        """How many times the consumed message has been delivered, this delivery
        included, counting only deliveries that ended unsettled (a lease that ran out, a
        connection lost while it was held); a message returned on purpose (`reject`,
        `requeue`, a consumer's `finish`) does not count. 1 where the broker cannot tell."""
        if type(message) is Delivery:
            return message.delivery_count
        return delivery_of(self, message).delivery_count

    # --- inspection, for the CLI and tests ---

    async def queue_stats(self, queue_name: str) -> dict[str, int]:
        """Counts of the queue's messages: `ready`, `delayed`, `in_flight`, `dead`
        (-1 where the broker cannot tell)."""
        return {"ready": -1, "delayed": -1, "in_flight": -1, "dead": -1}

    async def queue_names(self) -> list[str] | None:
        """The names of the declared queues, sorted; None where the broker cannot list
        them."""
        return None


class Consumer(ABC):
    """Takes messages of one queue and category, one `__anext__` at a time.

    Consumers wait for messages until `finish()`; DELAYED and DEAD consumers made with
    `stop_when_empty=True` read what is there and end. A message taken is owned by the
    consumer's broker until settled; a cancelled `__anext__` loses no message (one taken
    but not yet handed out is handed out next, or goes back when the consumer finishes).
    """

    def __init__(self, broker: MessageBroker, queue_name: str, category: MessageCategory) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.category = category
        #: what runs around `__anext__`: the broker's chains, as they are when it was made
        #: (and after: a middleware's chains are updated in place)
        self._chains = broker.chains
        #: why the consumer cannot take messages now, and since when (`time.monotonic()`);
        #: None while it can (an idle consumer waiting on an empty queue is fine)
        self.problem: tuple[str, float] | None = None

    def report_problem(self, reason: str | None) -> None:
        """Say the consumer cannot take messages now (`reason`), or can again (None).

        Brokers call it from their take loops, the worker from its own; the worker's health
        check reads `problem`. Repeated reports keep the first time."""
        if reason is None:
            self.problem = None
        elif self.problem is None:
            self.problem = (reason, time.monotonic())

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Delivery]:
        """The next message (see `_next`), through the `repid_consume` wrappers."""
        chain = self._chains.consume
        if chain is None:
            return self._next()
        broker = self.broker
        hook_args = NO_ARGS if not chain.takes_args else {
            "connection": broker.hook_connection, "broker": broker,
            "queue": self.queue_name, "category": self.category}
        return chain.around(hook_args, self._next)

    def poison_nack(self, id_: str, reason: str,
                    dead_letter: Callable[[], Awaitable[None]]) -> Awaitable[None]:
        """Poison isolated (promise 7) through the `repid_nack` hook, as every
        dead-lettering: `dead_letter()` moves the undecodable message `id_` of this queue
        to its dead-letter part (raising if it could not). The hook's key holds only what
        is known without decoding: `id_`, the queue, topic "" (see `repid_nack`)."""
        chain = self._chains.nack
        if chain is None:
            return dead_letter()
        delivery = delivery_of(self.broker, RoutingKey(id_, "", self.queue_name))
        hook_args = _nack_args(self.broker, delivery, reason) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, dead_letter)

    async def start(self) -> None:
        """Begin receiving (subscribe, start prefetching). Called before the first take."""

    async def pause(self) -> None:
        """Hold nothing that was not handed out: give back what was received but not yet
        handed out (deliberately: not counted as a delivery) and receive nothing more until
        `resume()`, except what `__anext__` asks for. The worker pauses its consumers while
        a suspect runs alone (`repid.worker._isolation`). Nothing to do for a consumer that holds
        nothing of its own."""

    async def resume(self) -> None:
        """Receive as before `pause()`."""

    async def finish(self) -> None:
        """Stop receiving; messages received but not yet handed out go back to the queue."""

    @abstractmethod
    async def _next(self) -> Delivery:
        """The next message, as a `Delivery` of this consumer's broker; raise
        StopAsyncIteration once finished (or, for DELAYED and DEAD with `stop_when_empty`,
        once nothing is left)."""


class BucketBroker(_HasMiddleware, ABC):
    """Stores buckets (a job's arguments, an actor's result) by id, with expiry."""

    def __init__(self, use_result_bucket: bool = False) -> None:
        self.use_result_bucket = use_result_bucket

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    def get_bucket(self, id_: str) -> Coroutine[Any, Any, BucketT | None]:
        """The bucket stored under `id_`, or None (never stored, deleted or expired)."""
        chain = self._chains.get_bucket
        if chain is None:
            return self._get_bucket(id_)
        hook_args = _bucket_args(self, id_) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._get_bucket, id_)

    def store_bucket(self, id_: str, payload: BucketT) -> Coroutine[Any, Any, None]:
        """Store `payload` under `id_`; it expires after `payload.ttl` when set."""
        chain = self._chains.store_bucket
        if chain is None:
            return self._store_bucket(id_, payload)
        hook_args = _store_args(self, id_, payload) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._store_bucket, id_, payload)

    def delete_bucket(self, id_: str) -> Coroutine[Any, Any, None]:
        """Delete the bucket stored under `id_` (nothing happens if there is none)."""
        chain = self._chains.delete_bucket
        if chain is None:
            return self._delete_bucket(id_)
        hook_args = _bucket_args(self, id_) if chain.takes_args else NO_ARGS
        return chain.around(hook_args, self._delete_bucket, id_)

    @abstractmethod
    async def _get_bucket(self, id_: str) -> BucketT | None: ...

    @abstractmethod
    async def _store_bucket(self, id_: str, payload: BucketT) -> None: ...

    @abstractmethod
    async def _delete_bucket(self, id_: str) -> None: ...
