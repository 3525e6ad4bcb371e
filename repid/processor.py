"""What happens to one message: run its actor, store the result, settle it.

The outcomes (see docs/outcomes.md):

- actor returns: ack (a recurring job is requeued for its next time); result stored.
- actor raises or times out with retries left: result stored, then requeued after the
  retry delay with one more try counted.
- no retries left: result stored with success=False, then dead-lettered (a recurring job
  goes on to its next time instead).
- ttl passed before it ran: dead-lettered, actor not run.
- payload undecodable or arguments not fitting: dead-lettered with the reason logged.
- no actor for its topic: returned to the queue after a short wait, with a warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from repid.data import MessageCategory, Parameters, ResultBucket, RoutingKey, utcnow
from repid.dependencies.resolver import Resolver, call_sync
from repid.errors import PayloadDecodeError
from repid.message import MessageDependency, describe
from repid.retry_policy import compute_retry_delay
from repid.router import Actor, ActorResult
from repid.schedule import next_run
from repid.serializer import ARGS_BUCKET_MARKER

if TYPE_CHECKING:
    from repid.connection import Connection

logger = logging.getLogger("repid.worker")

#: how long a message whose topic no actor here handles waits before it is offered again
UNKNOWN_TOPIC_DELAY = timedelta(seconds=1)


class ActorTimeoutError(TimeoutError):
    """The actor ran past its job's timeout."""


