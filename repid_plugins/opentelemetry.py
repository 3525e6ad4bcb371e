"""OpenTelemetry tracing for repid: one trace from the code that enqueues to the actor that runs.

Register `TracingPlugin()` on a `Connection` (`Connection(broker, plugins=[TracingPlugin()])`)
on both the producer and the worker side. It needs only `opentelemetry-api` (the `otel`
extra); configure an SDK `TracerProvider` yourself, or pass one as `tracer_provider=`.

Spans, named and attributed per OpenTelemetry's messaging semantic conventions:

- `send {queue}` (PRODUCER) around every enqueue; it writes the W3C trace context
  (`traceparent`, `tracestate`) into the message headers, so the consumer continues the trace.
- `process {queue}` (CONSUMER) from the start of an actor run to the message's settle,
  child of the producer's span (or, with `use_links=True`, the root of a new trace linked
  to it). It is current while the actor runs, so a job the actor enqueues, and the bucket
  calls of the run, land in the same trace. How the message was settled goes on it:
  `repid.settle.operation` (`ack`, `nack`, `reject`, `requeue`), `repid.requeue.reason`,
  `repid.dead.reason`; a settle that raised sets `error.type` (unless the run's failure
  already did) and records the exception.
- `ack|nack|reject|requeue {queue}` (CLIENT, `messaging.operation.type=settle`) around each
  settle, child of the process span, only with `settle_spans=True` (the semantic
  conventions make settle spans a SHOULD; they cost a third span per message).
- `get_bucket|store_bucket|delete_bucket` (CLIENT) around bucket calls.
- `receive {queue}` (CLIENT) around taking a message, only with `trace_receive=True` (it
  includes the wait for a message, so it is off by default).

A retry keeps the producer's trace context in its headers (a requeue never overwrites it), so
every attempt's process span is in the original trace, attempt number in `repid.retry.attempt`.

Cost guarantees, kept by the code below:

- Per-delivery state lives only in the delivery's stash (`delivery.stash`, the hooks'
  `stash`): nothing is keyed by message id, nothing is evicted under load, a new delivery
  starts clean.
- A run whose producer's trace was not sampled, under a sampler that drops such spans
  (`ParentBased`, the SDK's default, see `drops_unsampled_remote_parents`), makes no span:
  the producer's context is made current as it is, parsed only if something asks for it,
  and the settle hooks return at once. Under any other sampler the SDK decides as usual.
- Attributes go to `start_span` (the SDK validates them once, not per `set_attribute`),
  and later ones only onto a recording span (`span.is_recording()`).
- The constant attributes and span names of a (queue, actor) are built once and reused.
- The consumer extracts a context only when the headers carry `traceparent` (or, with a
  custom `propagator=`, one of its fields), and attaches one context per actor run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, TextMapPropagator, default_getter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from repid import StashKey, hookimpl
from repid_plugins._common import error_type

if TYPE_CHECKING:
    from repid import (
        Actor,
        ActorResult,
        BucketBroker,
        Connection,
        Delivery,
        MessageBroker,
        MessageCategory,
        Parameters,
        RoutingKey,
        Stash,
    )
    from repid.data import BucketT

__all__ = ["W3C_PROPAGATOR", "TracingPlugin"]

_INSTRUMENTATION = "repid_plugins.opentelemetry"

_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"
#: a version-00 traceparent, the one form repid's producers write (anything else takes the
#: general path of the SDK's propagator)
_TRACEPARENT_00 = re.compile("00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class _W3CTraceContext(TraceContextTextMapPropagator):
    """The W3C trace context propagator, with a short path for the common carrier: a plain
    dict of headers whose `traceparent` is version 00 with no `tracestate`. It gives the
    same context as the general path, which handles every other case."""

    def extract(self, carrier: Any, context: Context | None = None,
                getter: Getter[Any] = default_getter) -> Context:
        """The context carried by `carrier` on top of `context` (an empty one if None)."""
        if getter is default_getter and type(carrier) is dict and _TRACESTATE not in carrier:
            header = carrier.get(_TRACEPARENT)
            if type(header) is str:
                match = _TRACEPARENT_00.fullmatch(header)
                if match is not None:
                    trace_id, span_id = int(match[1], 16), int(match[2], 16)
                    if not trace_id or not span_id:
                        return Context() if context is None else context
                    remote = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True,
                                         trace_flags=TraceFlags(int(match[3], 16)))
                    return trace.set_span_in_context(NonRecordingSpan(remote),
                                                     Context() if context is None else context)
        return super().extract(carrier, context, getter)


#: the propagator used unless `propagator=` says otherwise: W3C trace context only, made
#: once for the process (it keeps no state)
W3C_PROPAGATOR: TextMapPropagator = _W3CTraceContext()
#: the parent of a span that starts a trace (never the worker's own current context)
_ROOT = Context()


#: the `traceparent` of a producer span that was not sampled: version 00, ids that are not
#: all zeros (no valid `traceparent` carries those), the sampled bit of the flags clear
_UNSAMPLED_00 = re.compile(
    "00-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f][02468ace])")


def _unsampled_parent(header: object) -> re.Match[str] | None:
    """The parsed `traceparent` of a producer span that was not sampled (one match does
    every check); None for anything else."""
    return _UNSAMPLED_00.fullmatch(header) if type(header) is str else None


class _UnsampledRemoteSpan(NonRecordingSpan):
    """The producer's span of a trace that is not sampled, current while a run that
    records nothing goes on: its `SpanContext` is built only when something asks for it
    (a child job's `send` span, user code), so a run that asks nothing costs no parse."""

    def __init__(self, match: re.Match[str]) -> None:
        # no NonRecordingSpan.__init__: this span keeps its own context, built on demand
        self._match = match
        self._parsed: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        """The producer's span context, as `W3C_PROPAGATOR.extract` gives it."""
        if self._parsed is None:
            match = self._match
            self._parsed = SpanContext(trace_id=int(match[1], 16), span_id=int(match[2], 16),
                                       is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))
        return self._parsed

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


