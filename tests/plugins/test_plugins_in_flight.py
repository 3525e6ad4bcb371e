"""Both plugins with 50,000 messages in flight at once: per-delivery state is kept on each
delivery (its stash), so nothing is evicted or mixed up however many messages are held, and
every process span has its own producer's span as parent and every outcome is counted."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry

from repid import Job, MessageDependency, Router, Worker
from repid_plugins.opentelemetry import MESSAGE_ID, RETRY_ATTEMPT, SETTLE_OPERATION, TracingPlugin
from repid_plugins.prometheus import MetricsPlugin

IN_FLIGHT = 50_000
#: every FAIL_EVERY-th job fails its first run and is retried once
FAIL_EVERY = 25

#: (name, trace id, span id, parent span id, message id, attempt, settle operation)
Record = tuple[str, int, int, "int | None", str, int, str]


class Keep(SpanProcessor):
    """Keeps a few fields of each finished span (not the spans: 100,000 of them are big)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Keep the fields the test checks."""
        attrs = span.attributes or {}
        assert span.context is not None
        self.records.append((
            span.name, span.context.trace_id, span.context.span_id,
            None if span.parent is None else span.parent.span_id,
            str(attrs.get(MESSAGE_ID)), int(str(attrs.get(RETRY_ATTEMPT, 0))),
            str(attrs.get(SETTLE_OPERATION, ""))))


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_50000_in_flight_keep_every_parent_and_outcome(
        make_conn: Any, queue_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "repid.worker")  # not 2,000 "retrying" lines
    thresholds = gc.get_threshold()
    gc.set_threshold(200_000)  # 50,000 held runs make every full collection slow
    try:
        await _run(make_conn, queue_name)
    finally:
        gc.set_threshold(*thresholds)


async def _run(make_conn: Any, queue_name: str) -> None:
    keep = Keep()
    provider = TracerProvider()
    provider.add_span_processor(keep)
    registry = CollectorRegistry()
    conn = await make_conn(queue_name, plugins=[TracingPlugin(tracer_provider=provider),
                                                MetricsPlugin(registry=registry)])
    router = Router()
    all_started = asyncio.Event()
    first_runs = 0
    most_held = 0

    @router.actor(name="hold", queue=queue_name, retry_policy=lambda n: 0)
    async def hold(i: int, msg: MessageDependency) -> None:
        nonlocal first_runs, most_held
        if msg.parameters.retries.already_tried == 0:
            first_runs += 1
            if first_runs == IN_FLIGHT:  # every message is taken and running: release all
                most_held = first_runs
                all_started.set()
        await all_started.wait()
        if i % FAIL_EVERY == 0 and msg.parameters.retries.already_tried == 0:
            raise ValueError("first try fails")

    started = time.monotonic()
    for i in range(IN_FLIGHT):
        await Job("hold", queue=queue_name, args={"i": i}, retries=1,
                  _connection=conn).enqueue()
    retried = IN_FLIGHT // FAIL_EVERY
    worker = Worker(routers=[router], messages_limit=IN_FLIGHT + retried,
                    tasks_limit=IN_FLIGHT, _connection=conn, graceful_shutdown_time=1.0,
                    handle_signals=[])
    await asyncio.wait_for(worker.run(), 40)
    assert most_held == IN_FLIGHT
    elapsed = time.monotonic() - started

    # tracing: each process span is a child of its own message's send span, same trace
    sends = {r[4]: r for r in keep.records if r[0] == f"send {queue_name}"}
    processes = [r for r in keep.records if r[0] == f"process {queue_name}"]
    assert len(sends) == IN_FLIGHT
    assert len(processes) == IN_FLIGHT + retried
    wrong = [p for p in processes
             if (p[1], p[3]) != (sends[p[4]][1], sends[p[4]][2])]
    assert wrong == []
    outcomes: dict[tuple[int, str], int] = {}
    for p in processes:
        outcomes[(p[5], p[6])] = outcomes.get((p[5], p[6]), 0) + 1
    assert outcomes == {(1, "ack"): IN_FLIGHT - retried, (1, "requeue"): retried,
                        (2, "ack"): retried}

    # metrics: final outcomes sum to the messages; attempts and returns apart
    qa = {"queue": queue_name, "actor": "hold"}

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**qa, **labels})

    assert value("repid_messages_processed_total", outcome="success") == IN_FLIGHT
    assert value("repid_messages_processed_total", outcome="dead") is None
    assert value("repid_actor_runs_total", result="failure") == retried
    assert value("repid_actor_runs_total", result="success") == IN_FLIGHT
    assert value("repid_messages_returned_total", reason="retry") == retried
    assert value("repid_messages_in_progress") == 0
    assert value("repid_message_processing_duration_seconds_count") == IN_FLIGHT + retried
    assert elapsed < 40