class Processor:
    """Runs messages through actors for one connection."""

    def __init__(self, connection: Connection, actors: dict[str, Actor],
                 process_pool: Callable[[], Executor]) -> None:
        self.connection = connection
        self.broker = connection.message_broker
        self.actors = actors
        self.process_pool = process_pool
        self._warned_topics: set[str] = set()

    async def process(self, key: RoutingKey, payload: str, params: Parameters) -> bool:
        """Handle one message; returns False when it was not for this worker."""
        actor = self.actors.get(key.topic)
        if actor is None:
            await self._not_mine(key, payload, params)
            return False
        if params.ttl is not None and params.is_overdue:
            logger.warning("message %s (%s) expired before it ran (ttl %s); dead-lettered",
                           key.id_, key.topic, params.ttl)
            await self.broker.nack(key)
            return True
        message = MessageDependency(key, payload, params, MessageCategory.NORMAL,
                                    self.connection, actor)
        try:
            chain = self.broker._chains.actor_run
            if chain is None:
                result = await self._run(actor, message)
            else:
                kwargs = {"connection": self.connection, "actor": actor, "key": key,
                          "payload": payload, "params": params}
                if chain.single:  # inlined chain.run, as in the broker base
                    gen = chain.enter(kwargs)
                    try:
                        outcome = await self._run(actor, message)
                    except BaseException as exc:  # cancelled: let the wrapper see it
                        chain.fail(gen, exc)
                        raise
                    result = chain.leave(gen, outcome)
                else:
                    result = await chain.run(self._run, (actor, message), kwargs)
        except asyncio.CancelledError:
            # shutdown past its grace time: back to the queue, no retry counted
            if not message.is_settled:
                message.is_settled = True
                await self.broker.reject(key)
            raise
        if not message.is_settled:
            await self._settle(actor, message, result)
        if message._callbacks:
            await message.run_callbacks()
        return True

    async def _not_mine(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        log = logger.debug if key.topic in self._warned_topics else logger.warning
        self._warned_topics.add(key.topic)
        log("no actor here handles %r (queue %r); message %s returned to the queue for a "
            "worker that does", key.topic, key.queue, key.id_)
        await self.broker.requeue(key, payload, params.with_delay(utcnow() + UNKNOWN_TOPIC_DELAY))

    async def _run(self, actor: Actor, message: MessageDependency) -> ActorResult:
        """Run the actor and store its result: both inside `repid_actor_run`, so a trace
        span around the run covers the result's write too."""
        result = await self._execute(actor, message)
        params = message.parameters
        if params.result is not None and not message.result_stored:
            await self._store_result(actor, params, result)
        return result

    async def _execute(self, actor: Actor, message: MessageDependency) -> ActorResult:
        started = utcnow()
        try:
            data = await self._call(actor, message)
        except Exception as exc:
            return ActorResult(None, False, exc, started, utcnow())
        return ActorResult(data, True, None, started, utcnow())

    async def _call(self, actor: Actor, message: MessageDependency) -> Any:
        payload = message.raw_payload
        if payload.startswith('{"' + ARGS_BUCKET_MARKER):
            payload = await self._args_from_bucket(payload)
        args, kwargs = actor.converter.convert_inputs(payload)
        if actor.injections:
            kwargs.update(await Resolver(message, self.process_pool).fill(actor.injections))
        timeout = message.parameters.execution_timeout.total_seconds()
        if actor.is_async:
            coro = actor.call(*args, **kwargs)
        elif actor.run_in_process:
            coro = asyncio.get_running_loop().run_in_executor(
                self.process_pool(), _call_with, actor.call, args, kwargs)
        else:
            coro = call_sync(_call_with, {"fn": actor.call, "args": args, "kwargs": kwargs}, None)
        try:
            return await _with_timeout(coro, timeout)
        except asyncio.TimeoutError:
            raise ActorTimeoutError(f"actor {actor.name!r} passed its timeout of "
                                    f"{timeout:g} s") from None

    async def _args_from_bucket(self, payload: str) -> str:
        args_id = json.loads(payload)[ARGS_BUCKET_MARKER]
        broker = self.connection.args_bucket_broker
        if broker is None:
            raise PayloadDecodeError(f"arguments are in args bucket {args_id!r}, but this "
                                     "worker's Connection has no args_bucket_broker")
        bucket = await broker.get_bucket(args_id)
        if bucket is None or isinstance(bucket, ResultBucket):
            raise PayloadDecodeError(f"args bucket {args_id!r} is missing (expired or "
                                     "deleted)")
        return bucket.data

    async def _store_result(self, actor: Actor, params: Parameters,
                            result: ActorResult) -> None:
        assert params.result is not None
        broker = self.connection.results_bucket_broker
        if broker is None:
            logger.warning("job asked to store its result but this worker's Connection has "
                           "no results_bucket_broker; result of %r dropped", actor.name)
            return
        data, success, error = None, result.success, result.exception
        if success:
            try:
                data = json.loads(actor.converter.convert_outputs(result.data))
            except (TypeError, ValueError) as exc:
                success, error = False, exc
                logger.error("result of actor %r cannot be encoded: %s", actor.name, exc)
        bucket = ResultBucket(data=data, success=success,
                              exception=None if error is None else describe(error),
                              started_when=result.started_when,
                              finished_when=result.finished_when, ttl=params.result.ttl)
        await broker.store_bucket(params.result.id_, bucket)

    async def _settle(self, actor: Actor, message: MessageDependency,
                      result: ActorResult) -> None:
        message.is_settled = True  # before awaiting, so a cancellation cannot settle twice
        key, params = message.key, message.parameters
        recurring = params.delay.is_recurring
        if result.success:
            if recurring:
                await self.broker.requeue(key, message.raw_payload,
                                          params.with_next_run(next_run(params.delay)))
            else:
                await self.broker.ack(key)
            return
        exc = result.exception
        assert exc is not None
        if isinstance(exc, PayloadDecodeError):
            logger.error("message %s for %r cannot be processed: %s; dead-lettered",
                         key.id_, actor.name, exc)
            await self.broker.nack(key)
            return
        retry_allowed = params.retries.left > 0 and self._may_retry(actor, key, params, exc)
        if retry_allowed:
            delay = compute_retry_delay(self.connection, actor, key, params, exc)
            logger.warning("actor %r failed on message %s (try %d of %d): %s; retrying in %s",
                           actor.name, key.id_, params.retries.already_tried + 1,
                           params.retries.max_amount + 1, describe(exc), delay)
            await self.broker.requeue(key, message.raw_payload, params.with_retry(delay))
        elif recurring:
            logger.error("actor %r failed on recurring message %s: %s; it runs again at its "
                         "next time", actor.name, key.id_, describe(exc), exc_info=exc)
            await self.broker.requeue(key, message.raw_payload,
                                      params.with_next_run(next_run(params.delay)))
        else:
            why = "no retries left" if params.retries.left <= 0 else "a plugin refused a retry"
            logger.error("actor %r failed on message %s (%s): %s; dead-lettered",
                         actor.name, key.id_, why, describe(exc), exc_info=exc)
            await self.broker.nack(key)

    def _may_retry(self, actor: Actor, key: RoutingKey, params: Parameters,
                   exc: BaseException) -> bool:
        answer = self.connection.middleware.call_first(
            "repid_should_retry", actor=actor, key=key, params=params, exception=exc)
        return answer is not False


async def _with_timeout(aw: Awaitable[Any], seconds: float) -> Any:
    """Await `aw`, raising TimeoutError after `seconds`.

    One timer per run that cancels the running task: lighter than asyncio.timeout on the
    per-message path, with the same effect.
    """
    task = asyncio.current_task()
    assert task is not None
    fired: list[bool] = []
    handle = asyncio.get_running_loop().call_later(seconds, _expire, task, fired)
    try:
        return await aw
    except asyncio.CancelledError:
        if not fired:
            raise
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        raise asyncio.TimeoutError from None
    finally:
        handle.cancel()


def _expire(task: asyncio.Task[Any], fired: list[bool]) -> None:
    fired.append(True)
    task.cancel()


def _call_with(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)
