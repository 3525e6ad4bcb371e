"""TracingPlugin: spans recorded by the SDK's in-memory exporter over a real Worker, on every
broker (in_memory always; Redis and RabbitMQ when reachable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from repid import Job, MessageDependency, Router
from repid_plugins.opentelemetry import TracingPlugin


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """The spans called `name`, in the order they started."""
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, f"expected one {name!r} span, got {[s.name for s in spans]}"
    return found[0]


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def test_send_and_process_share_the_trace(make_conn: Any, queue_name: str,
                                                run_worker: Any, broker_kind: str,
                                                provider: TracerProvider,
                                                exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider)])
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> str:
        return "done"

    with provider.get_tracer("test").start_as_current_span("request") as request:
        key, _, _ = await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)

    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == [f"process {queue_name}", "request",
                                             f"send {queue_name}"]  # no settle span
    send = one(spans, f"send {queue_name}")
    process = one(spans, f"process {queue_name}")
    trace_id = request.get_span_context().trace_id
    assert ids(send)[0] == ids(process)[0] == trace_id
    assert parent_id(send) == request.get_span_context().span_id
    assert parent_id(process) == ids(send)[1]
    assert (send.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    common = {"messaging.system": broker_kind, "messaging.destination.name": queue_name,
              "messaging.message.id": key.id_}
    assert dict(send.attributes or {}).items() >= {
        **common, "messaging.operation.type": "send", "messaging.operation.name": "send",
        "repid.actor.name": "work"}.items()
    assert dict(process.attributes or {}).items() >= {
        **common, "messaging.operation.type": "process", "messaging.operation.name": "process",
        "repid.actor.name": "work", "repid.retry.attempt": 1,
        "repid.settle.operation": "ack"}.items()
    assert process.status.status_code is StatusCode.UNSET


async def test_settle_spans_are_opt_in(make_conn: Any, queue_name: str, run_worker: Any,
                                       broker_kind: str, provider: TracerProvider,
                                       exporter: InMemorySpanExporter) -> None:
    plugin = TracingPlugin(tracer_provider=provider, settle_spans=True)
    conn = await make_conn(queue_name, plugins=[plugin])
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> str:
        return "done"

    key, _, _ = await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)

    spans = exporter.get_finished_spans()
    process = one(spans, f"process {queue_name}")
    ack = one(spans, f"ack {queue_name}")
    assert ids(ack)[0] == ids(process)[0]
    assert parent_id(ack) == ids(process)[1]
    assert ack.kind is SpanKind.CLIENT
    assert dict(ack.attributes or {}).items() >= {
        "messaging.system": broker_kind, "messaging.destination.name": queue_name,
        "messaging.message.id": key.id_, "messaging.operation.type": "settle",
        "messaging.operation.name": "ack"}.items()
    # the process span lasts until its settle is done
    assert process.end_time is not None and ack.end_time is not None
    assert process.end_time >= ack.end_time


async def test_failing_actor_marks_the_span(make_conn: Any, queue_name: str, run_worker: Any,
                                            provider: TracerProvider,
                                            exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider)])
    router = Router()

    @router.actor(name="boom", queue=queue_name)
    async def boom() -> None:
        raise ValueError("bad input")

    await Job("boom", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)

    spans = exporter.get_finished_spans()
    process = one(spans, f"process {queue_name}")
    assert process.status.status_code is StatusCode.ERROR
    assert (process.attributes or {})["error.type"] == "ValueError"
    events = [e for e in process.events if e.name == "exception"]
    assert events and (events[0].attributes or {})["exception.message"] == "bad input"
    attributes = dict(process.attributes or {})
    assert attributes["repid.settle.operation"] == "nack"  # no retries left: dead-lettered
    assert "no retries left" in str(attributes["repid.dead.reason"])
    assert named(spans, f"nack {queue_name}") == []  # settle spans are opt-in


@pytest.mark.parametrize("settle_spans", [False, True])
async def test_retry_stays_in_the_original_trace(make_conn: Any, queue_name: str,
                                                 run_worker: Any, provider: TracerProvider,
                                                 exporter: InMemorySpanExporter,
                                                 settle_spans: bool) -> None:
    plugin = TracingPlugin(tracer_provider=provider, settle_spans=settle_spans)
    conn = await make_conn(queue_name, plugins=[plugin])
    router = Router()
    runs: list[int] = []

    @router.actor(name="flaky", queue=queue_name, retry_policy=lambda n: 0)
    async def flaky(msg: MessageDependency) -> None:
        runs.append(msg.parameters.retries.already_tried)
        if len(runs) == 1:
            raise ConnectionError("first try fails")

    with provider.get_tracer("test").start_as_current_span("request"):
        await Job("flaky", queue=queue_name, retries=2, _connection=conn).enqueue()
    await run_worker(conn, router, 2)

    spans = exporter.get_finished_spans()
    send = one(spans, f"send {queue_name}")
    first, second = named(spans, f"process {queue_name}")
    assert {ids(first)[0], ids(second)[0]} == {ids(send)[0]}
    assert parent_id(first) == parent_id(second) == ids(send)[1]
    if settle_spans:
        requeue = one(spans, f"requeue {queue_name}")
        assert ids(requeue)[0] == ids(send)[0]
        assert parent_id(requeue) == ids(first)[1]
    else:
        assert named(spans, f"requeue {queue_name}") == []
    assert [(s.attributes or {})["repid.retry.attempt"] for s in (first, second)] == [1, 2]
    assert [(s.attributes or {})["repid.settle.operation"] for s in (first, second)] == [
        "requeue", "ack"]
    assert (first.attributes or {})["repid.requeue.reason"] == "retry"
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET


async def test_child_job_joins_the_parent_trace(make_conn: Any, queue_name: str,
                                                run_worker: Any, provider: TracerProvider,
                                                exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider)])
    router = Router()

    @router.actor(name="parent", queue=queue_name)
    async def parent() -> None:
        await Job("child", queue=queue_name, _connection=conn).enqueue()

    @router.actor(name="child", queue=queue_name)
    async def child() -> None:
        return None

    await Job("parent", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 2)

    spans = exporter.get_finished_spans()
    first_send, child_send = named(spans, f"send {queue_name}")
    processes = named(spans, f"process {queue_name}")
    by_actor = {(s.attributes or {})["repid.actor.name"]: s for s in processes}
    assert parent_id(first_send) is None  # enqueued outside any span: a new trace
    assert parent_id(child_send) == ids(by_actor["parent"])[1]
    assert parent_id(by_actor["child"]) == ids(child_send)[1]
    assert len({ids(s)[0] for s in spans}) == 1


async def test_use_links_starts_a_linked_trace(make_conn: Any, queue_name: str,
                                               run_worker: Any, provider: TracerProvider,
                                               exporter: InMemorySpanExporter) -> None:
    plugin = TracingPlugin(tracer_provider=provider, use_links=True)
    conn = await make_conn(queue_name, plugins=[plugin])
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> None:
        return None

    await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)

    spans = exporter.get_finished_spans()
    send = one(spans, f"send {queue_name}")
    process = one(spans, f"process {queue_name}")
    assert ids(process)[0] != ids(send)[0]
    assert process.parent is None
    assert [link.context.span_id for link in process.links] == [ids(send)[1]]
    assert [link.context.trace_id for link in process.links] == [ids(send)[0]]


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_result_store_is_a_client_span_of_the_run(make_conn: Any, queue_name: str,
                                                        run_worker: Any,
                                                        provider: TracerProvider,
                                                        exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider)],
                           results=True)
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> int:
        return 42

    job = Job("work", queue=queue_name, _connection=conn)
    await job.enqueue()
    await run_worker(conn, router, 1)

    spans = exporter.get_finished_spans()
    store = one(spans, "store_bucket")
    process = one(spans, f"process {queue_name}")
    assert store.kind is SpanKind.CLIENT
    assert parent_id(store) == ids(process)[1]
    assert (store.attributes or {})["repid.bucket.id"] == job.result_id


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_headers_carry_w3c_traceparent(make_conn: Any, queue_name: str,
                                             provider: TracerProvider) -> None:
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider)])
    await Job("work", queue=queue_name, _connection=conn).enqueue()
    messages = []
    async for message in conn.message_broker.consume(queue_name):
        messages.append(message)
        break
    _, _, params = messages[0]
    version, trace_id, span_id, flags = params.headers["traceparent"].split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    assert int(flags, 16) & 1  # sampled


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_failed_broker_call_marks_its_span(make_conn: Any, provider: TracerProvider,
                                                 exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(plugins=[TracingPlugin(tracer_provider=provider)])
    conn.message_broker.require_declared_queues = True  # so the enqueue below is refused
    with pytest.raises(KeyError):
        await Job("work", queue="never_declared", _connection=conn).enqueue()
    send = one(exporter.get_finished_spans(), "send never_declared")
    assert send.status.status_code is StatusCode.ERROR
    assert (send.attributes or {})["error.type"] == "repid.errors.QueueNotDeclaredError"
    assert [e.name for e in send.events] == ["exception"]


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_receive_spans_are_opt_in_and_linked(make_conn: Any, queue_name: str,
                                                   run_worker: Any, provider: TracerProvider,
                                                   exporter: InMemorySpanExporter) -> None:
    plugin = TracingPlugin(tracer_provider=provider, trace_receive=True)
    conn = await make_conn(queue_name, plugins=[plugin])
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> None:
        return None

    key, _, _ = await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)

    spans = exporter.get_finished_spans()
    send = one(spans, f"send {queue_name}")
    receive = one(spans, f"receive {queue_name}")
    assert receive.kind is SpanKind.CLIENT
    assert (receive.attributes or {})["messaging.operation.type"] == "receive"
    assert (receive.attributes or {})["messaging.message.id"] == key.id_
    assert [link.context.span_id for link in receive.links] == [ids(send)[1]]


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
@pytest.mark.parametrize("settle_spans", [False, True])
async def test_retry_of_an_untraced_message_continues_the_first_run(
        make_conn: Any, queue_name: str, run_worker: Any, provider: TracerProvider,
        exporter: InMemorySpanExporter, settle_spans: bool) -> None:
    conn = await make_conn(queue_name)
    await Job("flaky", queue=queue_name, retries=1, _connection=conn).enqueue()  # no context
    conn.middleware.register(TracingPlugin(tracer_provider=provider,
                                           settle_spans=settle_spans))
    router = Router()
    runs: list[int] = []

    @router.actor(name="flaky", queue=queue_name, retry_policy=lambda n: 0)
    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("first try fails")

    await run_worker(conn, router, 2)
    spans = exporter.get_finished_spans()
    first, second = named(spans, f"process {queue_name}")
    assert first.parent is None  # nothing to continue: the first run starts the trace
    if settle_spans:
        requeue = one(spans, f"requeue {queue_name}")
        assert parent_id(requeue) == ids(first)[1]
        assert parent_id(second) == ids(requeue)[1]  # the requeue wrote its context in
    else:
        assert parent_id(second) == ids(first)[1]  # the first run's context was written in
    assert ids(second)[0] == ids(first)[0]


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_eager_settle_in_the_actor_ends_the_span_once(
        make_conn: Any, queue_name: str, run_worker: Any, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider)])
    router = Router()
    after_ack: list[bool] = []

    @router.actor(name="work", queue=queue_name)
    async def work(msg: MessageDependency) -> None:
        from opentelemetry import trace

        # a callback runs right after the eager ack, still inside the run's span
        msg.add_callback(lambda: after_ack.append(trace.get_current_span().is_recording()))
        await msg.ack()

    await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)
    process = one(exporter.get_finished_spans(), f"process {queue_name}")
    assert after_ack == [True]
    assert (process.attributes or {})["repid.settle.operation"] == "ack"


class CountingPropagator(TraceContextTextMapPropagator):
    """W3C trace context, counting its extracts."""

    def __init__(self) -> None:
        self.extracts = 0

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        self.extracts += 1
        return super().extract(carrier, context) if getter is None else \
            super().extract(carrier, context, getter)


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_extract_only_when_a_traceparent_came(make_conn: Any, queue_name: str,
                                                    run_worker: Any,
                                                    provider: TracerProvider,
                                                    exporter: InMemorySpanExporter) -> None:
    conn = await make_conn(queue_name)
    for _ in range(3):  # sent without the plugin: no traceparent
        await Job("work", queue=queue_name, _connection=conn).enqueue()
    propagator = CountingPropagator()
    conn.middleware.register(TracingPlugin(tracer_provider=provider, propagator=propagator))
    for _ in range(2):  # sent with it: a traceparent each
        await Job("work", queue=queue_name, _connection=conn).enqueue()
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> None:
        return None

    await run_worker(conn, router, 5)
    assert propagator.extracts == 2
    processes = named(exporter.get_finished_spans(), f"process {queue_name}")
    assert sorted(s.parent is None for s in processes) == [False, False, True, True, True]


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
@pytest.mark.parametrize("sampler", ["always_off", "ratio_0", "parent_always_off"])
async def test_dropping_sampler_records_nothing_and_still_propagates(
        make_conn: Any, queue_name: str, run_worker: Any, sampler: str) -> None:
    exporter = InMemorySpanExporter()
    chosen = {"always_off": ALWAYS_OFF, "ratio_0": TraceIdRatioBased(0),
              "parent_always_off": ParentBased(ALWAYS_OFF)}[sampler]
    provider = TracerProvider(sampler=chosen)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider,
                                                              settle_spans=True)])
    router = Router()
    seen: list[tuple[int, str]] = []

    @router.actor(name="parent", queue=queue_name)
    async def parent(msg: MessageDependency) -> None:
        from opentelemetry import trace
        context = trace.get_current_span().get_span_context()
        seen.append((context.trace_id, msg.parameters.headers["traceparent"]))
        await Job("child", queue=queue_name, _connection=conn).enqueue()

    @router.actor(name="child", queue=queue_name)
    async def child(msg: MessageDependency) -> None:
        seen.append((0, msg.parameters.headers["traceparent"]))

    await Job("parent", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 2)
    assert exporter.get_finished_spans() == ()
    (trace_id, sent), (_, child_sent) = seen
    # the dropped trace's context still travels, marked not sampled, into child jobs
    assert not int(sent.split("-")[3], 16) & 1 and not int(child_sent.split("-")[3], 16) & 1
    assert int(sent.split("-")[1], 16) == trace_id == int(child_sent.split("-")[1], 16)


@pytest.mark.parametrize("headers", [
    {"traceparent": "00-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-01"},
    {"traceparent": "00-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-00"},
    {"traceparent": "00-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-01",
     "tracestate": "vendor=abc,other=1"},
    {"traceparent": "00-00000000000000000000000000000000-0e3102925dc6027a-01"},
    {"traceparent": "00-96f590ea7b58bd1dbc5ac145efb7b553-0000000000000000-01"},
    {"traceparent": "00-96F590EA7B58BD1DBC5AC145EFB7B553-0e3102925dc6027a-01"},
    {"traceparent": "00-0x f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-01"},
    {"traceparent": "01-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-01-future"},
    {"traceparent": "00-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-01-extra"},
    {"traceparent": "ff-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-01"},
    {"traceparent": "garbage"},
    {},
])
def test_module_propagator_extracts_what_the_sdk_does(headers: dict[str, str]) -> None:
    from opentelemetry import trace
    from opentelemetry.context import Context

    from repid_plugins.opentelemetry import W3C_PROPAGATOR

    def carried(context: Context) -> Any:
        found = trace.get_current_span(context).get_span_context()
        return (found.trace_id, found.span_id, found.trace_flags, found.is_remote,
                found.trace_state.to_header(), found.is_valid)

    reference = TraceContextTextMapPropagator().extract(dict(headers), context=Context())
    assert carried(W3C_PROPAGATOR.extract(dict(headers), context=Context())) == \
        carried(reference)


_PARENT = "00-96f590ea7b58bd1dbc5ac145efb7b553-0e3102925dc6027a-"


@pytest.mark.parametrize(("header", "unsampled"), [
    (_PARENT + "00", True),
    (_PARENT + "02", True),  # another flag set, not the sampled one
    (_PARENT + "fe", True),
    (_PARENT + "01", False),
    (_PARENT + "03", False),
    (_PARENT + "ff", False),
    ("00-00000000000000000000000000000000-0e3102925dc6027a-00", False),
    ("00-96f590ea7b58bd1dbc5ac145efb7b553-0000000000000000-00", False),
    ("00-00000000000000000000000000000001-0000000000000001-00", True),
    (_PARENT.upper() + "00", False),
    (_PARENT + "00-extra", False),
    (_PARENT + "0g", False),
    ("01" + _PARENT[2:] + "00", False),  # another version: the SDK's general path
    ("garbage", False),
    (None, False),
])
def test_the_unsampled_shortcut_agrees_with_the_sdk(header: str | None,
                                                    unsampled: bool) -> None:
    """A run skips its span only for a header the SDK's propagator reads as a valid parent
    that was not sampled, with the same ids and flags."""
    from opentelemetry import trace
    from opentelemetry.context import Context

    from repid_plugins.opentelemetry import _unsampled_parent, _UnsampledRemoteSpan

    match = _unsampled_parent(header)
    assert (match is not None) is unsampled
    if match is not None:
        sdk = trace.get_current_span(TraceContextTextMapPropagator().extract(
            {"traceparent": header}, context=Context())).get_span_context()
        assert sdk.is_valid and not sdk.trace_flags.sampled
        assert _UnsampledRemoteSpan(match).get_span_context() == sdk


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
@pytest.mark.parametrize(("consumer_sampler", "records"), [
    ("parent_based_default", False),
    ("always_on", True),
    ("parent_based_following_nothing", True),
])
async def test_unsampled_producer_is_followed_only_as_the_consumer_sampler_says(
        make_conn: Any, queue_name: str, run_worker: Any, consumer_sampler: str,
        records: bool) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    producer = TracingPlugin(tracer_provider=TracerProvider(sampler=ParentBased(ALWAYS_OFF)))
    conn = await make_conn(queue_name, plugins=[producer])
    router = Router()
    seen: list[tuple[Any, str]] = []

    @router.actor(name="work", queue=queue_name)
    async def work(msg: MessageDependency) -> None:
        found = trace.get_current_span().get_span_context()
        seen.append(((found.trace_id, found.span_id, found.trace_flags, found.is_remote),
                     msg.parameters.headers["traceparent"]))

    await Job("work", queue=queue_name, _connection=conn).enqueue()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler={
        "parent_based_default": ParentBased(ALWAYS_ON),
        "always_on": ALWAYS_ON,
        "parent_based_following_nothing": ParentBased(
            ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON),
    }[consumer_sampler])
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    conn.middleware.unregister(producer)
    conn.middleware.register(TracingPlugin(tracer_provider=provider))
    await run_worker(conn, router, 1)

    ((current, sent),) = seen
    _, trace_id, span_id, flags = sent.split("-")
    assert not int(flags, 16) & 1  # the producer's trace was not sampled
    spans = exporter.get_finished_spans()
    if records:  # the consumer's sampler records it anyway, in the producer's trace
        process = one(spans, f"process {queue_name}")
        assert ids(process)[0] == int(trace_id, 16) and parent_id(process) == int(span_id, 16)
        assert current[:2] == ids(process) and not current[3]
    else:  # nothing recorded; the producer's own context is current while the actor runs
        assert spans == ()
        assert current == (int(trace_id, 16), int(span_id, 16), int(flags, 16), True)


def _samplers() -> list[Any]:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

    return [
        pytest.param(ParentBased(ALWAYS_OFF), True, id="parentbased_always_off"),
        pytest.param(ParentBased(ALWAYS_ON), True, id="parentbased_always_on"),
        pytest.param(ParentBased(TraceIdRatioBased(0.5)), True, id="parentbased_ratio"),
        pytest.param(ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON), False,
                     id="parentbased_following_nothing"),
        pytest.param(ParentBased(ParentBased(ALWAYS_ON), remote_parent_not_sampled=ALWAYS_ON),
                     False, id="nested_parentbased"),
        pytest.param(ALWAYS_ON, False, id="always_on"),
        pytest.param(ALWAYS_OFF, False, id="always_off"),
        pytest.param(TraceIdRatioBased(0.5), False, id="ratio"),
    ]


@pytest.mark.parametrize(("sampler", "drops"), _samplers())
def test_only_a_parent_based_sampler_dropping_unsampled_parents_is_followed(
        sampler: Any, drops: bool) -> None:
    from repid_plugins.opentelemetry import drops_unsampled_remote_parents

    assert drops_unsampled_remote_parents(TracerProvider(sampler=sampler)) is drops
    assert drops_unsampled_remote_parents(object()) is False
