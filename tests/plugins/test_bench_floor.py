"""The benchmark's "SDK floor" plugins make the spans they claim to (send and process, one
trace), so the floor it reports is the cost of the two spans a traced message must have,
and the attributed floor gives them the names and attributes TracingPlugin does
(benchmarks/plugins_bench.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from repid import Job, Router

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from plugins_bench import RequiredSpansOnly, SameSpans

from repid_plugins.opentelemetry import TracingPlugin


def _recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_floor_plugin_makes_send_and_process_spans_in_one_trace(
        make_conn: Any, queue_name: str, run_worker: Any) -> None:
    provider, exporter = _recording()
    conn = await make_conn(queue_name, plugins=[RequiredSpansOnly(provider)])
    router = Router()
    seen: list[bool] = []

    @router.actor(name="work", queue=queue_name)
    async def work() -> None:
        from opentelemetry import trace
        seen.append(trace.get_current_span().get_span_context().is_valid)

    await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)

    spans = {span.kind: span for span in exporter.get_finished_spans()}
    assert len(exporter.get_finished_spans()) == 2
    send, process = spans[SpanKind.PRODUCER], spans[SpanKind.CONSUMER]
    assert send.context and process.context
    assert send.context.trace_id == process.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert seen == [True]  # the process span was current while the actor ran


async def _spans_of(plugin: Any, exporter: InMemorySpanExporter, make_conn: Any,
                    queue_name: str, run_worker: Any) -> dict[SpanKind, tuple[str, set[str]]]:
    """Each span kind's name and attribute names, for one job run with `plugin`."""
    conn = await make_conn(queue_name, plugins=[plugin])
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> None:
        """Does nothing."""

    await Job("work", queue=queue_name, _connection=conn).enqueue()
    await run_worker(conn, router, 1)
    return {span.kind: (span.name, set(span.attributes or {}))
            for span in exporter.get_finished_spans()}


async def test_attributed_floor_makes_the_plugins_spans(
        make_conn: Any, queue_name: str, run_worker: Any) -> None:
    provider, exporter = _recording()
    plugin_spans = await _spans_of(TracingPlugin(tracer_provider=provider), exporter,
                                   make_conn, queue_name, run_worker)
    provider, exporter = _recording()
    floor_spans = await _spans_of(SameSpans(provider), exporter, make_conn, queue_name,
                                  run_worker)
    assert set(plugin_spans) == {SpanKind.PRODUCER, SpanKind.CONSUMER}
    assert floor_spans == plugin_spans
