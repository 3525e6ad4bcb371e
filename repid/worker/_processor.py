"""What happens to one message: run its actor, store the result, settle it.

The outcomes (see docs/outcomes.md):

- actor returns: ack (a recurring job is requeued for its next time); result stored.
- actor raises or times out with retries left: result stored, then requeued after the
  retry delay with one more try counted.
- no retries left: result stored with success=False, then dead-lettered (a recurring job
  goes on to its next time instead).
- actor returns a value its converter cannot encode, and the job stores its result: a
  failed run like a raise, the encoding error its exception (see `Processor._execute`).
- ttl passed before it ran: dead-lettered, actor not run.
- payload undecodable or arguments not fitting: dead-lettered with the reason logged.
- no actor for its topic: returned to the queue for a worker that has one, at most
  4 x `max_deliveries` times, then dead-lettered with the reason `no actor '<topic>'`
  (see `Processor._not_mine`).

One run has one outcome: the `ActorResult` the `repid_actor_run` hook gives the plugins is
decided (encoding included) before the settle, and the settle and the stored result follow
it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from repid.data import Parameters, ResultBucket, RoutingKey, Stash, utcnow
from repid.data.headers import NO_ACTOR_RETURNS_HEADER, RECOVERIES_HEADER
from repid.dependencies.resolver import Resolver, call_sync
from repid.errors import ActorTimeoutError, PayloadDecodeError, SettleError
from repid.message import EagerExit, MessageDependency, describe
from repid.middleware._chain import NO_ARGS, HookChain
from repid.retry_policy import compute_retry_delay
from repid.router import Actor, ActorResult
from repid.schedule import next_run
from repid.serializer import ARGS_BUCKET_MARKER
from repid.worker._deadlines import Deadlines

if TYPE_CHECKING:
    from repid.brokers.delivery import Delivery
    from repid.connection import Connection

logger = logging.getLogger("repid.worker")

#: how long a message whose topic no actor here handles waits before it is offered again
#: the first time; return *n* waits *n* times as long (1 s, 2 s, 3 s, ...), at most
#: `UNKNOWN_TOPIC_MAX_DELAY` (see `no_actor_delay`)
UNKNOWN_TOPIC_DELAY = timedelta(seconds=1)
UNKNOWN_TOPIC_MAX_DELAY = timedelta(minutes=1)
#: a message is returned for another worker at most this many times the broker's
#: `max_deliveries` (20 with the default 5) before it is dead-lettered (see
#: `no_actor_returns_allowed`)
NO_ACTOR_RETURNS_PER_DELIVERY = 4
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
        #: the actor runs' timeouts, with one timer for them all
        self.deadlines = Deadlines()
        self._warned_topics: set[str] = set()

    def close(self) -> None:
        """Drop the timeouts' timer (the worker stopped)."""
        self.deadlines.close()

    async def process(self, delivery: Delivery, deliveries: int | None = None) -> bool:
        """Handle one delivered message; returns False when it was not for this worker.

        Every message taken here is settled exactly once, through its `delivery`, whatever
        fails on the way (see `_recover`); a settle call that raises has left the message
        to the broker's redelivery, and the broker has freed its consumer's room for it.
        """
        key, params = delivery.key, delivery.params
        actor = self.actors.get(key.topic)
        if actor is None:
            await self._not_mine(delivery)
            return False
        if NO_ACTOR_RETURNS_HEADER in params.headers:
            params = _found_its_actor(params)
        if deliveries is None:  # the runner passes what it already asked the broker
            deliveries = self.broker.delivery_count(delivery)
        if deliveries > 1:
            limit = actor.max_deliveries or self.broker.max_deliveries
            if deliveries > limit:
                reason = (f"delivered {deliveries} times without being settled (limit "
                          f"{limit}): its worker died or stalled while running it")
                logger.error("message %s (%s) %s; dead-lettered", ids(key, params), key.topic,
                             reason)
                await delivery.nack(reason)
                return True
        if params.ttl is not None and params.is_overdue:
            logger.warning("message %s (%s) expired before it ran (ttl %s); dead-lettered",
                           ids(key, params), key.topic, params.ttl)
            await delivery.nack(f"expired before it ran (ttl {params.ttl})")
            return True
        message = MessageDependency(delivery, self.connection, actor, params)
        settled_by_actor = False
        # the result to store after the settle, in repid 1.x's order (else `_run` stores it)
        later: list[ResultBucket] | None = None if self._result_first else []
        try:
            chain = self.chains.actor_run
            if chain is None:
                result = await self._run(actor, message, later)
            else:
                result = await chain.around(self._actor_run_args(chain, actor, message),
                                            self._run, actor, message, later)
            settled_by_actor = delivery.settled_by is not None
            if not settled_by_actor:
                await self._settle(actor, message, result)
            elif not result.reporting_done:
                logger.error("actor %r raised after its eager response settled message %s: "
                             "%s", actor.name, key.id_, result.exception,
                             exc_info=result.exception)
            if later:
                await self._store(message.parameters, later[0])
        except asyncio.CancelledError:
            # shutdown past its grace time: back to the queue, no retry counted
            if delivery.settled_by is None:
                await delivery.reject()
            raise
        except Exception as exc:
            if delivery.settled_by is not None:
                raise  # the settle call itself failed: the broker delivers it again
            await self._recover(message, exc)
        if not settled_by_actor and message.has_submitted:
            try:
                await message.apply_submitted()
            except Exception:
                logger.exception("a callback of message %s (%s) raised after its settle; "
                                 "the callbacks after it did not run", key.id_, key.topic)
        return True

    def _actor_run_args(self, chain: HookChain, actor: Actor,
                        message: MessageDependency) -> Mapping[str, Any]:
        """The arguments of `repid_actor_run` (none when no wrapper names one)."""
        if not chain.takes_args:
            return NO_ARGS
        delivery = message.delivery
        return {"connection": self.connection, "actor": actor, "key": delivery.key,
                "payload": message.raw_payload, "params": message.parameters,
                "stash": delivery.stash}

    async def _recover(self, message: MessageDependency, exc: Exception) -> None:
        """Something failed after the message was taken and before its settle was sent
        (its result could not be stored, a plugin or the retry policy raised): send it
        back to run again after `RECOVER_DELAY`, with the failure counted in its
        `RECOVERIES_HEADER`; once that count reaches the delivery limit, dead-letter it
        with the reason. Raises `SettleError` (after settling) so the worker counts it."""
        key, params, delivery = message.key, message.parameters, message.delivery
        failures = _count(params.headers.get(RECOVERIES_HEADER)) + 1
        limit = (message.actor.max_deliveries if message.actor else 0) or \
            self.broker.max_deliveries
        what = describe(exc)
        if failures >= limit:
            reason = f"could not be settled {failures} times; last: {what}"
            logger.error("message %s (%s) %s; dead-lettered", key.id_, key.topic, reason,
                         exc_info=exc)
            await delivery.nack(reason)
        else:
            logger.error("message %s (%s) could not be settled (%s); it runs again in %s "
                         "(%d of %d)", key.id_, key.topic, what, RECOVER_DELAY, failures,
                         limit, exc_info=exc)
            headers = {**params.headers, RECOVERIES_HEADER: str(failures)}
            again = replace(params.with_delay(utcnow() + RECOVER_DELAY), headers=headers)
            await delivery.requeue(again, "recovery", message.raw_payload)
        raise SettleError(f"message {key.id_}: {what}") from exc

    async def _not_mine(self, delivery: Delivery) -> None:
        """No actor here handles the message's topic: return it to its queue for a worker
        that does (a queue may be shared by workers with different actors, e.g. during a
        deploy), counting the returns in its `NO_ACTOR_RETURNS_HEADER`, each after
        `no_actor_delay`. A message already returned `no_actor_returns_allowed` times is
        dead-lettered instead, with a reason that starts with `no actor '<topic>'`, logged
        as an error naming this worker's actors of that queue. The first return of a topic
        in a worker is a warning, the next ones debug.

        Whichever worker of the queue is free takes a returned message, one without its
        actor as likely as one with it (on Redis, the one that returned it is as quick to
        take it again as any), so the allowance is counted in returns, not time: with two
        workers sharing a queue, a job for one of them is dead-lettered only if the other
        took it all 20 times (one chance in a million); with its worker busy, the
        returns, 1 s, 2 s, 3 s, ... apart, give it about 3.5 minutes to free a slot."""
        key, params = delivery.key, delivery.params
        returns = _count(params.headers.get(NO_ACTOR_RETURNS_HEADER))
        limit = no_actor_returns_allowed(self.broker.max_deliveries)
        if returns >= limit:
            reason = (f"no actor '{key.topic}' in the workers that took it from queue "
                      f"'{key.queue}' (returned {returns} times)")
            known = sorted(name for name, actor in self.actors.items()
                           if actor.queue == key.queue)
            logger.error("message %s: %s; dead-lettered. This worker's actors of queue %r: "
                         "%s. A typo in the job's name, or no worker deployed with that "
                         "actor? Send it back with `repid dead requeue %s` once one is.",
                         key.id_, reason, key.queue, ", ".join(map(repr, known)) or "none",
                         key.queue)
            await delivery.nack(reason)
            return
        delay = no_actor_delay(returns + 1)
        log = logger.debug if key.topic in self._warned_topics else logger.warning
        self._warned_topics.add(key.topic)
        log("no actor here handles %r (queue %r); message %s returned to the queue for a "
            "worker that does, in %s (return %d of at most %d before it is dead-lettered)",
            key.topic, key.queue, key.id_, delay, returns + 1, limit)
        headers = {**params.headers, NO_ACTOR_RETURNS_HEADER: str(returns + 1)}
        again = replace(params.with_delay(utcnow() + delay), headers=headers)
        await delivery.requeue(again, "unknown_topic")

    async def _run(self, actor: Actor, message: MessageDependency,
                   later: list[ResultBucket] | None) -> ActorResult:
        """Run the actor and store its result: here, before the settle, when `later` is
        None (the broker's messages outlive this process), else into `later`, for
        `process` to store after the settle. Inside `repid_actor_run`, so a trace span
        around the run covers the result's write too."""
        started = utcnow()
        try:
            data = await self._call(actor, message)
        except EagerExit as done:  # the actor settled its message itself
            return ActorResult(None, done.success, done.exception, started, utcnow(),
                               reporting_done=True)
        except Exception as exc:
            result, bucket = self._failed(actor, message, exc, started)
        else:
            result, bucket = self._succeeded(actor, message, data, started)
        if bucket is not None:
            if later is None:
                await self._store(message.parameters, bucket)
            else:
                later.append(bucket)
        return result

    def _succeeded(self, actor: Actor, message: MessageDependency, data: Any,
                   started: datetime) -> tuple[ActorResult, ResultBucket | None]:
        """The outcome of a run that returned `data`, and the result to store (None when
        none is stored).

        The return value is encoded here, once, right after the actor returned, when it is
        to be stored: a value the actor's converter cannot encode makes the run a failure
        with the encoding error as its exception, so the plugins (metrics, traces), the
        settle (retry, dead letter) and the stored result all see the same failure. A
        return value that is not stored (no `store_result`, or `set_result` gave the
        result) is not encoded. `ActorResult.data` stays the value the actor returned."""
        if not self._stores_result(actor, message):
            return ActorResult(data, True, None, started, utcnow()), None
        try:
            encoded = json.loads(actor.converter.convert_outputs(data))
        except Exception as exc:
            logger.error("the result of actor %r on message %s cannot be encoded, so the "
                         "run failed: %s", actor.name, message.key.id_, describe(exc))
            return self._failed(actor, message, exc, started)
        finished = utcnow()
        bucket = ResultBucket(data=encoded, success=True, started_when=started,
                              finished_when=finished, ttl=_result_ttl(message.parameters))
        return ActorResult(data, True, None, started, finished), bucket

    def _failed(self, actor: Actor, message: MessageDependency, exc: Exception,
                started: datetime) -> tuple[ActorResult, ResultBucket | None]:
        """A failed run's outcome, and its failed result when one is stored."""
        finished = utcnow()
        bucket = None
        if self._stores_result(actor, message):
            bucket = ResultBucket(data=None, success=False, exception=describe(exc),
                                  started_when=started, finished_when=finished,
                                  ttl=_result_ttl(message.parameters))
        return ActorResult(None, False, exc, started, finished), bucket

    def _stores_result(self, actor: Actor, message: MessageDependency) -> bool:
        """Whether the worker stores this run's outcome as its result: the job asked for
        one, `set_result` / `set_exception` did not give it (that one is stored at the
        settle), and the Connection has a results bucket broker (else it says so)."""
        if message.parameters.result is None or message.has_result:
            return False
        if self.connection.results_bucket_broker is None:
            logger.warning("job asked to store its result but this worker's Connection has "
                           "no results_bucket_broker; result of %r dropped", actor.name)
            return False
        return True

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
        deadline = self.deadlines.start(timeout)
        try:
            return await coro
        except asyncio.CancelledError:
            if not self.deadlines.timed_out(deadline):
                raise  # a shutdown's cancel, not the timeout's
            raise ActorTimeoutError(f"actor {actor.name!r} passed its timeout of "
                                    f"{timeout:g} s") from None
        finally:
            self.deadlines.stop(deadline)

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

    async def _store(self, params: Parameters, bucket: ResultBucket) -> None:
        broker = self.connection.results_bucket_broker
        assert broker is not None and params.result is not None  # `_stores_result`
        await broker.store_bucket(params.result.id_, bucket)

    async def _settle(self, actor: Actor, message: MessageDependency,
                      result: ActorResult) -> None:
        """Decide the outcome, then send the one settle call it needs. Everything that may
        raise (retry policies, plugins, the next cron time) runs before the delivery's settle
        call claims it, so a failure there is recovered (`_recover`) instead of leaving the message
        held."""
        key, params, delivery = message.key, message.parameters, message.delivery
        recurring = params.delay.is_recurring
        payload = message.raw_payload
        if result.success:
            if recurring:
                again = params.with_next_run(next_run(params.delay))
                await delivery.requeue(again, "schedule", payload)
            else:
                await delivery.ack()
            return
        exc = result.exception
        assert exc is not None
        if isinstance(exc, PayloadDecodeError):
            logger.error("message %s for %r cannot be processed: %s; dead-lettered",
                         ids(key, params), actor.name, exc)
            await delivery.nack(f"cannot be processed: {exc}")
            return
        retry_allowed = (params.retries.left > 0
                         and self._may_retry(actor, key, params, exc, delivery.stash))
        if retry_allowed:
            delay = compute_retry_delay(self.connection, actor, key, params, exc,
                                        delivery.stash)
            logger.warning("actor %r failed on message %s (try %d of %d): %s; retrying in %s",
                           actor.name, ids(key, params), params.retries.already_tried + 1,
                           params.retries.max_amount + 1, describe(exc), delay)
            await delivery.requeue(params.with_retry(delay), "retry", payload)
        elif recurring:
            logger.error("actor %r failed on recurring message %s: %s; it runs again at its "
                         "next time", actor.name, ids(key, params), describe(exc),
                         exc_info=exc)
            again = params.with_next_run(next_run(params.delay))
            await delivery.requeue(again, "schedule", payload)
        else:
            why = "no retries left" if params.retries.left <= 0 else "a plugin refused a retry"
            logger.error("actor %r failed on message %s (%s): %s; dead-lettered",
                         actor.name, ids(key, params), why, describe(exc), exc_info=exc)
            await delivery.nack(f"{why}; last error: {describe(exc)}")

    def _may_retry(self, actor: Actor, key: RoutingKey, params: Parameters,
                   exc: BaseException, stash: Stash) -> bool:
        answer = self.connection.middleware.call_first(
            "repid_should_retry", actor=actor, key=key, params=params, exception=exc,
            stash=stash)
        return answer is not False


