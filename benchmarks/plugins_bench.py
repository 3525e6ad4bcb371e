"""Cost of the plugins, per mode as users deploy them, beside no plugin at all, in one run,
on each broker that is available.

Variants (each measured with no-op jobs, alternating, best round of each kept, so a noisy
neighbour on the machine hurts all alike):

- `none`: no plugin.
- `metrics`: MetricsPlugin only (a fresh CollectorRegistry).
- `dropped`: TracingPlugin with a sampler that drops every trace (`ParentBased(ALWAYS_OFF)`).
- `floor`: a bare plugin making only the send and process spans (no attributes, nothing
  else), every trace sampled: what the OpenTelemetry SDK alone costs.
- `attrs`: the same two spans with the names and attributes TracingPlugin gives them:
  what the SDK costs for the spans the plugin makes (full - attrs is the plugins' own
  share above the SDK).
- `full`: TracingPlugin (every trace sampled) + MetricsPlugin.

Traced variants use an SDK TracerProvider whose only span processor drops every span (spans
are still created, sampled and ended: the instrumentation's cost, not an exporter's).
`none` and `full` are measured again with jobs burning `--work-us` µs of CPU (default 200).

Targets (throughput lost vs none): metrics <= 15% in memory / 10% Redis / 5% RabbitMQ;
dropped <= 25% / 15% / 7%; full <= floor + 5 points; full with 200 µs jobs <= 20% / 20% / 15%.
(full - attrs is reported beside full - floor; the targets name the floor.)

Run it with: python benchmarks/plugins_bench.py [--jobs 20000] [--server-jobs 2000]
             [--rounds 3] [--brokers in_memory,redis,rabbitmq] [--work-us 200]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import NoopPlugin
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
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
from repid_plugins.opentelemetry import (
    ACTOR_NAME,
    DESTINATION,
    MESSAGE_ID,
    OPERATION_NAME,
    OPERATION_TYPE,
    RETRY_ATTEMPT,
    SETTLE_OPERATION,
    SYSTEM,
    W3C_PROPAGATOR,
    TracingPlugin,
)
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


class _Floor:
    """A bench plugin's tracer, on the given provider or a dropping one."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("floor", tracer_provider=provider or _dropping_provider())


class RequiredSpansOnly(_Floor):
    """Not a product plugin: the least work that makes the two spans a traced message must
    have: send (its context written into the headers) and process (parented on the
    producer's context, current while the actor runs). No attributes, no settle span, no
    error handling: the SDK's own cost."""

    @hookimpl(wrapper=True)
    def repid_enqueue(self, queue: str, params: Parameters) -> Generator[None, None, None]:
        span = self.tracer.start_span(queue, kind=SpanKind.PRODUCER)
        W3C_PROPAGATOR.inject(params.headers, context=trace.set_span_in_context(span))
        yield
        span.end()

    @hookimpl(wrapper=True)
    def repid_actor_run(self, actor: Actor, key: RoutingKey,
                        params: Parameters) -> Generator[None, ActorResult, ActorResult]:
        remote = W3C_PROPAGATOR.extract(params.headers, context=Context())
        span = self.tracer.start_span(key.queue, context=remote, kind=SpanKind.CONSUMER)
        token = otel_context.attach(trace.set_span_in_context(span, remote))
        result = yield
        otel_context.detach(token)
        span.end()
        return result


