"""Message: one message as a consumer sees it, and the eager responses of an actor.

`Queue.get_messages()` yields `Message`s, each around the `Delivery` a consumer handed out
(`repid.brokers.delivery`), which owns its settle: settling one (`ack`, `nack`, `reject`,
`retry`, `force_retry`, `reschedule`) sends that one call to the broker, e.g. to send dead letters
back with `await msg.reschedule()`. A dead message that cannot be decoded (`is_poison`) can
only be deleted with `await msg.ack()`: sending it back raises `PoisonMessageError`.

Inside an actor, a parameter annotated `MessageDependency` receives the message being
processed. There a settling call is an **eager response**, as in repid 1.x:

1. the broker call is sent (exactly one settle per message: a second raises
   `AlreadySettledError`, which is also a `ValueError`);
2. the result set by `set_result` / `set_exception` (the latest of the two) is stored and
   the `add_callback` callbacks run, all in the order they were submitted (a sync
   callback runs in a thread); a callback that raises stops the rest, and its exception
   comes out of the eager call, failing the run as in 1.x;
3. the actor ends there (`EagerExit`): the rest of its body does not run, and its return
   value is not stored.

When the actor returns without an eager response, the worker settles the message and
then applies what `set_result` / `set_exception` / `add_callback` submitted, in the same
order (a result set that way is stored instead of the return value).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from repid.brokers._poison import PoisonKey, refuse_requeue
from repid.data import MessageCategory, Parameters, ResultBucket, RoutingKey, utcnow
from repid.data.headers import FATE_HEADERS
from repid.errors import NoRetriesLeftError
from repid.retry_policy import compute_retry_delay
from repid.schedule import next_run
from repid.serializer import to_json

if TYPE_CHECKING:
    from repid.brokers.delivery import Delivery
    from repid.connection import Connection
    from repid.router import Actor

logger = logging.getLogger("repid.message")

#: what a message's callbacks may be: no arguments, sync or async
Callback = Callable[[], Any]


class Message:
    """A consumed message: `key`, `raw_payload`, `parameters`, `category`, and the
    responses that settle it, through its `delivery`. Exactly one settling response takes
    effect. `parameters` are the delivery's unless given."""

    __slots__ = ("actor", "category", "connection", "delivery", "key", "parameters",
                 "raw_payload")

    def __init__(self, delivery: Delivery, connection: Connection,
                 actor: Actor | None = None, parameters: Parameters | None = None) -> None:
        self.delivery = delivery
        self.key: RoutingKey = delivery.key
        self.raw_payload = delivery.payload
        self.parameters = delivery.params if parameters is None else parameters
        self.category: MessageCategory = delivery.category
        self.connection = connection
        self.actor = actor

    @property
    def is_settled(self) -> bool:
        """Whether a settling response (or the worker) has settled the message."""
        return self.delivery.is_settled

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, category={self.category.value})"

    @property
    def is_poison(self) -> bool:
        """Whether this is a dead message that cannot be decoded (`repid.brokers._poison`):
        its `raw_payload` is the stored body as text, its `parameters` are default ones
        with the reason in `headers[DEAD_REASON_HEADER]`; it can only be deleted (`ack`),
        `reschedule` and the retries raise `PoisonMessageError`."""
        return isinstance(self.key, PoisonKey)

    def _check_unsettled(self, action: str) -> None:
        """`AlreadySettledError` (before any other check) when the message is settled."""
        if self.delivery.is_settled:
            self.delivery.claim(action)  # raises, naming the settle that took effect

    async def ack(self) -> None:
        """Done: remove the message."""
        await self.delivery.ack()

    async def nack(self) -> None:
        """Move the message to the dead-letter queue."""
        await self.delivery.nack()

    async def reject(self) -> None:
        """Return the message to its queue unchanged, no retry counted."""
        await self.delivery.reject()

    async def retry(self, delay: timedelta | float | None = None, *,
                    next_retry: timedelta | float | None = None) -> None:
        """Run again after `delay` (default: the retry policy), counting one more try.
        Raises `NoRetriesLeftError` (a `ValueError`) when the job has no retries left;
        `force_retry` retries regardless. `next_retry=` is repid 1.x's name for `delay`."""
        self._check_unsettled("retry")
        if self.parameters.retries.left <= 0:
            raise NoRetriesLeftError(
                f"message {self.key.id_} has no retries left (it allows "
                f"{self.parameters.retries.max_amount}); use force_retry() to run it again "
                "anyway, or nack() to dead-letter it")
        await self.force_retry(delay, next_retry=next_retry)

    async def force_retry(self, delay: timedelta | float | None = None, *,
                          next_retry: timedelta | float | None = None) -> None:
        """Run again after `delay` (default: the retry policy), retries left or not."""
        if delay is None:
            delay = next_retry
        self._check_unsettled("retry")
        refuse_requeue(self.key, "retry")
        if delay is None:
            delay = compute_retry_delay(self.connection, self.actor, self.key,
                                        self.parameters, None, self.delivery.stash)
        elif not isinstance(delay, timedelta):
            delay = timedelta(seconds=delay)
        await self.delivery.requeue(self.parameters.with_retry(delay), "retry",
                                    self.raw_payload)

    async def reschedule(self) -> None:
        """Send the message back with its tries reset: a recurring job to its next time,
        any other (e.g. a dead letter) to its queue at once. A poison message (`is_poison`)
        cannot go back: `PoisonMessageError`, and it stays unsettled (`ack` deletes it)."""
        self._check_unsettled("reschedule")
        refuse_requeue(self.key, "reschedule")
        params = self.parameters
        when = next_run(params.delay) if params.delay.is_recurring else None
        again = params.with_next_run(when)
        if any(name in again.headers for name in FATE_HEADERS):
            # a fresh start: why it died, and how often it could not be settled, are past
            again.headers = {k: v for k, v in again.headers.items() if k not in FATE_HEADERS}
        await self.delivery.requeue(again, "reschedule", self.raw_payload)