def drops_unsampled_remote_parents(provider: object) -> bool:
    """Whether `provider` (an SDK `TracerProvider`) never records a span whose remote
    parent was not sampled: its sampler is a `ParentBased` that leaves such spans to
    `AlwaysOffSampler` (the SDK's default, and every `parentbased_*` of
    `OTEL_TRACES_SAMPLER`). Read from the sampler's public description; anything else
    (another sampler, a nested `ParentBased`, a provider with no sampler) is False, and the
    SDK is asked for every span."""
    sampler = getattr(provider, "sampler", None)
    get_description = getattr(sampler, "get_description", None)
    if get_description is None:
        return False
    description = get_description()
    return (isinstance(description, str) and description.startswith("ParentBased{")
            and description.count("remoteParentNotSampled:") == 1
            and "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:" in description)

# attribute names of the messaging semantic conventions (hard-coded: semconv is not a dep)
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"
ACTOR_NAME = "repid.actor.name"
RETRY_ATTEMPT = "repid.retry.attempt"
SETTLE_OPERATION = "repid.settle.operation"
REQUEUE_REASON = "repid.requeue.reason"
REQUEUE_READY_AT = "repid.requeue.ready_at"
DEAD_REASON = "repid.dead.reason"
BUCKET_ID = "repid.bucket.id"
BUCKET_SYSTEM = "repid.bucket.system"

T = TypeVar("T")
Attributes = dict[str, AttributeValue]


def _fail(span: Span, exc: BaseException, *, set_type: bool = True) -> None:
    """Record a failure on a span the way the semantic conventions ask: status, type, event.
    `set_type=False` keeps an `error.type` set before (the run's, when its settle fails)."""
    kind = error_type(exc)
    if set_type:
        span.set_attribute(ERROR_TYPE, kind)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))


class _Delivery:
    """What the plugin knows of one delivery, kept in its stash from take to settle."""

    __slots__ = ("ctx", "failed", "headers", "running", "settled", "span")

    def __init__(self) -> None:
        #: the recording process span, ended by the settle (or by the run, when the actor
        #: settled the message itself); None: not run here, or not sampled
        self.span: Span | None = None
        #: the context the process span is current in (a settle span's parent)
        self.ctx: Context | None = None
        #: the message headers as taken (only kept when settle spans are on)
        self.headers: dict[str, str] | None = None
        self.running = False
        self.settled = False
        #: the run failed, so its `error.type` stays on the span
        self.failed = False


_DELIVERY = StashKey[_Delivery]()