class SameSpans(_Floor):
    """Not a product plugin: the floor's two spans with the names and attributes
    TracingPlugin gives them (the messaging conventions' and repid's; the settle's
    operation set at the start instead of at the settle). What the SDK costs for the spans
    the plugin makes; a test checks that the names and attribute names are the plugin's."""

    @hookimpl(wrapper=True)
    def repid_enqueue(self, broker: MessageBroker, queue: str, key: RoutingKey,
                      params: Parameters) -> Generator[None, None, None]:
        span = self.tracer.start_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes={
            SYSTEM: broker.system, DESTINATION: queue, OPERATION_TYPE: "send",
            OPERATION_NAME: "send", ACTOR_NAME: key.topic, MESSAGE_ID: key.id_})
        W3C_PROPAGATOR.inject(params.headers, context=trace.set_span_in_context(span))
        yield
        span.end()

    @hookimpl(wrapper=True)
    def repid_actor_run(self, connection: Connection, actor: Actor, key: RoutingKey,
                        params: Parameters) -> Generator[None, ActorResult, ActorResult]:
        remote = W3C_PROPAGATOR.extract(params.headers, context=Context())
        span = self.tracer.start_span(
            f"process {key.queue}", context=remote, kind=SpanKind.CONSUMER, attributes={
                SYSTEM: connection.message_broker.system, DESTINATION: key.queue,
                OPERATION_TYPE: "process", OPERATION_NAME: "process", ACTOR_NAME: actor.name,
                MESSAGE_ID: key.id_, RETRY_ATTEMPT: params.retries.already_tried + 1,
                SETTLE_OPERATION: "ack"})
        token = otel_context.attach(trace.set_span_in_context(span, remote))
        result = yield
        otel_context.detach(token)
        span.end()
        return result


def metrics_only() -> list[object]:
    """MetricsPlugin on a fresh registry."""
    return [MetricsPlugin(registry=CollectorRegistry())]