class EagerExit(BaseException):
    """Ends an actor after an eager response (see the module's docstring).

    A `BaseException`, so that an actor's `except Exception:` does not swallow it; the
    worker catches it around the actor call. `success` and `exception` are the run's
    outcome: the result set by `set_result` / `set_exception`, else success for `ack` and
    `reschedule` and failure for `nack`, `reject` and the retries."""

    def __init__(self, success: bool, exception: BaseException | None) -> None:
        super().__init__()
        self.success = success
        self.exception = exception


class MessageDependency(Message):
    """Annotate an actor parameter with this type to receive the message being processed;
    its settling calls are eager responses (see the module's docstring)."""

    __slots__ = ("_submitted",)

    def __init__(self, delivery: Delivery, connection: Connection,
                 actor: Actor | None = None, parameters: Parameters | None = None) -> None:
        super().__init__(delivery, connection, actor, parameters)
        #: what waits for the settle; None until the actor submits something (most never)
        self._submitted: _Submitted | None = None

    @property
    def has_submitted(self) -> bool:
        """Whether a result or a callback waits for the settle."""
        return self._submitted is not None

    @property
    def has_result(self) -> bool:
        """Whether `set_result` or `set_exception` was called."""
        submitted = self._submitted
        return submitted is not None and submitted.result is not None

    def set_result(self, value: Any) -> None:
        """Store `value` as the run's successful result once the message is settled. The
        value is encoded now, by the actor's converter (a pydantic model keeps only its
        fields), so a value that cannot be stored raises here."""
        self._check_result_wanted()
        text = (to_json(value) if self.actor is None
                else self.actor.converter.convert_outputs(value))
        self._set(ResultBucket(data=json.loads(text), success=True, started_when=utcnow(),
                               finished_when=utcnow(), ttl=self._result_ttl()), None)

    def set_exception(self, exception: BaseException) -> None:
        """Store a failed result naming `exception` once the message is settled."""
        self._check_result_wanted()
        self._set(ResultBucket(data=None, success=False, exception=describe(exception),
                               started_when=utcnow(), finished_when=utcnow(),
                               ttl=self._result_ttl()), exception)

    def add_callback(self, fn: Callback) -> None:
        """Call `fn()` (sync in a thread, or async) once the message is settled."""
        self._submissions().callbacks.append(fn)

    def _check_result_wanted(self) -> None:
        if self.parameters.result is None or self.connection.results_bucket_broker is None:
            raise ValueError(
                f"message {self.key.id_} has no result to store: the job was enqueued "
                "without store_result, or this worker's Connection has no "
                "results_bucket_broker")

    def _set(self, bucket: ResultBucket, error: BaseException | None) -> None:
        submitted = self._submissions()
        submitted.result, submitted.error = bucket, error
        submitted.result_at = len(submitted.callbacks)

    def _submissions(self) -> _Submitted:
        if self._submitted is None:
            self._submitted = _Submitted()
        return self._submitted

    def _result_ttl(self) -> timedelta | None:
        return None if self.parameters.result is None else self.parameters.result.ttl

    async def apply_submitted(self) -> None:
        """Store the submitted result and run the callbacks, in submission order. The
        first that raises stops the rest, and its exception propagates."""
        submitted = self._submitted
        if submitted is None:
            return
        callbacks = submitted.callbacks
        for at in range(len(callbacks) + 1):
            if submitted.result is not None and at == submitted.result_at:
                await self._store(submitted.result)
            if at < len(callbacks):
                await _call(callbacks[at])

    async def _store(self, bucket: ResultBucket) -> None:
        broker = self.connection.results_bucket_broker
        assert broker is not None and self.parameters.result is not None  # _check_result_wanted
        await broker.store_bucket(self.parameters.result.id_, bucket)

    async def _respond(self, success: bool) -> NoReturn:
        await self.apply_submitted()
        submitted = self._submitted
        if submitted is None:
            raise EagerExit(success, None)
        if submitted.result is not None:
            success = submitted.result.success
        raise EagerExit(success, submitted.error)

    async def ack(self) -> NoReturn:
        await super().ack()
        await self._respond(True)

    async def nack(self) -> NoReturn:
        await super().nack()
        await self._respond(False)

    async def reject(self) -> NoReturn:
        await super().reject()
        await self._respond(False)

    async def force_retry(self, delay: timedelta | float | None = None, *,
                          next_retry: timedelta | float | None = None) -> NoReturn:
        await super().force_retry(delay, next_retry=next_retry)
        await self._respond(False)

    async def reschedule(self) -> NoReturn:
        await super().reschedule()
        await self._respond(True)


class _Submitted:
    """What an actor gave its message to do once it is settled: the callbacks, in
    submission order, and the result set by `set_result` / `set_exception` with its place
    among them (`result_at` callbacks run before it is stored)."""

    __slots__ = ("callbacks", "error", "result", "result_at")

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []
        self.result: ResultBucket | None = None
        self.result_at = 0
        #: the exception given to set_exception, while it is the latest set
        self.error: BaseException | None = None


async def _call(fn: Callback) -> None:
    if inspect.iscoroutinefunction(fn):
        await fn()
        return
    ctx = contextvars.copy_context()
    out = await asyncio.get_running_loop().run_in_executor(None, ctx.run, fn)
    if inspect.isawaitable(out):  # e.g. a bound method of a mock, or a partial
        await out


def describe(exception: BaseException) -> str:
    """`ValueError: bad input`: the exception's type and message."""
    text = str(exception)
    name = type(exception).__name__
    return f"{name}: {text}" if text else name
