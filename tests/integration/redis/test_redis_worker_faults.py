"""A real Worker on Redis through faults: a job longer than several leases runs once, a
Redis restarted empty is declared again and consumed, and a Redis SIGKILLed under load
with its append-only file loses no job whose enqueue returned, nor a metric or a span of
the plugins on it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from redis_helpers import running, until

from repid import Connection, Job, RedisMessageBroker, Router, Worker
from repid.brokers.base import DEAD_REASON_HEADER
from repid.data import MessageCategory
from repid.errors import EnqueueNotConfirmedError, QueueNotDeclaredError
from repid.queue import Queue
from tests.servers.redis_server import PrivateRedis

pytestmark = pytest.mark.integration

MakeRedis = Callable[..., PrivateRedis]


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def connection_to(dsn: str, lease: float) -> AsyncIterator[Connection]:
    conn = Connection(RedisMessageBroker(dsn, lease_time=timedelta(seconds=lease),
                                         retries=2, socket_timeout=2.0,
                                         socket_connect_timeout=2.0))
    await conn.connect()
    try:
        yield conn
    finally:
        await conn.disconnect()


def _sleep_in_a_process(seconds: float) -> None:
    """A process-pool actor's body (module level, so the pool can pickle it)."""
    time.sleep(seconds)


@pytest.mark.parametrize("kind", ["async", "sync", "process"])
async def test_a_job_running_three_leases_runs_once(redis_dsn: str, kind: str) -> None:
    lease = 0.5
    queue = _name("long")
    runs: list[float] = []
    router = Router()
    if kind == "async":
        @router.actor(queue=queue)
        async def long_job() -> None:
            runs.append(time.monotonic())
            await asyncio.sleep(3 * lease + 0.2)
    elif kind == "sync":
        @router.actor(queue=queue)
        def long_job() -> None:
            runs.append(time.monotonic())
            time.sleep(3 * lease + 0.2)
    else:
        router.actor(name="long_job", queue=queue, run_in_process=True)(_sleep_in_a_process)

    async with connection_to(redis_dsn, lease) as conn, connection_to(redis_dsn, lease) as rival:
        await Queue(queue, _connection=conn).declare()
        try:
            args = {"seconds": 3 * lease + 0.2} if kind == "process" else None
            await Job("long_job", queue=queue, timeout=60, args=args, _connection=conn).enqueue()
            worker = Worker(routers=[router], tasks_limit=2, messages_limit=1,
                            graceful_shutdown_time=5, _connection=conn)
            async with running(worker) as task:
                if kind == "process":  # the run is in another process: watch its lease
                    stats = conn.message_broker.queue_stats
                    for _ in range(100):
                        if (await stats(queue))["in_flight"] == 1:
                            break
                        await asyncio.sleep(0.05)
                    runs.append(time.monotonic())
                await until(lambda: bool(runs), 5, "the job to start")
                # a second worker's consumer waits on the same queue the whole time
                other = rival.message_broker.consume(queue, max_unacked_messages=5)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(other.__anext__(), 3 * lease + 0.5)
                await other.finish()
                await asyncio.wait_for(asyncio.shield(task), 10)
            assert len(runs) == 1
            stats = await conn.message_broker.queue_stats(queue)
            assert stats == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
        finally:
            await Queue(queue, _connection=conn).delete()


def _recorder(queue: str, ran: set[str]) -> Router:
    router = Router()

    @router.actor(queue=queue)
    async def record(n: str) -> None:
        ran.add(n)

    return router


async def test_worker_declares_again_after_redis_restarts_empty(
        private_redis: MakeRedis) -> None:
    server = private_redis()
    queue = _name("q")
    ran: set[str] = set()
    async with connection_to(server.dsn, 2.0) as producer, \
            connection_to(server.dsn, 2.0) as conn:
        await Queue(queue, _connection=producer).declare()
        worker = Worker(routers=[_recorder(queue, ran)], tasks_limit=10,
                        graceful_shutdown_time=2, _connection=conn)
        async with running(worker):
            await Job("record", queue=queue, args={"n": "before"},
                      _connection=producer).enqueue()
            await until(lambda: "before" in ran, 5, "the first job")
            server.restart(wipe=True)
            # the queue is gone until the worker declares it again
            stop = time.monotonic() + 15
            while True:
                try:
                    await Job("record", queue=queue, args={"n": "after"},
                              _connection=producer).enqueue()
                    break
                except (QueueNotDeclaredError, EnqueueNotConfirmedError):
                    assert time.monotonic() < stop, "the worker never declared the queue again"
                    await asyncio.sleep(0.1)
            await until(lambda: "after" in ran, 10, "the job enqueued after the restart")


