"""The benchmark's "SDK floor" plugin makes the spans it claims to (send and process, one
trace), so the floor it reports is the cost of the two spans a traced message must have
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
from plugins_bench import RequiredSpansOnly


async def test_floor_plugin_makes_send_and_process_spans_in_one_trace(
        make_conn: Any, queue_name: str, run_worker: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
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
