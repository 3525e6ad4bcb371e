"""The whole plugin contract: every hook repid calls, when it fires, and what it may return.

Plugins are plain objects whose methods are marked with `repid.hookimpl`. Each hook is
called with keyword arguments; a plugin names only the arguments it needs.

**Around hooks** wrap one call: a broker call, a consumer's take, or an actor run.
Implement them as pluggy wrappers, generators that yield exactly once::

    class Timer:
        @hookimpl(wrapper=True)
        def repid_enqueue(self, queue, params):
            start = time.perf_counter()
            result = yield              # the broker call happens here
            record(queue, time.perf_counter() - start)
            return result

The core awaits the real call at the `yield`, so code before it runs before the call, the
wrapper's locals survive across it, and an OpenTelemetry context attached before the
`yield` is current during the call (nested calls, such as an actor enqueueing a child
job, see it). If the call raises, the exception is thrown in at the `yield`; re-raise it,
or return a value to replace it. If a wrapper raises anything else, the error is logged
and the call goes on as if that wrapper were absent. The same holds whatever the number
of plugins.

**Decision hooks** answer a question; the first answer that is not None decides (the
plugin registered last is asked first). An answer of a type the hook does not take
(`DECISION_ANSWERS`) counts as no opinion, and is logged. **Lifecycle hooks** are
called on every plugin; **contribution hooks** gather every plugin's answer. The kind of
every hook, how a plugin writes it (registering refuses a wrapper where the kind wants
none and the reverse, and a `repid_*` method that is not a hook) and what happens when a
plugin raises are in the table below (`KINDS` and `HOOK_KINDS`, the one place they are
stated).

**Per-delivery state.** Every hook about one delivery of a message (`repid_actor_run` and
the settles) gets the delivery's `stash` as its `stash` argument (the result of
`repid_consume`'s yield is the `Delivery` itself: `delivery.stash`; `key.stash` reads the
same stash, kept for this release): a plugin keeps there what it learned about that
delivery, under its own `repid.StashKey`, instead of in a map keyed by message id.

The order in which hooks fire for one message a worker handles::

    repid_consume                 the consumer takes the message
    repid_actor_run               decode the arguments, run the actor, store its result
    |   repid_get_bucket          the arguments, when they are in the args bucket
    |   repid_enqueue ...         jobs the actor enqueues (child jobs)
    |   repid_store_bucket        the result, when the job asked for one
    repid_should_retry            only after a failed run with retries left
    repid_retry_delay             only when that retry goes ahead
    one settle:
      repid_ack                   the run succeeded
      repid_requeue               a retry, a recurring job's next run, a recovery
      repid_nack                  dead-lettered: no retries left, expired, poison, ...
      repid_reject                returned unchanged: shutdown, a suspect's neighbour

A message that has expired, or was delivered too often, goes from `repid_consume`
straight to `repid_nack`; one for a topic no actor here handles goes straight to
`repid_requeue`. A poison message (one that cannot be decoded) fires only
`repid_nack`, before any worker sees it. In the pytest plugin's in-memory app the
result's `repid_store_bucket` comes after the settle, outside `repid_actor_run`, as in
repid 1.x. An eager response in the actor (`await msg.ack()`) fires its settle hook
inside `repid_actor_run`, then the `repid_store_bucket` of a result given to
`msg.set_result`, and the worker settles nothing after it.

For one enqueue::

    repid_store_bucket            the arguments, when they go to the args bucket
    repid_enqueue                 the message is sent, until the broker confirmed it

For one worker::

    repid_queue_declare (each queue) -> repid_http_routes (when it serves HTTP)
    -> repid_worker_start -> ... messages ... -> repid_worker_stop
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from repid.brokers.base import BucketBroker, MessageBroker
    from repid.brokers.delivery import Delivery
    from repid.connection import Connection
    from repid.data import BucketT, MessageCategory, Parameters, RoutingKey, Stash
    from repid.router import Actor, ActorResult
    from repid.worker import Worker

hookspec = pluggy.HookspecMarker("repid")

#: The calls plugins run around: each is the around hook `repid_<call>`, and the slot of
#: that name in `repid.middleware._manager.Chains`. This tuple is the one list of them.
AROUND_CALLS = (
    "consume",
    "enqueue",
    "requeue",
    "ack",
    "nack",
    "reject",
    "queue_declare",
    "queue_flush",
    "queue_delete",
    "get_bucket",
    "store_bucket",
    "delete_bucket",
    "actor_run",
)

AROUND = "around"
DECISION = "decision"
LIFECYCLE = "lifecycle"
CONTRIBUTION = "contribution"


@dataclass(frozen=True)
class Kind:
    """One kind of hook: how a plugin writes it and what the core does with it."""

    #: `around`, `decision`, `lifecycle` or `contribution`
    name: str
    #: True: `@hookimpl(wrapper=True)` is required; False: a wrapper is refused
    wrapper: bool
    #: what the marked function is
    shape: str
    #: how the core calls the implementations and uses their answers
    called: str
    #: what happens when an implementation raises
    raises: str

    @property
    def marker(self) -> str:
        """How an implementation of this kind is marked."""
        return "@repid.hookimpl(wrapper=True)" if self.wrapper else "@repid.hookimpl"


#: The kinds of hook, in the order the docs list them.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind(AROUND, wrapper=True,
         shape="a generator that yields exactly once",
         called="wraps one call: code before the `yield` runs before it, the `yield` gives "
                "its result (or raises its error there), the value returned is the call's "
                "result",
         raises="before its `yield`: logged, and the call goes on without that wrapper; "
                "after it: logged, and the result stands"),
    Kind(DECISION, wrapper=False,
         shape="a plain function returning the answer, or None for no opinion",
         called="plugins are asked in call order (the last registered first, `trylast` "
                "ones last); the first answer that is not None decides. An answer of a "
                "type the hook does not take (`DECISION_ANSWERS`) is logged with the "
                "plugin's name, what it returned and what the hook takes, and counts as "
                "no opinion",
         raises="logged with the plugin's name, and the next plugin is asked; when none "
                "answers, the default decision applies"),
    Kind(LIFECYCLE, wrapper=False,
         shape="a plain function; it may return an awaitable, which is awaited",
         called="called on every plugin, in call order",
         raises="logged with the plugin's name (whether it raised or the awaitable it "
                "returned did), and the other plugins are still called"),
    Kind(CONTRIBUTION, wrapper=False,
         shape="a plain function returning its contribution, or None",
         called="called on every plugin; every answer that is not None is used",
         raises="logged with the plugin's name; that plugin contributes nothing"),
)}

#: The whole contract: every hook of this module, and its kind.
HOOK_KINDS: dict[str, str] = {
    **{f"repid_{call}": AROUND for call in AROUND_CALLS},
    "repid_should_retry": DECISION,
    "repid_retry_delay": DECISION,
    "repid_worker_start": LIFECYCLE,
    "repid_worker_stop": LIFECYCLE,
    "repid_http_routes": CONTRIBUTION,
}


@dataclass(frozen=True)
class Answer:
    """The answers a decision hook takes besides None (no opinion)."""

    #: the types taken
    types: tuple[type, ...]
    #: subclasses of `types` that are still refused (bool is an int: True is no delay)
    refused: tuple[type, ...]
    #: what the hook takes, for log lines and the docs
    text: str

    def accepts(self, value: object) -> bool:
        """Whether `value` is an answer of this hook."""
        return isinstance(value, self.types) and not isinstance(value, self.refused)


#: The answers each decision hook takes: the one place they are stated. The middleware
#: (`Middleware.call_first`) logs any other answer, with the plugin's name, and treats
#: it as no opinion, so the next plugin, or the default, decides.
DECISION_ANSWERS: dict[str, Answer] = {
    "repid_should_retry": Answer((bool,), (), "True or False"),
    "repid_retry_delay": Answer((timedelta, int, float), (bool,),
                                "a timedelta or a number of seconds (not a bool)"),
}


def hooks_of(kind: str) -> tuple[str, ...]:
    """The hooks of one kind, in the order of `HOOK_KINDS`."""
    return tuple(name for name, of in HOOK_KINDS.items() if of == kind)


#: The around hooks (`repid_<call>` for each of `AROUND_CALLS`).
AROUND_HOOKS = hooks_of(AROUND)
#: The decision hooks (`firstresult`).
DECISION_HOOKS = hooks_of(DECISION)
#: The lifecycle hooks.
LIFECYCLE_HOOKS = hooks_of(LIFECYCLE)
#: The contribution hooks.
CONTRIBUTION_HOOKS = hooks_of(CONTRIBUTION)
#: Every hook name of the contract.
HOOKS = tuple(HOOK_KINDS)


# --- message broker calls -------------------------------------------------------------


@hookspec
def repid_consume(  # type: ignore[empty-body]
    connection: Connection, broker: MessageBroker, queue: str, category: MessageCategory
) -> Delivery:
    """Around taking one message from a queue (a consumer's next message).

    It fires once per message handed to the worker, so the time it measures includes
    waiting for one to arrive. The result is the message taken, a `repid.Delivery`
    (`delivery.key`, `.payload`, `.params`, `.stash`; it also unpacks as repid 1.x's
    `(key, payload, params)`).

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker (`broker.system`: `in_memory`, `redis`, `rabbitmq`).
    :param queue: the queue's name.
    :param category: `MessageCategory.NORMAL` for a worker; `DELAYED` or `DEAD` when a
        queue's delayed or dead messages are read (`Queue.get_messages`).
    """


@hookspec
def repid_enqueue(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey, payload: str,
    params: Parameters,
) -> None:
    """Around sending a new message, until the broker confirmed it.

    Fires for every enqueue, including jobs enqueued from inside an actor. The result is
    None; an exception means the broker did not accept the message.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker.
    :param queue: the queue the message goes to.
    :param key: the message's `RoutingKey` (`id_`, `topic` — the actor's name —, `queue`,
        `priority`).
    :param payload: the encoded arguments (JSON), or a reference to their args bucket.
    :param params: the message's `Parameters`. Add to `params.headers` (str to str)
        before yielding: the headers reach the consumer unchanged (trace context, tenant).
    """


@hookspec
def repid_requeue(
    connection: Connection,
    broker: MessageBroker,
    queue: str,
    key: RoutingKey,
    payload: str,
    params: Parameters,
    reason: str | None,
    stash: Stash,
) -> None:
    """Around putting a taken message back with new parameters (a settle). It becomes
    ready at `params.delay.next_execution_time` (None: at once).

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker.
    :param queue: the message's queue.
    :param key: the message's `RoutingKey`.
    :param payload: the encoded arguments, unchanged.
    :param params: the new `Parameters`; `params.headers` may be changed before yielding.
        For a retry, `params.retries.already_tried` already counts the failed run.
    :param reason: why (`repid.brokers.base.REQUEUE_REASONS`): `retry` (a failed run with
        retries left, or an eager `msg.retry()`), `schedule` (a recurring job's next run),
        `reschedule` (an eager `msg.reschedule()`, e.g. a dead letter sent back),
        `recovery` (its result could not be stored, or a plugin or retry policy raised),
        `unknown_topic` (no actor of this worker handles it); None when the caller gave
        none.
    :param stash: the plugins' state for this delivery (`delivery.stash`; `key.stash` reads it too).
    """


@hookspec
def repid_ack(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey, stash: Stash
) -> None:
    """Around acknowledging a message (a settle): it is done and removed from the broker.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker.
    :param queue: the queue the message is removed from.
    :param key: the message's `RoutingKey`.
    :param stash: the plugins' state for this delivery (`delivery.stash`; `key.stash` reads it too).
    """


@hookspec
def repid_nack(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey,
    reason: str | None, stash: Stash,
) -> None:
    """Around moving a message to its queue's dead-letter part (a settle).

    Every dead-lettering repid makes fires it, the broker's own included. (The one
    dead-lettering repid does not make: on a RabbitMQ quorum queue, a message whose worker
    died while holding its last allowed delivery is dead-lettered by RabbitMQ itself, at
    `x-delivery-limit`, where no hook runs; its dead reason then reads `delivery_limit`.)
    A poison message (stored in a form that cannot be decoded) is dead-lettered by the
    consumer that took it, or by a read of the queue's delayed part, before any worker
    sees it. Its `key` then holds
    only what is known without decoding: `id_` is the id the broker stores it under
    (bytes that are not UTF-8 replaced; RabbitMQ: its `correlation_id`, `?` when it has
    none), `queue` the queue it was taken from, `topic` is `""` (unknown) and `priority`
    the default; its `stash` is new (no other hook saw this delivery). No
    `repid_consume` or `repid_actor_run` came before it, and the worker's count of
    processed messages does not include it. Its `reason` says what could not be decoded.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker.
    :param queue: the message's queue.
    :param key: the message's `RoutingKey` (for a poison message: see above).
    :param reason: why (no retries left, expired, undecodable, delivered too often, ...),
        also kept in the dead message's `x-repid-dead-reason` header (RabbitMQ: unless
        the copy carrying it could not be stored); None when the caller gave none (an
        eager `msg.nack()`).
    :param stash: the plugins' state for this delivery (`delivery.stash`; `key.stash` reads it too).
    """


@hookspec
def repid_reject(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey, stash: Stash
) -> None:
    """Around returning a message to its queue unchanged, no retry counted (a settle):
    a worker stopping past its grace time, a message taken while a suspect runs alone,
    an eager `msg.reject()`.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker.
    :param queue: the queue the message goes back to, ready at once.
    :param key: the message's `RoutingKey`, the same on its next delivery.
    :param stash: the plugins' state for this delivery (`delivery.stash`; `key.stash` reads it too).
    """


@hookspec
def repid_queue_declare(connection: Connection, broker: MessageBroker, queue: str) -> None:
    """Around creating a queue with its delayed and dead-letter parts. Idempotent: a
    worker declares its queues each time it starts, and after a broker lost them.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker that creates the queue.
    :param queue: the name of the queue to create; its other parts are named after it.
    """


@hookspec
def repid_queue_flush(connection: Connection, broker: MessageBroker, queue: str) -> None:
    """Around removing every message of a queue: ready, delayed, dead and in flight.
    The queue stays declared.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker holding the messages.
    :param queue: the queue to empty.
    """


@hookspec
def repid_queue_delete(connection: Connection, broker: MessageBroker, queue: str) -> None:
    """Around deleting a queue and everything in it.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the message broker.
    :param queue: which queue goes, with its delayed, dead and in-flight messages.
    """


# --- bucket broker calls ---------------------------------------------------------------


@hookspec
def repid_get_bucket(
    connection: Connection, broker: BucketBroker, id_: str
) -> BucketT | None:
    """Around reading a bucket: a job's arguments, or a result. The result is the bucket,
    or None when there is none (never stored, deleted, or expired).

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the bucket broker (args or results).
    :param id_: the bucket's id (`job.args_id`, `job.result_id`).
    """


@hookspec
def repid_store_bucket(
    connection: Connection, broker: BucketBroker, id_: str, payload: BucketT
) -> None:
    """Around storing a bucket; it expires after `payload.ttl` when that is set.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the bucket broker (args or results).
    :param id_: the bucket's id.
    :param payload: the `ArgsBucket` or `ResultBucket` stored.
    """


@hookspec
def repid_delete_bucket(
    connection: Connection, broker: BucketBroker, id_: str
) -> None:
    """Around deleting a bucket.

    :param connection: the `Connection` whose middleware runs the hook.
    :param broker: the bucket broker.
    :param id_: the bucket's id.
    """


# --- actor runs ------------------------------------------------------------------------


@hookspec
def repid_actor_run(  # type: ignore[empty-body]
    connection: Connection,
    actor: Actor,
    key: RoutingKey,
    payload: str,
    params: Parameters,
    stash: Stash,
) -> ActorResult:
    """Around one run of an actor on one message: argument decoding, the run, and storing
    its result (so a span around the run covers the result's write).

    The result is an `ActorResult` (`success`, `data`, `exception`, `started_when`,
    `finished_when`); a failing actor does not raise through this hook, its exception is
    in `result.exception`. An error that does come through (the result could not be
    stored) sends the message back to run again.

    :param connection: the worker's `Connection`.
    :param actor: the `Actor` run (`name`, `queue`).
    :param key: the message's `RoutingKey`.
    :param payload: the encoded arguments as taken.
    :param params: the message's `Parameters`; this is attempt
        `params.retries.already_tried + 1`.
    :param stash: the plugins' state for this delivery (`delivery.stash`; `key.stash`
        reads it too): what a wrapper here keeps for the settle hooks that follow.
    """


# --- decisions -------------------------------------------------------------------------


@hookspec(firstresult=True)
def repid_should_retry(
    connection: Connection,
    actor: Actor,
    key: RoutingKey,
    params: Parameters,
    exception: BaseException,
    stash: Stash,
) -> bool | None:
    """Whether a failed run may be retried; asked only when the job has retries left.

    Return False to send the message straight to the dead-letter queue, True to allow the
    retry, None for no opinion (the default is to retry).

    :param connection: the worker's `Connection`.
    :param actor: the `Actor` whose run failed.
    :param key: the message's `RoutingKey`.
    :param params: the message's `Parameters` (of the failed run).
    :param exception: what the run raised (`repid.ActorTimeoutError` for a timeout).
    :param stash: the plugins' state for this delivery, as the around hooks of the same
        run left it (e.g. what a wrapper of `repid_actor_run` recorded).
    """


@hookspec(firstresult=True)
def repid_retry_delay(
    connection: Connection,
    actor: Actor,
    key: RoutingKey,
    params: Parameters,
    exception: BaseException | None,
    stash: Stash,
) -> timedelta | float | None:
    """How long to wait before the next attempt, as a timedelta or seconds.

    Only asked when the actor has no `retry_policy=` of its own (that one wins). The
    default policy is a plugin marked `trylast`, so it is asked last and any plugin
    returning a value overrides it.

    :param connection: the worker's `Connection`.
    :param actor: the `Actor` whose run failed.
    :param key: the message's `RoutingKey`.
    :param params: the `Parameters` of the failed run; this is retry number
        `params.retries.already_tried + 1`.
    :param exception: what the run raised; None for an eager `msg.retry()`.
    :param stash: the delivery's stash, which a plugin may read to choose the delay.
    """


# --- lifecycle -------------------------------------------------------------------------


@hookspec
def repid_worker_start(worker: Worker) -> Awaitable[None] | None:
    """After a worker connected and declared its queues, before it takes a message.
    May return an awaitable, which is awaited.

    :param worker: the `Worker` starting.
    """


@hookspec
def repid_worker_stop(worker: Worker) -> Awaitable[None] | None:
    """After a worker stopped taking messages and settled the ones it held, before it
    returns. May return an awaitable, which is awaited.

    :param worker: the `Worker` stopping.
    """


@hookspec
def repid_http_routes(
    worker: Worker,
) -> Mapping[str, Callable[[], tuple[str, bytes]]] | None:
    """Extra paths for the worker's health-check HTTP server.

    Return a mapping of path to a callable giving `(content_type, body)` (answered with
    200) or `(status, content_type, body)`; for example the metrics plugin serves
    `/metrics` this way.

    :param worker: the `Worker` whose server it is.
    """


def hook_names() -> list[str]:
    """Every hook name of the contract (`HOOKS`)."""
    return list(HOOKS)
