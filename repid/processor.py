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
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from repid.data import MessageCategory, Parameters, ResultBucket, RoutingKey, utcnow
from repid.data.headers import RECOVERIES_HEADER
from repid.dependencies.resolver import Resolver, call_sync
from repid.errors import ActorTimeoutError, PayloadDecodeError, SettleError
from repid.message import EagerExit, MessageDependency, describe
from repid.middleware.chain import NO_ARGS
from repid.retry_policy import compute_retry_delay
from repid.router import Actor, ActorResult
from repid.schedule import next_run
from repid.serializer import ARGS_BUCKET_MARKER

if TYPE_CHECKING:
    from repid.connection import Connection

logger = logging.getLogger("repid.worker")

#: how long a message whose topic no actor here handles waits before it is offered again
UNKNOWN_TOPIC_DELAY = timedelta(seconds=1)
#: how long a message waits before it runs again after a failure between its run and its
#: settle (see `Processor._recover`)
RECOVER_DELAY = timedelta(seconds=2)


class Processor:
    """Runs messages through actors for one connection."""

    def __init__(self, connection: Connection, actors: dict[str, Actor],
                 process_pool: Callable[[], Executor], *,
                 result_before_settle: bool = True) -> None:
        self.connection = connection
        self.broker = connection.message_broker
        #: what runs around actor runs (the connection's middleware)
        self.chains = connection.middleware.chains
        self.actors = actors
        #: store a run's result before its settle, so that a worker dying between the two
        #: runs the job again instead of losing its result. False keeps repid 1.x's order
        #: (settle, then result): the pytest plugin's in-memory app, whose event log 1.x
        #: tests assert, where a dying process takes its messages with it anyway.
        self._result_first = result_before_settle
        self.process_pool = process_pool
        self._warned_topics: set[str] = set()

    async def process(self, key: RoutingKey, payload: str, params: Parameters,
                      deliveries: int | None = None) -> bool:
        """Handle one message; returns False when it was not for this worker.

        Every message taken here gets exactly one settle call, whatever fails on the way
        (see `_recover`); a settle call that raises has left the message to the broker's
        redelivery, and the broker has freed its consumer's room for it.
        """
        actor = self.actors.get(key.topic)
        if actor is None:
            await self._not_mine(key, payload, params)
            return False
        broker = self.broker
        if deliveries is None:  # the runner passes what it already asked the broker
            deliveries = broker.delivery_count(key)
        if deliveries > 1:
            limit = actor.max_deliveries or broker.max_deliveries
            if deliveries > limit:
                reason = (f"delivered {deliveries} times without being settled (limit "
                          f"{limit}): its worker died or stalled while running it")
                logger.error("message %s (%s) %s; dead-lettered", key.id_, key.topic, reason)
                await broker.nack(key, reason)
                return True
        if params.ttl is not None and params.is_overdue:
            logger.warning("message %s (%s) expired before it ran (ttl %s); dead-lettered",
                           key.id_, key.topic, params.ttl)
            await broker.nack(key, f"expired before it ran (ttl {params.ttl})")
            return True
        message = MessageDependency(key, payload, params, MessageCategory.NORMAL,
                                    self.connection, actor)
        settled_by_actor = False
        try:
            result = await self._run_hooked(actor, message)
            settled_by_actor = message.is_settled
            if not settled_by_actor:
                await self._settle(actor, message, result)
            elif not result.reporting_done:
                logger.error("actor %r raised after its eager response settled message %s: "
                             "%s", actor.name, key.id_, result.exception,
                             exc_info=result.exception)
            if not self._result_first:
                await self._store_if_wanted(actor, message, result)
        except asyncio.CancelledError:
            # shutdown past its grace time: back to the queue, no retry counted
            if not message.is_settled:
                message.is_settled = True
                await broker.reject(key)
            raise
        except Exception as exc:
            if message.is_settled:
                raise  # the settle call itself failed: the broker delivers it again
            await self._recover(message, exc)
        if not settled_by_actor and message.has_submitted:
            try:
                await message.apply_submitted()
            except Exception:
                logger.exception("a callback of message %s (%s) raised after its settle; "
                                 "the callbacks after it did not run", key.id_, key.topic)
        return True

    def _run_hooked(self, actor: Actor,
                    message: MessageDependency) -> Coroutine[Any, Any, ActorResult]:
        """`_run`, inside the `repid_actor_run` wrappers when a plugin has any."""
        chain = self.chains.actor_run
        if chain is None:
            return self._run(actor, message)
        key = message.key
        hook_args = NO_ARGS if not chain.takes_args else {
            "connection": self.connection, "actor": actor, "key": key,
            "payload": message.raw_payload, "params": message.parameters, "stash": key.stash}
        return chain.around(hook_args, self._run, actor, message)

    async def _recover(self, message: MessageDependency, exc: Exception) -> None:
        """Something failed after the message was taken and before its settle was sent
        (its result could not be stored, a plugin or the retry policy raised): send it
        back to run again after `RECOVER_DELAY`, with the failure counted in its
        `RECOVERIES_HEADER`; once that count reaches the delivery limit, dead-letter it
        with the reason. Raises `SettleError` (after settling) so the worker counts it."""
        message.is_settled = True
        key, params = message.key, message.parameters
        failures = _count(params.headers.get(RECOVERIES_HEADER)) + 1
        limit = (message.actor.max_deliveries if message.actor else 0) or \
            self.broker.max_deliveries
        what = describe(exc)
        if failures >= limit:
            reason = f"could not be settled {failures} times; last: {what}"
            logger.error("message %s (%s) %s; dead-lettered", key.id_, key.topic, reason,
                         exc_info=exc)
            await self.broker.nack(key, reason)
        else:
            logger.error("message %s (%s) could not be settled (%s); it runs again in %s "
                         "(%d of %d)", key.id_, key.topic, what, RECOVER_DELAY, failures,
                         limit, exc_info=exc)
            headers = {**params.headers, RECOVERIES_HEADER: str(failures)}
            again = replace(params.with_delay(utcnow() + RECOVER_DELAY), headers=headers)
            await self.broker.requeue(key, message.raw_payload, again, "recovery")
        raise SettleError(f"message {key.id_}: {what}") from exc

    async def _not_mine(self, key: RoutingKey, payload: str, params: Parameters) -> None:
        log = logger.debug if key.topic in self._warned_topics else logger.warning
        self._warned_topics.add(key.topic)
        log("no actor here handles %r (queue %r); message %s returned to the queue for a "
            "worker that does", key.topic, key.queue, key.id_)
        await self.broker.requeue(key, payload, params.with_delay(utcnow() + UNKNOWN_TOPIC_DELAY),
                                  "unknown_topic")

    async def _run(self, actor: Actor, message: MessageDependency) -> ActorResult:
        """Run the actor and, where the broker's messages outlive this process, store its
        result before the settle: both inside `repid_actor_run`, so a trace span around
        the run covers the result's write too."""
        result = await self._execute(actor, message)
        if self._result_first:
            await self._store_if_wanted(actor, message, result)
        return result

    async def _execute(self, actor: Actor, message: MessageDependency) -> ActorResult:
        started = utcnow()
        try:
            data = await self._call(actor, message)
        except EagerExit as done:  # the actor settled its message itself
            return ActorResult(None, done.success, done.exception, started, utcnow(),
                               reporting_done=True)
        except Exception as exc:
            return ActorResult(None, False, exc, started, utcnow())
        return ActorResult(data, True, None, started, utcnow())

    async def _store_if_wanted(self, actor: Actor, message: MessageDependency,
                               result: ActorResult) -> None:
        """Store the run's outcome as its result, unless the job wants none, an eager
        response ended the run (it stored what `set_result` gave), or `set_result` /
        `set_exception` gave the result to store."""
        params = message.parameters
        if params.result is not None and not result.reporting_done and \
                not message.has_result:
            await self._store_result(actor, params, result)

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
        if bucket is None:
            raise PayloadDecodeError(f"args bucket {args_id!r} is missing (expired or "
                                     "deleted)")
        if isinstance(bucket, ResultBucket):
            # job chaining, as in repid 1.x: another job's result is this one's arguments
            if not bucket.success:
                raise PayloadDecodeError(f"the arguments are the result {args_id!r}, but "
                                         f"that job failed ({bucket.exception})")
            return json.dumps(bucket.data)
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
        """Decide the outcome, then send the one settle call it needs. Everything that may
        raise (retry policies, plugins, the next cron time) runs before `is_settled` is
        set, so a failure there is recovered (`_recover`) instead of leaving the message
        held."""
        key, params, broker = message.key, message.parameters, self.broker
        recurring = params.delay.is_recurring
        if result.success:
            if recurring:
                again = params.with_next_run(next_run(params.delay))
                message.is_settled = True
                await broker.requeue(key, message.raw_payload, again, "schedule")
            else:
                message.is_settled = True
                await broker.ack(key)
            return
        exc = result.exception
        assert exc is not None
        if isinstance(exc, PayloadDecodeError):
            logger.error("message %s for %r cannot be processed: %s; dead-lettered",
                         key.id_, actor.name, exc)
            message.is_settled = True
            await broker.nack(key, f"cannot be processed: {exc}")
            return
        retry_allowed = params.retries.left > 0 and self._may_retry(actor, key, params, exc)
        if retry_allowed:
            delay = compute_retry_delay(self.connection, actor, key, params, exc)
            logger.warning("actor %r failed on message %s (try %d of %d): %s; retrying in %s",
                           actor.name, key.id_, params.retries.already_tried + 1,
                           params.retries.max_amount + 1, describe(exc), delay)
            again = params.with_retry(delay)
            message.is_settled = True
            await broker.requeue(key, message.raw_payload, again, "retry")
        elif recurring:
            logger.error("actor %r failed on recurring message %s: %s; it runs again at its "
                         "next time", actor.name, key.id_, describe(exc), exc_info=exc)
            again = params.with_next_run(next_run(params.delay))
            message.is_settled = True
            await broker.requeue(key, message.raw_payload, again, "schedule")
        else:
            why = "no retries left" if params.retries.left <= 0 else "a plugin refused a retry"
            logger.error("actor %r failed on message %s (%s): %s; dead-lettered",
                         actor.name, key.id_, why, describe(exc), exc_info=exc)
            message.is_settled = True
            await broker.nack(key, f"{why}; last error: {describe(exc)}")

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


def _count(value: str | None) -> int:
    """A counter kept in a header: 0 when absent or not a number."""
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
