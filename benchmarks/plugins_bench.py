"""Cost of the plugins: no-op processing (and enqueue) with TracingPlugin + MetricsPlugin
registered, beside no plugin at all, in the same run, on each broker that is available.

Tracing uses an SDK TracerProvider whose only span processor drops every span (spans are
still created, sampled and ended: the instrumentation's cost, not an exporter's); metrics go
to a fresh CollectorRegistry. The variants alternate and each keeps its best round, so a
noisy neighbour on the machine hurts all alike. Target: the plugins cost under 30%.

A third variant, "SDK floor", registers a bare plugin that makes only the spans the tracing
contract requires of a processed message (its process span, child of the producer's
context, current while the actor runs, and its ack span), with no attributes and nothing
else: what the OpenTelemetry SDK alone costs, whatever the plugin around it does.

Run it with: python benchmarks/plugins_bench.py [--jobs 20000] [--server-jobs 2000]
             [--rounds 2] [--brokers in_memory,redis,rabbitmq] [--work-us 0]

`--work-us N` makes each job burn N µs of CPU, to see the plugins' cost next to real work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from repid import (
    Actor,
    ActorResult,
    Connection,
    InMemoryMessageBroker,
    Job,
    MessageBroker,
    Parameters,
    Router,
    RoutingKey,
    Worker,
    hookimpl,
)
from repid_plugins.opentelemetry import TracingPlugin
from repid_plugins.prometheus import MetricsPlugin

REDIS_DSN = os.environ.get("REPID_TEST_REDIS_DSN", "redis://127.0.0.1:6379/0")
AMQP_DSN = os.environ.get("REPID_TEST_AMQP_DSN", "amqp://guest:guest@127.0.0.1:5672/")


class DropSpans(SpanProcessor):
    """A span processor that keeps nothing: measures span creation, not export."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Drop the finished span."""


def _dropping_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(DropSpans())
    return provider


def both_plugins() -> list[object]:
    """TracingPlugin on a dropping SDK provider and MetricsPlugin on a fresh registry."""
    return [TracingPlugin(tracer_provider=_dropping_provider()),
            MetricsPlugin(registry=CollectorRegistry())]


class RequiredSpansOnly:
    """Not a product plugin: the least work that makes the spans a processed message must
    have (process, parented on the producer's context and current during the run; ack,
    child of it), plus the send span that gives the consumer a parent. No attributes, no
    error handling, no bounds: the SDK's own cost."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("floor", tracer_provider=provider or _dropping_provider())
        self.parents: dict[str, Context] = {}

    @hookimpl(wrapper=True)
    def repid_enqueue(self, queue: str, params: Parameters) -> Generator[None, None, None]:
        span = self.tracer.start_span(queue, kind=SpanKind.PRODUCER)
        propagate.inject(params.headers, context=trace.set_span_in_context(span))
        yield
        span.end()

    @hookimpl(wrapper=True)
    def repid_actor_run(self, actor: Actor, key: RoutingKey,
                        params: Parameters) -> Generator[None, ActorResult, ActorResult]:
        remote = propagate.extract(params.headers, context=Context())
        span = self.tracer.start_span(key.queue, context=remote, kind=SpanKind.CONSUMER)
        ctx = self.parents[key.id_] = trace.set_span_in_context(span, remote)
        token = otel_context.attach(ctx)
        result = yield
        otel_context.detach(token)
        span.end()
        return result

    @hookimpl(wrapper=True)
    def repid_ack(self, queue: str, key: RoutingKey) -> Generator[None, None, None]:
        span = self.tracer.start_span(queue, context=self.parents.pop(key.id_, None),
                                      kind=SpanKind.CLIENT)
        yield
        span.end()


VARIANTS: dict[str, Callable[[], list[object]]] = {
    "none": list,
    "both": both_plugins,
    "floor": lambda: [RequiredSpansOnly()],
}


def _reachable(dsn: str, port: int) -> bool:
    parts = urlsplit(dsn)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), 1):
            return True
    except OSError:
        return False


def broker_factory(kind: str) -> Callable[[], MessageBroker] | str:
    """A maker of brokers of `kind`, or why there is none here."""
    if kind == "in_memory":
        return InMemoryMessageBroker
    module_name, class_name, dsn, port = {
        "redis": ("repid.brokers.redis", "RedisMessageBroker", REDIS_DSN, 6379),
        "rabbitmq": ("repid.brokers.rabbitmq", "RabbitMessageBroker", AMQP_DSN, 5672),
    }[kind]
    try:
        cls: Any = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        return f"broker not importable ({exc})"
    if not _reachable(dsn, port):
        return f"server not reachable at {dsn.split('@')[-1]}"
    return lambda: cls(dsn)


#: a worker that has not handled its jobs by then is reported, not waited for forever
RUN_TIMEOUT = 120.0


async def measure(make: Callable[[], MessageBroker], jobs: int, plugins: list[object],
                  work_us: float = 0.0) -> tuple[float, float, float]:
    """(enqueue jobs/s, no-op processing jobs/s, processing CPU µs per job) of `jobs` jobs
    with these plugins."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    router = Router()

    work_s = work_us / 1e6

    @router.actor(name="noop", queue=queue)
    async def noop() -> None:
        """Does nothing (measures the framework, not the job), or burns `work_us` of CPU."""
        if work_s:
            end = time.perf_counter() + work_s
            while time.perf_counter() < end:
                pass

    connection = Connection(make(), plugins=plugins)
    await connection.connect()
    try:
        await connection.message_broker.queue_declare(queue)
        job = Job("noop", queue=queue, _connection=connection)
        gc.collect()
        start = time.perf_counter()
        for _ in range(jobs):
            await job.enqueue()
        enqueue_rate = jobs / (time.perf_counter() - start)
        worker = Worker(routers=[router], messages_limit=jobs, handle_signals=[],
                        _connection=connection)
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            await asyncio.wait_for(worker.run(), RUN_TIMEOUT)
        except asyncio.TimeoutError:
            raise SystemExit(f"worker handled {worker.runner and worker.runner.processed} of "
                             f"{jobs} jobs in {RUN_TIMEOUT:g} s; broker stuck?") from None
        process_rate = jobs / (time.perf_counter() - start)
        cpu_per_job = (time.process_time() - cpu) / jobs * 1e6
        if not connection.is_open:
            await connection.connect()
        await connection.message_broker.queue_delete(queue)
    finally:
        await connection.disconnect()
    return enqueue_rate, process_rate, cpu_per_job


