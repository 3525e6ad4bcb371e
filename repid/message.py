"""Message: one message as a consumer sees it, with its eager responses.

Inside an actor, a parameter annotated `MessageDependency` receives the message being
processed; an eager response there (`await msg.ack()`, `await msg.set_result(...)`)
settles the message or stores the result at once, and the worker then leaves that part
alone. `Queue.get_messages()` yields the same objects, e.g. to send dead letters back
with `await msg.reschedule()`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from repid.data import MessageCategory, Parameters, ResultBucket, RoutingKey, utcnow
from repid.data.headers import FATE_HEADERS
from repid.retry_policy import compute_retry_delay
from repid.schedule import next_run
from repid.serializer import to_json

if TYPE_CHECKING:
    from repid.connection import Connection
    from repid.router import Actor

logger = logging.getLogger("repid.message")


class Message:
    """A consumed message: `key`, `raw_payload`, `parameters`, `category`, and the
    responses that settle it. Exactly one settling response takes effect."""

    __slots__ = ("_callbacks", "actor", "category", "connection", "is_settled", "key",
                 "parameters", "raw_payload", "result_stored")

    def __init__(self, key: RoutingKey, raw_payload: str, parameters: Parameters,
                 category: MessageCategory, connection: Connection,
                 actor: Actor | None = None) -> None:
        self.key = key
        self.raw_payload = raw_payload
        self.parameters = parameters
        self.category = category
        self.connection = connection
        self.actor = actor
        self.is_settled = False
        self.result_stored = False
        self._callbacks: list[Callable[[], Any]] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, category={self.category.value})"

    def _settle(self, action: str) -> None:
        if self.is_settled:
            raise RuntimeError(f"cannot {action} message {self.key.id_}: it was already "
                               "acked, nacked, rejected, retried or rescheduled")
        self.is_settled = True

    @property
    def _broker(self) -> Any:
        return self.connection.message_broker

    async def ack(self) -> None:
        """Done: remove the message."""
        self._settle("ack")
        await self._broker.ack(self.key)

    async def nack(self) -> None:
        """Move the message to the dead-letter queue."""
        self._settle("nack")
        await self._broker.nack(self.key)

    async def reject(self) -> None:
        """Return the message to its queue unchanged, no retry counted."""
        self._settle("reject")
        await self._broker.reject(self.key)

    async def retry(self, delay: timedelta | float | None = None) -> None:
        """Run again after `delay` (default: the retry policy) if retries are left,
        else dead-letter it."""
        if self.parameters.retries.left <= 0:
            await self.nack()
            return
        await self.force_retry(delay)

    async def force_retry(self, delay: timedelta | float | None = None) -> None:
        """Run again after `delay` (default: the retry policy), retries left or not."""
        self._settle("retry")
        if delay is None:
            delay = compute_retry_delay(self.connection, self.actor, self.key,
                                        self.parameters, None)
        elif not isinstance(delay, timedelta):
            delay = timedelta(seconds=delay)
        await self._broker.requeue(self.key, self.raw_payload,
                                   self.parameters.with_retry(delay), "retry")

    async def reschedule(self) -> None:
        """Send the message back with its tries reset: a recurring job to its next time,
        any other (e.g. a dead letter) to its queue at once."""
        self._settle("reschedule")
        params = self.parameters
        when = next_run(params.delay) if params.delay.is_recurring else None
        again = params.with_next_run(when)
        if any(name in again.headers for name in FATE_HEADERS):
            # a fresh start: why it died, and how often it could not be settled, are past
            again.headers = {k: v for k, v in again.headers.items() if k not in FATE_HEADERS}
        await self._broker.requeue(self.key, self.raw_payload, again, "reschedule")

    async def set_result(self, value: Any) -> None:
        """Store `value` as the successful result now; the actor's return value is then
        not stored."""
        await self._store(ResultBucket(
            data=_plain(value), success=True, started_when=utcnow(), finished_when=utcnow(),
            ttl=self._result_ttl()))

    async def set_exception(self, exception: BaseException) -> None:
        """Store a failed result naming `exception` now."""
        await self._store(ResultBucket(
            data=None, success=False, exception=describe(exception), started_when=utcnow(),
            finished_when=utcnow(), ttl=self._result_ttl()))

    def _result_ttl(self) -> timedelta | None:
        return None if self.parameters.result is None else self.parameters.result.ttl

    async def _store(self, bucket: ResultBucket) -> None:
        broker = self.connection.results_bucket_broker
        if broker is None or self.parameters.result is None:
            raise RuntimeError(f"message {self.key.id_} has no result to store: the job was "
                               "enqueued without a results bucket broker or store_result")
        await broker.store_bucket(self.parameters.result.id_, bucket)
        self.result_stored = True

    def add_callback(self, fn: Callable[[], Any]) -> None:
        """Call `fn()` (sync or async) once the worker has finished with this message."""
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(fn)

    async def run_callbacks(self) -> None:
        for fn in self._callbacks or ():
            try:
                out = fn()
                if inspect.isawaitable(out):
                    await out
            except Exception:
                logger.exception("callback %r of message %s raised; ignored", fn, self.key.id_)


class MessageDependency(Message):
    """Annotate an actor parameter with this type to receive the message being processed."""

    __slots__ = ()


def describe(exception: BaseException) -> str:
    """`ValueError: bad input`: the exception's type and message."""
    text = str(exception)
    name = type(exception).__name__
    return f"{name}: {text}" if text else name


def _plain(value: Any) -> Any:
    import json

    return json.loads(to_json(value))