async def test_sigkilled_redis_with_aof_loses_no_confirmed_job(private_redis: MakeRedis) -> None:
    server = private_redis(appendonly=True)
    queue = _name("q")
    ran: set[str] = set()
    confirmed: list[str] = []
    async with connection_to(server.dsn, 2.0) as producer, \
            connection_to(server.dsn, 2.0) as conn:
        await Queue(queue, _connection=producer).declare()
        worker = Worker(routers=[_recorder(queue, ran)], tasks_limit=50,
                        graceful_shutdown_time=2, _connection=conn)

        async def produce(seconds: float) -> None:
            stop = time.monotonic() + seconds
            n = 0
            while time.monotonic() < stop:
                n += 1
                id_ = f"job-{n}"
                try:
                    await Job("record", queue=queue, args={"n": id_},
                              _connection=producer).enqueue()
                except (EnqueueNotConfirmedError, QueueNotDeclaredError):
                    await asyncio.sleep(0.05)  # not confirmed: not counted
                else:
                    confirmed.append(id_)
                await asyncio.sleep(0.002)

        async with running(worker):
            producing = asyncio.create_task(produce(4.0))
            await asyncio.sleep(1.5)
            assert confirmed, "nothing was enqueued before the kill"
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            await producing
            kill_count = len(confirmed)
            assert kill_count > 100
            await until(lambda: set(confirmed) <= ran, 20,
                        "every confirmed job to run")


async def test_worker_dead_letters_a_message_delivered_too_often(redis_dsn: str) -> None:
    queue = _name("q")
    ran: set[str] = set()
    router = Router()

    @router.actor(queue=queue, max_deliveries=2)
    async def record(n: str) -> None:
        ran.add(n)

    async with connection_to(redis_dsn, 0.3) as conn:
        broker = conn.message_broker
        await Queue(queue, _connection=conn).declare()
        try:
            await Job("record", queue=queue, args={"n": "x"}, _connection=conn).enqueue()
            # two takers die holding it: two leases run out
            for _ in range(2):
                taker = broker.consume(queue, max_unacked_messages=1)
                await asyncio.wait_for(taker.__anext__(), 4)
                heartbeat = taker._heartbeat  # type: ignore[attr-defined]
                heartbeat.cancel()
                await asyncio.wait({heartbeat})
            worker = Worker(routers=[router], messages_limit=1, graceful_shutdown_time=2,
                            _connection=conn)
            await asyncio.wait_for(worker.run(), 10)
            assert ran == set()  # the third delivery is not run: dead-lettered with why
            dead = [m async for m in broker.consume(queue, category=MessageCategory.DEAD,
                                                    stop_when_empty=True)]
            assert len(dead) == 1
            assert "delivered 3 times" in dead[0][2].headers[DEAD_REASON_HEADER]
        finally:
            await Queue(queue, _connection=conn).delete()


async def test_plugins_through_a_sigkilled_redis_count_and_end_every_run(
        private_redis: MakeRedis) -> None:
    """Metrics and tracing on a worker whose Redis is SIGKILLed under load and comes back:
    every successful run ends in one counted outcome or one counted failed ack (whose
    message runs again), nothing stays "in progress", and every run's process span ends,
    in its producer's trace."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind
    from prometheus_client import CollectorRegistry

    from repid_plugins.opentelemetry import TracingPlugin
    from repid_plugins.prometheus import MetricsPlugin

    server = private_redis(appendonly=True)
    queue = _name("q")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = MetricsPlugin(registry=CollectorRegistry())
    ran: set[str] = set()
    confirmed: list[str] = []
    async with connection_to(server.dsn, 1.0) as producer, \
            connection_to(server.dsn, 1.0) as conn:
        producer.middleware.register(TracingPlugin(tracer_provider=provider))
        conn.middleware.register(TracingPlugin(tracer_provider=provider))
        conn.middleware.register(metrics)
        await Queue(queue, _connection=producer).declare()
        router = Router()

        @router.actor(queue=queue)
        async def record(n: str) -> None:
            await asyncio.sleep(0.02)  # many runs in flight when Redis dies
            ran.add(n)

        worker = Worker(routers=[router], tasks_limit=50, graceful_shutdown_time=2,
                        _connection=conn)

        async def produce(seconds: float) -> None:
            stop = time.monotonic() + seconds
            n = 0
            while time.monotonic() < stop:
                n += 1
                try:
                    await Job("record", queue=queue, args={"n": f"job-{n}"},
                              _connection=producer).enqueue()
                except (EnqueueNotConfirmedError, QueueNotDeclaredError):
                    await asyncio.sleep(0.05)
                else:
                    confirmed.append(f"job-{n}")
                await asyncio.sleep(0.002)

        async with running(worker):
            producing = asyncio.create_task(produce(3.0))
            await asyncio.sleep(1.2)
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            await producing
            await until(lambda: set(confirmed) <= ran, 20, "every confirmed job to run")
            await asyncio.sleep(0.5)  # the last settles

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, {"queue": queue, **labels})
        return found or 0.0

    runs = value("repid_actor_runs_total", actor="record", result="success")
    acked = value("repid_messages_processed_total", actor="record", outcome="success")
    failed_acks = metrics.registry.get_sample_value("repid_broker_call_failures_total",
                                                    {"call": "ack"}) or 0.0
    assert len(confirmed) > 100
    assert runs >= len(set(confirmed))
    assert acked + failed_acks == runs  # each run: one ack, counted once either way
    assert value("repid_actor_runs_total", actor="record", result="failure") == 0
    assert value("repid_messages_in_progress", actor="record") == 0
    assert value("repid_message_processing_duration_seconds_count", actor="record") == runs
    spans = exporter.get_finished_spans()
    sends = {s.context.trace_id for s in spans if s.kind == SpanKind.PRODUCER and s.context}
    processes = [s for s in spans if s.kind == SpanKind.CONSUMER]
    assert len(processes) == runs  # every run's span ended, the failed acks' included
    assert all(s.context is not None and s.context.trace_id in sends for s in processes)
