"""The whole plugin contract: every hook repid calls, when it fires, and what it may return.

Plugins are plain objects whose methods are marked with `repid.hookimpl`. Each hook is
called with keyword arguments; a plugin names only the arguments it needs.

**Around hooks** wrap one broker call (or one actor run). Implement them as pluggy
wrappers, generators that yield exactly once::

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
job, see it). If the call raises, the exception is thrown in at the `yield`; re-raise it
(or return a value to replace it). If a wrapper raises anything else, the error is logged
and the call goes on as if that wrapper were absent.

Arguments common to the around hooks:

- `connection`: the `repid.Connection` whose middleware runs the hook.
- `broker`: the broker making the call (`broker.system` names it: `in_memory`, `redis`,
  `rabbitmq`).
- `queue`: the queue name the call is about.
- `key`: the message's `RoutingKey` (`id_`, `topic`, `queue`, `priority`).
- `payload`: the encoded arguments, a string.
- `params`: the message's `Parameters`; `params.headers` (str to str) may be changed by
  `repid_enqueue` and `repid_requeue` wrappers before they yield, and reaches the
  consumer unchanged.

**Decision hooks** are `firstresult`: the first plugin that returns something other than
None decides. **Lifecycle hooks** may return an awaitable, which the worker awaits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from repid.brokers.base import BucketBroker, MessageBroker
    from repid.connection import Connection
    from repid.data import BucketT, MessageCategory, Parameters, RoutingKey
    from repid.router import Actor, ActorResult
    from repid.worker import Worker

hookspec = pluggy.HookspecMarker("repid")

#: Names of the hooks that wrap a broker call or an actor run, as the core drives them.
AROUND_HOOKS = (
    "repid_consume",
    "repid_enqueue",
    "repid_requeue",
    "repid_ack",
    "repid_nack",
    "repid_reject",
    "repid_queue_declare",
    "repid_queue_flush",
    "repid_queue_delete",
    "repid_get_bucket",
    "repid_store_bucket",
    "repid_delete_bucket",
    "repid_actor_run",
)


# --- message broker calls -------------------------------------------------------------


@hookspec
def repid_consume(  # type: ignore[empty-body]
    connection: Connection, broker: MessageBroker, queue: str, category: MessageCategory
) -> tuple[RoutingKey, str, Parameters]:
    """Around taking one message from `queue` (a consumer's next message).

    The result is `(key, payload, params)` of the message taken. It fires once per message
    handed to the worker, so the time it measures includes waiting for one to arrive.
    """


@hookspec
def repid_enqueue(
    connection: Connection,
    broker: MessageBroker,
    queue: str,
    key: RoutingKey,
    payload: str,
    params: Parameters,
) -> None:
    """Around sending a new message. Add headers to `params.headers` before yielding.

    Fires for every enqueue, including jobs enqueued from inside an actor. The result is
    None; an exception means the broker did not accept the message.
    """


@hookspec
def repid_requeue(
    connection: Connection,
    broker: MessageBroker,
    queue: str,
    key: RoutingKey,
    payload: str,
    params: Parameters,
) -> None:
    """Around putting a taken message back with new parameters.

    Used for a retry (`params.retries.already_tried` already counts the failed run), a
    recurring job's next run, a reschedule, and a message returned on shutdown. The message
    becomes ready at `params.delay.next_execution_time` (None: at once).
    """


@hookspec
def repid_ack(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey
) -> None:
    """Around acknowledging a message: it is done and removed from the broker."""


@hookspec
def repid_nack(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey,
    reason: str | None,
) -> None:
    """Around moving a message to its queue's dead-letter queue (no retries left, expired,
    undecodable, delivered too often); `reason` says why, when the caller gave one."""


@hookspec
def repid_reject(
    connection: Connection, broker: MessageBroker, queue: str, key: RoutingKey
) -> None:
    """Around returning a message to its queue unchanged, with no retry counted."""


@hookspec
def repid_queue_declare(
    connection: Connection, broker: MessageBroker, queue: str
) -> None:
    """Around creating a queue (and its delayed and dead-letter parts). Idempotent."""


@hookspec
def repid_queue_flush(
    connection: Connection, broker: MessageBroker, queue: str
) -> None:
    """Around removing every message from a queue, its delayed and dead-letter parts."""


@hookspec
def repid_queue_delete(
    connection: Connection, broker: MessageBroker, queue: str
) -> None:
    """Around deleting a queue and everything in it."""


# --- bucket broker calls ---------------------------------------------------------------


@hookspec
def repid_get_bucket(
    connection: Connection, broker: BucketBroker, id_: str
) -> BucketT | None:
    """Around reading a bucket (a job's arguments or a result). The result is the bucket,
    or None when there is none (never stored, or expired)."""


@hookspec
def repid_store_bucket(
    connection: Connection, broker: BucketBroker, id_: str, payload: BucketT
) -> None:
    """Around storing a bucket; it expires after `payload.ttl` when that is set."""


@hookspec
def repid_delete_bucket(
    connection: Connection, broker: BucketBroker, id_: str
) -> None:
    """Around deleting a bucket."""


# --- actor runs ------------------------------------------------------------------------


@hookspec
def repid_actor_run(  # type: ignore[empty-body]
    connection: Connection,
    actor: Actor,
    key: RoutingKey,
    payload: str,
    params: Parameters,
) -> ActorResult:
    """Around one run of an actor on one message: argument decoding, the run, and storing
    its result (so a span around the run covers the result's write).

    The result is an `ActorResult` (`success`, `data`, `exception`, `started_when`,
    `finished_when`); a failing actor does not raise through this hook, its exception is
    in `result.exception`. `actor` has `name` and `queue`; `params.retries.already_tried`
    counts earlier runs, so this is attempt `already_tried + 1`.
    """


# --- decisions -------------------------------------------------------------------------


@hookspec(firstresult=True)
def repid_should_retry(
    connection: Connection,
    actor: Actor,
    key: RoutingKey,
    params: Parameters,
    exception: BaseException,
) -> bool | None:
    """Whether a failed run may be retried (when it has retries left).

    Return False to send the message straight to the dead-letter queue, True to allow the
    retry, None for no opinion (the default is to retry).
    """


@hookspec(firstresult=True)
def repid_retry_delay(
    connection: Connection,
    actor: Actor,
    key: RoutingKey,
    params: Parameters,
    exception: BaseException | None,
) -> timedelta | float | None:
    """How long to wait before the next attempt of a failed run, as a timedelta or seconds.

    Only asked when the actor has no `retry_policy=` of its own (that one wins). The
    default policy is a plugin registered last, so any plugin returning a value overrides
    it. `params` are those of the failed run; this is retry number
    `params.retries.already_tried + 1`. `exception` is None for an eager `msg.retry()`.
    """


# --- lifecycle -------------------------------------------------------------------------


@hookspec
def repid_worker_start(worker: Worker) -> Awaitable[None] | None:
    """After a worker connected and declared its queues, before it takes a message.
    May return an awaitable, which is awaited."""


@hookspec
def repid_worker_stop(worker: Worker) -> Awaitable[None] | None:
    """After a worker stopped taking messages and settled the ones it held, before it
    returns. May return an awaitable, which is awaited."""


@hookspec
def repid_http_routes(
    worker: Worker,
) -> Mapping[str, Callable[[], tuple[str, bytes]]] | None:
    """Extra paths for the worker's health-check HTTP server.

    Return a mapping of path to a callable giving `(content_type, body)` (answered with
    200) or `(status, content_type, body)`; for example the metrics plugin serves
    `/metrics` this way.
    """


def hook_names() -> list[str]:
    """Every hook name defined here."""
    return [name for name in globals() if name.startswith("repid_")]