def dropped_tracing() -> list[object]:
    """TracingPlugin on an SDK provider whose sampler drops every trace
    (`parentbased_always_off`, as `OTEL_TRACES_SAMPLER` sets it)."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(DropSpans())
    return [TracingPlugin(tracer_provider=provider)]


#: each variant's plugins, made fresh for every measurement
VARIANTS: dict[str, Callable[[], list[object]]] = {
    "none": list,
    "noop": lambda: [NoopPlugin()],
    "metrics": metrics_only,
    "dropped": dropped_tracing,
    "floor": lambda: [RequiredSpansOnly()],
    "attrs": lambda: [SameSpans()],
    "full": both_plugins,
}
#: the variants measured again with CPU work in each job (`--work-us`)
WORK_VARIANTS = ("none", "full")
#: the issue's targets: most throughput lost, in % of no plugins (floor: points above it)
TARGETS: dict[str, dict[str, float]] = {
    "metrics": {"in_memory": 15, "redis": 10, "rabbitmq": 5},
    "dropped": {"in_memory": 25, "redis": 15, "rabbitmq": 7},
    "full-floor": {"in_memory": 5, "redis": 5, "rabbitmq": 5},
    "full+work": {"in_memory": 20, "redis": 20, "rabbitmq": 15},
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


Best = dict[str, list[float]]


async def bench(make: Callable[[], MessageBroker], jobs: int, rounds: int,
                work_us: float) -> tuple[Best, Best]:
    """Alternating rounds of every variant on one broker, no-op jobs and (when `work_us`)
    jobs burning `work_us` of CPU; the best round of each: [enqueue/s, processing/s,
    CPU µs per job]."""
    noop: Best = {variant: [0.0, 0.0, 1e9] for variant in VARIANTS}
    work: Best = {variant: [0.0, 0.0, 1e9] for variant in WORK_VARIANTS}
    await measure(make, min(jobs, 500), [])  # warm up imports, connections, caches
    for _ in range(rounds):
        plan = [(noop, v, 0.0) for v in VARIANTS]
        if work_us:
            plan += [(work, v, work_us) for v in WORK_VARIANTS]
        for best, variant, us in plan:
            e, p, c = await measure(make, jobs, VARIANTS[variant](), us)
            old = best[variant]
            best[variant] = [max(old[0], e), max(old[1], p), min(old[2], c)]
    return noop, work


def lost(variant: float, base: float) -> float:
    """Throughput lost, in % of `base`."""
    return (1 - variant / base) * 100


def report(results: dict[str, tuple[Best, Best]], work_us: float) -> None:
    """The table of rates and losses, and which targets are met."""
    print(f"\n{'broker':<10}{'jobs':<9}" + "".join(f"{v:>12}" for v in VARIANTS)
          + "   (processing jobs/s, best round)")
    for kind, (noop, work) in results.items():
        print(f"{kind:<10}{'no-op':<9}" + "".join(f"{noop[v][1]:>12,.0f}" for v in VARIANTS))
        print(f"{'':<10}{'enqueue':<9}" + "".join(f"{noop[v][0]:>12,.0f}" for v in VARIANTS))
        if work_us:
            print(f"{'':<10}{f'{work_us:g} µs':<9}" + "".join(
                f"{work[v][1]:>12,.0f}" if v in work else f"{'':>12}" for v in VARIANTS))
    print(f"\n{'broker':<10}{'lost vs none:':<14}{'metrics':>9}{'dropped':>9}{'floor':>9}"
          f"{'attrs':>9}{'full':>9}{'full-floor':>12}{'full-attrs':>12}{'full+work':>11}"
          "   (target)")
    verdicts: list[str] = []
    for kind, (noop, work) in results.items():
        base = noop["none"][1]
        figures = {v: lost(noop[v][1], base)
                   for v in ("metrics", "dropped", "floor", "attrs", "full")}
        figures["full-floor"] = figures["full"] - figures["floor"]
        figures["full-attrs"] = figures["full"] - figures["attrs"]
        if work_us:
            figures["full+work"] = lost(work["full"][1], work["none"][1])
        cells = "".join(f"{figures[v]:>8.1f}%"
                        for v in ("metrics", "dropped", "floor", "attrs", "full"))
        cells += f"{figures['full-floor']:>10.1f}pt{figures['full-attrs']:>10.1f}pt"
        cells += f"{figures['full+work']:>10.1f}%" if "full+work" in figures else f"{'':>11}"
        print(f"{kind:<10}{'':<14}{cells}")
        for name, limits in TARGETS.items():
            if name in figures and kind in limits:
                ok = figures[name] <= limits[kind]
                unit = "pt" if name == "full-floor" else "%"
                verdicts.append(f"{kind:<10}{name:<11}{figures[name]:>6.1f}{unit} <= "
                                f"{limits[kind]:g}{unit}: {'met' if ok else 'NOT met'}")
    print("\n" + "\n".join(verdicts))
    print(f"\n{'broker':<10}{'CPU per job:':<14}" + "".join(f"{v:>9}" for v in VARIANTS)
          + "   (µs of this process per no-op job, best round; lost = 1 - none/variant)")
    for kind, (noop, _) in results.items():
        base = noop["none"][2]
        print(f"{kind:<10}{'':<14}" + "".join(f"{noop[v][2]:>9.1f}" for v in VARIANTS))
        print(f"{'':<10}{'lost':<14}" + "".join(
            f"{lost(base, noop[v][2]):>8.1f}%" for v in VARIANTS))
    print("\nmetrics = MetricsPlugin; dropped = TracingPlugin with a sampler dropping every "
          "trace; floor = send + process spans made by a bare plugin (the SDK's own cost); "
          "attrs = the same spans with TracingPlugin's names and attributes; "
          "full = TracingPlugin (every trace sampled, spans dropped by the processor) + "
          "MetricsPlugin; full-floor, full-attrs = points lost above those.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per round, in memory")
    parser.add_argument("--server-jobs", type=int, default=2_000,
                        help="jobs per round on Redis and RabbitMQ")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brokers", default="in_memory,redis,rabbitmq")
    parser.add_argument("--work-us", type=float, default=200.0,
                        help="CPU microseconds each job burns in the work variants "
                             "(0: skip them)")
    args = parser.parse_args()

    results: dict[str, tuple[Best, Best]] = {}
    for kind in args.brokers.split(","):
        make = broker_factory(kind)
        if isinstance(make, str):
            print(f"{kind}: skipped, {make}")
            continue
        jobs = args.jobs if kind == "in_memory" else args.server_jobs
        results[kind] = asyncio.run(bench(make, jobs, args.rounds, args.work_us))
    report(results, args.work_us)


if __name__ == "__main__":
    main()