def _call_with(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def no_actor_returns_allowed(max_deliveries: int) -> int:
    """How many times a message for a topic no worker that took it had an actor for is
    returned to its queue before it is dead-lettered: `NO_ACTOR_RETURNS_PER_DELIVERY`
    times the broker's `max_deliveries`."""
    return NO_ACTOR_RETURNS_PER_DELIVERY * max_deliveries


def no_actor_delay(returns: int) -> timedelta:
    """How long a message waits after its return number `returns` (from 1) for another
    worker: `returns` times `UNKNOWN_TOPIC_DELAY`, at most `UNKNOWN_TOPIC_MAX_DELAY`."""
    return min(UNKNOWN_TOPIC_DELAY * max(returns, 1), UNKNOWN_TOPIC_MAX_DELAY)


def _result_ttl(params: Parameters) -> timedelta | None:
    return None if params.result is None else params.result.ttl


def _found_its_actor(params: Parameters) -> Parameters:
    """`params` without `NO_ACTOR_RETURNS_HEADER`: a worker with its actor took it, so the
    returns before do not count against a later retry's trip through other workers."""
    headers = {k: v for k, v in params.headers.items() if k != NO_ACTOR_RETURNS_HEADER}
    return replace(params, headers=headers)


def _count(value: str | None) -> int:
    """A counter kept in a header: 0 when absent or not a number."""
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def ids(key: RoutingKey, params: Parameters) -> str:
    """How log lines name a message: its id, and the result id a job's result is stored
    under (what `repid jobs show` takes), when it has one: `a1b2 (result c3d4)`."""
    if params.result is None:
        return key.id_
    return f"{key.id_} (result {params.result.id_})"