class TracingPlugin:
    """repid plugin emitting OpenTelemetry spans for sends, actor runs, settles and buckets."""

    def __new__(cls, *args: Any, **kwargs: Any) -> TracingPlugin:
        """A plugin that needs nothing at a message's take has no `repid_consume` hook, so
        the take costs nothing: with settle spans or receive spans on, the plugin is the
        subclass that has one."""
        if cls is TracingPlugin and (kwargs.get("settle_spans") or kwargs.get("trace_receive")):
            cls = _TakeTracing
        return super().__new__(cls)

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        use_links: bool = False,
        *,
        propagator: TextMapPropagator | None = None,
        trace_receive: bool = False,
        settle_spans: bool = False,
    ) -> None:
        """`tracer_provider` defaults to the global one; `use_links=True` starts a new trace
        per run, linked to the producer's; `propagator` defaults to W3C trace context only
        (pass `opentelemetry.propagate.get_global_textmap()` to carry baggage too);
        `settle_spans=True` adds a CLIENT span per settle; `trace_receive=True` a span per
        take."""
        self.tracer = trace.get_tracer(_INSTRUMENTATION, tracer_provider=tracer_provider)
        self._provider = tracer_provider
        #: the provider's sampler drops every span of an unsampled remote parent (None:
        #: not known yet, the global provider is not set)
        self._skips_unsampled: bool | None = None
        self.use_links = use_links
        self.trace_receive = trace_receive
        self.settle_spans = settle_spans
        self._propagator: TextMapPropagator = propagator or W3C_PROPAGATOR
        #: header names whose presence means there is a context to extract
        self._fields = (_TRACEPARENT,) if propagator is None else tuple(propagator.fields)
        # built once per queue / (queue, actor): bounded by the app's names, not messages
        self._send: dict[tuple[str, str, str], tuple[str, Attributes]] = {}
        self._process: dict[tuple[str, str, str], tuple[str, Attributes]] = {}
        self._settle: dict[tuple[str, str, str], tuple[str, Attributes]] = {}

    # --- propagation ---

    def _extract(self, headers: dict[str, str]) -> Context | None:
        """The producer's context from message headers; None when they carry none."""
        for name in self._fields:
            if name in headers:
                return self._propagator.extract(headers, context=Context())
        return None

    def _carries_context(self, headers: dict[str, str]) -> bool:
        return any(name in headers for name in self._fields)

    # --- precomputed names and attributes ---

    def _send_info(self, system: str, queue: str, actor: str) -> tuple[str, Attributes]:
        return _named(self._send, "send", "send", system, queue, actor)

    def _process_info(self, system: str, queue: str, actor: str) -> tuple[str, Attributes]:
        return _named(self._process, "process", "process", system, queue, actor)

    def _settle_info(self, system: str, queue: str, operation: str) -> tuple[str, Attributes]:
        return _named(self._settle, operation, "settle", system, queue, None)

    # --- producer side ---

    @hookimpl(wrapper=True)
    def repid_enqueue(
        self, broker: MessageBroker, queue: str, key: RoutingKey, params: Parameters,
    ) -> Generator[None, None, None]:
        """`send {queue}` PRODUCER span; its context goes into the message headers."""
        name, attributes = self._send_info(broker.system, queue, key.topic)
        span = self.tracer.start_span(name, kind=SpanKind.PRODUCER)
        if span.is_recording():
            span.set_attributes(attributes)
            span.set_attribute(MESSAGE_ID, key.id_)
        self._propagator.inject(params.headers, context=trace.set_span_in_context(span))
        yield from _around(span)

    # --- consumer side (taking a message: `_TakeTracing` below) ---

    def _drops_unsampled(self) -> bool:
        """Whether a run whose producer's trace is not sampled records nothing here
        (`drops_unsampled_remote_parents`), decided once the provider is known."""
        if self._skips_unsampled is None:
            provider = self._provider or trace.get_tracer_provider()
            if not hasattr(provider, "sampler"):
                return False  # no SDK provider yet: ask again on the next run
            self._skips_unsampled = drops_unsampled_remote_parents(provider)
        return self._skips_unsampled

    @hookimpl(wrapper=True)
    def repid_actor_run(
        self, connection: Connection, actor: Actor, key: RoutingKey, params: Parameters,
        stash: Stash,
    ) -> Generator[None, ActorResult, ActorResult]:
        """`process {queue}` CONSUMER span, current while the actor runs and ended by the
        settle; a failed run sets status ERROR, `error.type` and an exception event."""
        headers = params.headers
        skips = self._skips_unsampled
        if skips is None:
            skips = self._drops_unsampled()
        if skips and not self.use_links:
            unsampled = _unsampled_parent(headers.get(_TRACEPARENT))
            if unsampled is not None:
                # the sampler would drop this span: make none, keep the producer's
                # context current (a child job stays in its unsampled trace)
                ctx = trace.set_span_in_context(_UnsampledRemoteSpan(unsampled), _ROOT)
                if self.settle_spans:
                    stash.setdefault(_DELIVERY, _Delivery()).ctx = ctx
                token = otel_context.attach(ctx)
                try:
                    return (yield)
                finally:
                    otel_context.detach(token)
        remote = self._extract(headers) or _ROOT
        links: list[Link] | None = None
        parent = remote
        if self.use_links:
            if remote is not _ROOT:
                producer = trace.get_current_span(remote).get_span_context()
                links = [Link(producer)] if producer.is_valid else None
            parent = _ROOT
        name, constant = self._process_info(connection.message_broker.system, key.queue,
                                            actor.name)
        attributes = {**constant, MESSAGE_ID: key.id_,
                      RETRY_ATTEMPT: params.retries.already_tried + 1}
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER,
                                      links=links, attributes=attributes)
        ctx = trace.set_span_in_context(span, remote)  # keeps the producer's baggage
        delivery: _Delivery | None = None
        if span.is_recording():
            delivery = stash.setdefault(_DELIVERY, _Delivery())
            delivery.span, delivery.ctx, delivery.running = span, ctx, True
        elif self.settle_spans:  # not sampled: settle spans follow it (and are dropped)
            delivery = stash.setdefault(_DELIVERY, _Delivery())
            delivery.ctx = ctx
        token = otel_context.attach(ctx)
        try:
            result = yield
        except BaseException as exc:
            if delivery is not None and delivery.span is not None:
                _fail(span, exc)
                delivery.failed = True
            raise
        else:
            if delivery is not None and delivery.span is not None and not result.success \
                    and result.exception is not None:
                _fail(span, result.exception)
                delivery.failed = True
        finally:
            otel_context.detach(token)
            if delivery is not None:
                delivery.running = False
                if delivery.settled and delivery.span is not None:
                    delivery.span.end()  # settled by the actor itself: nothing follows
                    delivery.span = None
        return result

    # --- settles ---

    def _settle_around(self, operation: str, broker: MessageBroker, queue: str,
                       key: RoutingKey, stash: Stash, outcome: Attributes | None,
                       headers: dict[str, str] | None = None) -> Generator[None, None, None]:
        """Put the settle's outcome on the process span, optionally inside a settle span;
        end the process span once the settle is done (unless the run is still going)."""
        delivery = stash.get(_DELIVERY, None)
        process = None if delivery is None else delivery.span
        if process is not None:
            process.set_attribute(SETTLE_OPERATION, operation)
            if outcome:
                process.set_attributes(outcome)
        settle: Span | None = None
        if self.settle_spans:
            parent = None if delivery is None else delivery.ctx
            if parent is None and delivery is not None and delivery.headers is not None:
                parent = self._extract(delivery.headers)
            name, attributes = self._settle_info(broker.system, queue, operation)
            settle = self.tracer.start_span(name, context=parent or _ROOT,
                                            kind=SpanKind.CLIENT)
            if settle.is_recording():
                settle.set_attributes(attributes)
                settle.set_attribute(MESSAGE_ID, key.id_)
                if outcome:
                    settle.set_attributes(outcome)
        if headers is not None and not self._carries_context(headers):
            # an untraced message: its next run continues this one's trace
            carrier = settle if settle is not None else process
            if carrier is not None:
                self._propagator.inject(headers, context=trace.set_span_in_context(carrier))
        try:
            yield
        except BaseException as exc:
            if settle is not None and settle.is_recording():
                _fail(settle, exc)
            if process is not None and delivery is not None:
                _fail(process, exc, set_type=not delivery.failed)
            raise
        finally:
            if settle is not None:
                settle.end()
            if delivery is not None:
                delivery.settled = True
                if process is not None and not delivery.running:
                    process.end()
                    delivery.span = None

    @hookimpl(wrapper=True)
    def repid_ack(self, broker: MessageBroker, queue: str, key: RoutingKey,
                  stash: Stash) -> Generator[None, None, None]:
        """ack: the message is done."""
        if not self.settle_spans and _DELIVERY not in stash:
            return (yield)  # nothing recorded for this delivery
        yield from self._settle_around("ack", broker, queue, key, stash, None)

    @hookimpl(wrapper=True)
    def repid_nack(self, broker: MessageBroker, queue: str, key: RoutingKey,
                   reason: str | None, stash: Stash) -> Generator[None, None, None]:
        """nack: the message goes to the dead-letter queue, `repid.dead.reason` says why."""
        if not self.settle_spans and _DELIVERY not in stash:
            return (yield)  # nothing recorded for this delivery
        outcome: Attributes | None = None if reason is None else {DEAD_REASON: reason}
        yield from self._settle_around("nack", broker, queue, key, stash, outcome)

    @hookimpl(wrapper=True)
    def repid_reject(self, broker: MessageBroker, queue: str, key: RoutingKey,
                     stash: Stash) -> Generator[None, None, None]:
        """reject: the message goes back unchanged."""
        if not self.settle_spans and _DELIVERY not in stash:
            return (yield)  # nothing recorded for this delivery
        yield from self._settle_around("reject", broker, queue, key, stash, None)

    @hookimpl(wrapper=True)
    def repid_requeue(self, broker: MessageBroker, queue: str, key: RoutingKey,
                      params: Parameters, reason: str | None,
                      stash: Stash) -> Generator[None, None, None]:
        """requeue: `repid.requeue.reason` and `repid.requeue.ready_at`; the headers keep
        the producer's trace context (so a retry stays in the original trace), and get
        this delivery's only when they had none."""
        delivery = stash.get(_DELIVERY, None)
        if delivery is None and not self.settle_spans:
            return (yield)  # nothing recorded for this delivery
        outcome: Attributes | None = None
        if self.settle_spans or (delivery is not None and delivery.span is not None):
            outcome = {REQUEUE_REASON: reason or "unknown"}
            next_try = params.delay.next_execution_time
            if next_try is not None:
                outcome[REQUEUE_READY_AT] = next_try.isoformat()
        yield from self._settle_around("requeue", broker, queue, key, stash, outcome,
                                       params.headers)

    # --- buckets (a bucket call inside a run is a child of its process span) ---

    def _bucket(self, operation: str, broker: BucketBroker, id_: str) -> Span:
        """Start a bucket CLIENT span under the current context."""
        span = self.tracer.start_span(operation, kind=SpanKind.CLIENT)
        if span.is_recording():
            span.set_attributes({BUCKET_SYSTEM: broker.system, BUCKET_ID: id_})
        return span

    @hookimpl(wrapper=True)
    def repid_get_bucket(self, broker: BucketBroker,
                         id_: str) -> Generator[None, BucketT | None, BucketT | None]:
        """`get_bucket` CLIENT span."""
        return (yield from _around(self._bucket("get_bucket", broker, id_)))

    @hookimpl(wrapper=True)
    def repid_store_bucket(self, broker: BucketBroker, id_: str) -> Generator[None, None, None]:
        """`store_bucket` CLIENT span."""
        yield from _around(self._bucket("store_bucket", broker, id_))

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self, broker: BucketBroker, id_: str) -> Generator[None, None, None]:
        """`delete_bucket` CLIENT span."""
        yield from _around(self._bucket("delete_bucket", broker, id_))