Row = tuple[str, str, float, float, float, float, float]


async def bench(kind: str, make: Callable[[], MessageBroker], jobs: int, rounds: int,
                work_us: float = 0.0) -> list[Row]:
    """Alternating rounds of both variants on one broker; the best round of each."""
    best = {variant: [0.0, 0.0, 1e9] for variant in VARIANTS}
    await measure(make, min(jobs, 500), [])  # warm up imports, connections, caches
    for _ in range(rounds):
        for variant, plugins in VARIANTS.items():
            e, p, c = await measure(make, jobs, plugins(), work_us)
            old = best[variant]
            best[variant] = [max(old[0], e), max(old[1], p), min(old[2], c)]
    none, both, floor = best["none"], best["both"], best["floor"]
    label = "processing" if work_us else "no-op processing"
    return [(kind, "enqueue", none[0], both[0], floor[0], 0.0, 0.0),
            (kind, label, none[1], both[1], floor[1], none[2], both[2])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per round, in memory")
    parser.add_argument("--server-jobs", type=int, default=2_000,
                        help="jobs per round on Redis and RabbitMQ")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--brokers", default="in_memory,redis,rabbitmq")
    parser.add_argument("--work-us", type=float, default=0.0,
                        help="CPU microseconds each job burns (0: a no-op actor)")
    args = parser.parse_args()

    rows: list[Row] = []
    for kind in args.brokers.split(","):
        make = broker_factory(kind)
        if isinstance(make, str):
            print(f"{kind}: skipped, {make}")
            continue
        jobs = args.jobs if kind == "in_memory" else args.server_jobs
        rows += asyncio.run(bench(kind, make, jobs, args.rounds, args.work_us))

    if args.work_us:
        print(f"\neach job burns {args.work_us:g} µs of CPU")
    print(f"\n{'broker':<10}{'operation':<18}{'no plugins':>14}{'tracing+metrics':>18}"
          f"{'overhead':>10}{'SDK floor':>12}{'CPU µs/job (none / both)':>28}")
    for kind, what, none, both, floor, cpu_none, cpu_both in rows:
        overhead = (1 - both / none) * 100
        floor_cost = (1 - floor / none) * 100
        cpu = f"{cpu_none:>8.1f} / {cpu_both:.1f}" if cpu_none else ""
        print(f"{kind:<10}{what:<18}{none:>12,.0f}/s{both:>16,.0f}/s{overhead:>9.1f}%"
              f"{floor_cost:>11.1f}%{cpu:>22}")
    print("\noverhead = throughput lost with both plugins registered (best of the rounds); "
          "target: under 30% for no-op processing.\nSDK floor = throughput lost to the "
          "required spans alone, made by a bare plugin (no attributes, no metrics).")


if __name__ == "__main__":
    main()
