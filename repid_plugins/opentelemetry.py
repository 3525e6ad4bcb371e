"""OpenTelemetry tracing for repid: one trace from the code that enqueues to the actor that runs.

Register `TracingPlugin()` on a `Connection` (`Connection(broker, plugins=[TracingPlugin()])`)
on both the producer and the worker side. It needs only `opentelemetry-api` (the `otel`
extra); configure an SDK `TracerProvider` yourself, or pass one as `tracer_provider=`.

Spans, named and attributed per OpenTelemetry's messaging semantic conventions:

- `send {queue}` (PRODUCER) around every enqueue; it injects the W3C trace context into the
  message headers, so the consumer continues the trace.
- `process {queue}` (CONSUMER) around every actor run, child of the producer's span (or, with
  `use_links=True`, the root of a new trace linked to it). It is current while the actor runs,
  so a job the actor enqueues lands in the same trace.
- `ack|nack|reject|requeue {queue}` (CLIENT, `messaging.operation.type=settle`) around each
  settlement, child of the message's process span.
- `get_bucket|store_bucket|delete_bucket` (CLIENT) around bucket calls.
- `receive {queue}` (CLIENT) around taking a message, only with `trace_receive=True` (it
  includes the wait for a message, so it is off by default).

A retry keeps the producer's trace context in its headers (a requeue never overwrites it), so
every attempt's process span is in the original trace, attempt number in `repid.retry.attempt`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from repid import hookimpl
from repid_plugins._common import BoundedMap, error_type

if TYPE_CHECKING:
    from repid import (
        Actor,
        ActorResult,
        BucketBroker,
        Connection,
        MessageBroker,
        MessageCategory,
        Parameters,
        RoutingKey,
    )
    from repid.data import BucketT

__all__ = ["TracingPlugin"]

_INSTRUMENTATION = "repid_plugins.opentelemetry"

# attribute names of the messaging semantic conventions (hard-coded: semconv is not a dep)
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"
ACTOR_NAME = "repid.actor.name"
RETRY_ATTEMPT = "repid.retry.attempt"
BUCKET_ID = "repid.bucket.id"
BUCKET_SYSTEM = "repid.bucket.system"

T = TypeVar("T")


def _fail(span: Span, exc: BaseException) -> None:
    """Record a failure on a span the way the semantic conventions ask: status, type, event."""
    kind = error_type(exc)
    span.set_attribute(ERROR_TYPE, kind)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))


class TracingPlugin:
    """repid plugin emitting OpenTelemetry spans for sends, actor runs, settles and buckets."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        use_links: bool = False,
        *,
        propagator: TextMapPropagator | None = None,
        trace_receive: bool = False,
    ) -> None:
        """`tracer_provider` defaults to the global one; `use_links=True` starts a new trace
        per run, linked to the producer's; `propagator` defaults to the global one."""
        self.tracer = trace.get_tracer(_INSTRUMENTATION, tracer_provider=tracer_provider)
        self.use_links = use_links
        self.trace_receive = trace_receive
        self._propagator = propagator
        # headers of each message taken and not yet run (extracted only if needed)
        self._taken: BoundedMap[str, dict[str, str]] = BoundedMap()
        # context a settle span parents on, per message run (the process span's)
        self._settle_parent: BoundedMap[str, Context] = BoundedMap()
        # context a result bucket store parents on, per result id (the process span's)
        self._bucket_parent: BoundedMap[str, Context] = BoundedMap()

    # --- propagation ---

    def _inject(self, headers: dict[str, str], ctx: Context) -> None:
        """Write the trace context of `ctx` into message headers."""
        if self._propagator is None:
            propagate.inject(headers, context=ctx)
        else:
            self._propagator.inject(headers, context=ctx)

    def _extract(self, headers: dict[str, str]) -> Context:
        """The producer's context from message headers (empty when it sent none)."""
        if not headers:
            return Context()
        if self._propagator is None:
            return propagate.extract(headers, context=Context())
        return self._propagator.extract(headers, context=Context())

    # --- producer side ---

    @hookimpl(wrapper=True)
    def repid_enqueue(
        self, broker: MessageBroker, queue: str, key: RoutingKey, params: Parameters,
    ) -> Generator[None, None, None]:
        """`send {queue}` PRODUCER span; its context goes into the message headers."""
        span = self.tracer.start_span(
            f"send {queue}", kind=SpanKind.PRODUCER,
            attributes={SYSTEM: broker.system, DESTINATION: queue, OPERATION_TYPE: "send",
                        OPERATION_NAME: "send", MESSAGE_ID: key.id_, ACTOR_NAME: key.topic})
        self._inject(params.headers, trace.set_span_in_context(span))
        yield from self._around(span)

    # --- consumer side ---

    @hookimpl(wrapper=True)
    def repid_consume(
        self, broker: MessageBroker, queue: str, category: MessageCategory,
    ) -> Generator[None, tuple[RoutingKey, str, Parameters], tuple[RoutingKey, str, Parameters]]:
        """Remember each taken message's headers (a settle without a run, such as an expired
        message's nack, still joins its trace); with `trace_receive=True` also record a
        `receive {queue}` span linked to the producer's."""
        if not self.trace_receive:
            message = yield
            self._taken[message[0].id_] = message[2].headers
            return message
        attributes = {SYSTEM: broker.system, DESTINATION: queue, OPERATION_TYPE: "receive",
                      OPERATION_NAME: "receive"}
        started = time.time_ns()  # the span is made once the message is known, to link it
        try:
            message = yield
        except StopAsyncIteration:
            raise  # the consumer finished: nothing was received
        except BaseException as exc:
            span = self.tracer.start_span(f"receive {queue}", kind=SpanKind.CLIENT,
                                          attributes=attributes, start_time=started)
            _fail(span, exc)
            span.end()
            raise
        key, _, params = message
        self._taken[key.id_] = params.headers
        producer = trace.get_current_span(self._extract(params.headers)).get_span_context()
        span = self.tracer.start_span(
            f"receive {queue}", kind=SpanKind.CLIENT, start_time=started,
            attributes={**attributes, MESSAGE_ID: key.id_},
            links=[Link(producer)] if producer.is_valid else None)
        span.end()
        return message

    @hookimpl(wrapper=True)
    def repid_actor_run(
        self, connection: Connection, actor: Actor, key: RoutingKey, params: Parameters,
    ) -> Generator[None, ActorResult, ActorResult]:
        """`process {queue}` CONSUMER span, current while the actor runs; a failed run sets
        status ERROR, `error.type` and an exception event."""
        self._taken.pop(key.id_)
        remote = self._extract(params.headers)
        links: list[Link] | None = None
        parent = remote
        if self.use_links:
            producer = trace.get_current_span(remote).get_span_context()
            links = [Link(producer)] if producer.is_valid else None
            parent = Context()
        span = self.tracer.start_span(
            f"process {key.queue}", context=parent, kind=SpanKind.CONSUMER, links=links,
            attributes={SYSTEM: connection.message_broker.system, DESTINATION: key.queue,
                        OPERATION_TYPE: "process", OPERATION_NAME: "process",
                        MESSAGE_ID: key.id_, ACTOR_NAME: actor.name,
                        RETRY_ATTEMPT: params.retries.already_tried + 1})
        ctx = trace.set_span_in_context(span, remote)  # keeps the producer's baggage
        self._settle_parent[key.id_] = ctx
        if params.result is not None:
            self._bucket_parent[params.result.id_] = ctx
        token = otel_context.attach(ctx)
        try:
            result = yield
        except BaseException as exc:
            _fail(span, exc)
            raise
        else:
            if not result.success and result.exception is not None:
                _fail(span, result.exception)
        finally:
            otel_context.detach(token)
            span.end()
        return result

    # --- settles ---

    def _settle(self, operation: str, broker: MessageBroker, queue: str,
                key: RoutingKey) -> Span:
        """Start a settle CLIENT span under the message's process span (or, for a message
        settled without a run, under its producer's span)."""
        parent = self._settle_parent.pop(key.id_)
        if parent is None:
            headers = self._taken.pop(key.id_)
            if headers is not None:
                parent = self._extract(headers)
        return self.tracer.start_span(
            f"{operation} {queue}", context=parent, kind=SpanKind.CLIENT,
            attributes={SYSTEM: broker.system, DESTINATION: queue, OPERATION_TYPE: "settle",
                        OPERATION_NAME: operation, MESSAGE_ID: key.id_})

    @staticmethod
    def _around(span: Span) -> Generator[None, T, T]:
        """Wait for the call, record its failure if any, end the span."""
        try:
            result = yield
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            span.end()
        return result

    @hookimpl(wrapper=True)
    def repid_ack(self, broker: MessageBroker, queue: str,
                  key: RoutingKey) -> Generator[None, None, None]:
        """`ack {queue}` settle span."""
        yield from self._around(self._settle("ack", broker, queue, key))

    @hookimpl(wrapper=True)
    def repid_nack(self, broker: MessageBroker, queue: str,
                   key: RoutingKey) -> Generator[None, None, None]:
        """`nack {queue}` settle span (the message goes to the dead-letter queue)."""
        yield from self._around(self._settle("nack", broker, queue, key))

    @hookimpl(wrapper=True)
    def repid_reject(self, broker: MessageBroker, queue: str,
                     key: RoutingKey) -> Generator[None, None, None]:
        """`reject {queue}` settle span (the message goes back unchanged)."""
        yield from self._around(self._settle("reject", broker, queue, key))

    @hookimpl(wrapper=True)
    def repid_requeue(self, broker: MessageBroker, queue: str, key: RoutingKey,
                      params: Parameters) -> Generator[None, None, None]:
        """`requeue {queue}` settle span; the headers keep the producer's trace context (so
        a retry stays in the original trace), and get this span's only when they had none."""
        span = self._settle("requeue", broker, queue, key)
        next_try = params.delay.next_execution_time
        if next_try is not None:
            span.set_attribute("repid.requeue.ready_at", next_try.isoformat())
        carried = trace.get_current_span(self._extract(params.headers)).get_span_context()
        if not carried.is_valid:
            self._inject(params.headers, trace.set_span_in_context(span))
        yield from self._around(span)

    # --- buckets ---

    def _bucket(self, operation: str, broker: BucketBroker, id_: str) -> Span:
        """Start a bucket CLIENT span (a result store parents on the run that made it)."""
        parent = self._bucket_parent.pop(id_)
        return self.tracer.start_span(
            operation, context=parent, kind=SpanKind.CLIENT,
            attributes={BUCKET_SYSTEM: broker.system, BUCKET_ID: id_})

    @hookimpl(wrapper=True)
    def repid_get_bucket(self, broker: BucketBroker,
                         id_: str) -> Generator[None, BucketT | None, BucketT | None]:
        """`get_bucket` CLIENT span."""
        return (yield from self._around(self._bucket("get_bucket", broker, id_)))

    @hookimpl(wrapper=True)
    def repid_store_bucket(self, broker: BucketBroker, id_: str) -> Generator[None, None, None]:
        """`store_bucket` CLIENT span."""
        yield from self._around(self._bucket("store_bucket", broker, id_))

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self, broker: BucketBroker, id_: str) -> Generator[None, None, None]:
        """`delete_bucket` CLIENT span."""
        yield from self._around(self._bucket("delete_bucket", broker, id_))