class _TakeTracing(TracingPlugin):
    """TracingPlugin with its take hook (settle spans or receive spans on)."""

    @hookimpl(wrapper=True)
    def repid_consume(
        self, broker: MessageBroker, queue: str, category: MessageCategory,
    ) -> Generator[None, Delivery, Delivery]:
        """With settle spans on, keep each taken message's headers (a settle without a run,
        such as an expired message's nack, still joins its trace); with
        `trace_receive=True` also record a `receive {queue}` span linked to the
        producer's."""
        if not self.trace_receive:
            message = yield
            if self.settle_spans:
                message.stash.setdefault(_DELIVERY, _Delivery()).headers = message.params.headers
            return message
        attributes: Attributes = {SYSTEM: broker.system, DESTINATION: queue,
                                  OPERATION_TYPE: "receive", OPERATION_NAME: "receive"}
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
        key, params = message.key, message.params
        if self.settle_spans:
            message.stash.setdefault(_DELIVERY, _Delivery()).headers = params.headers
        remote = self._extract(params.headers)
        producer = trace.get_current_span(remote).get_span_context()
        span = self.tracer.start_span(
            f"receive {queue}", kind=SpanKind.CLIENT, start_time=started,
            attributes={**attributes, MESSAGE_ID: key.id_},
            links=[Link(producer)] if producer.is_valid else None)
        span.end()
        return message


def _around(span: Span) -> Generator[None, T, T]:
    """Wait for the call, record its failure if any, end the span."""
    try:
        result = yield
    except BaseException as exc:
        if span.is_recording():
            _fail(span, exc)
        raise
    finally:
        span.end()
    return result


def _named(cache: dict[tuple[str, str, str], tuple[str, Attributes]], operation: str,
           kind: str, system: str, queue: str, actor: str | None) -> tuple[str, Attributes]:
    """A span's name and constant attributes for one (system, queue, actor or operation),
    built once: bounded by the app's queues and actors, not by its messages."""
    cache_key = (system, queue, actor or operation)
    info = cache.get(cache_key)
    if info is None:
        attributes: dict[str, Any] = {SYSTEM: system, DESTINATION: queue,
                                      OPERATION_TYPE: kind, OPERATION_NAME: operation}
        if actor is not None:
            attributes[ACTOR_NAME] = actor
        info = cache[cache_key] = (f"{operation} {queue}", attributes)
    return info
