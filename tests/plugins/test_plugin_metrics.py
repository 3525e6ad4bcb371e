"""MetricsPlugin: counters equal the truth after a mixed run (final outcomes sum to the
messages, attempts and returns counted apart), `/metrics` over HTTP from a running worker,
and one sum over two worker processes in multiprocess mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from repid import HealthCheckServerSettings, Job, MessageDependency, Router, Worker
from repid_plugins.prometheus import (
    PROCESSING_BUCKETS,
    MetricsPlugin,
    mark_process_dead,
    setup_multiprocess,
)

ROOT = Path(__file__).resolve().parents[2]


def mixed_router(queue: str) -> Router:
    """An actor whose argument says how the run goes: ok, fail (always), flaky (fails on the
    first try), reject (rejects itself on its first delivery)."""
    router = Router()
    rejected: set[str] = set()

    @router.actor(name="work", queue=queue, retry_policy=lambda n: 0)
    async def work(mode: str, msg: MessageDependency) -> None:
        if mode == "fail":
            raise ValueError("always fails")
        if mode == "flaky" and msg.parameters.retries.already_tried == 0:
            raise KeyError("first try fails")
        if mode == "reject" and msg.key.id_ not in rejected:
            rejected.add(msg.key.id_)
            await msg.reject()

    return router


async def enqueue_mixed(conn: Any, queue: str) -> None:
    for mode in ("ok", "ok", "ok", "fail", "fail"):
        await Job("work", queue=queue, args={"mode": mode}, _connection=conn).enqueue()
    await Job("work", queue=queue, args={"mode": "flaky"}, retries=1,
              _connection=conn).enqueue()
    await Job("work", queue=queue, args={"mode": "reject"}, _connection=conn).enqueue()


async def test_counters_equal_the_truth(make_conn: Any, queue_name: str,
                                        run_worker: Any) -> None:
    registry = CollectorRegistry()
    conn = await make_conn(queue_name, plugins=[MetricsPlugin(registry=registry)])
    await enqueue_mixed(conn, queue_name)
    await run_worker(conn, mixed_router(queue_name), 9)  # 7 messages, 1 retry, 1 redelivery

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    q = {"queue": queue_name}
    qa = {"queue": queue_name, "actor": "work"}
    assert value("repid_messages_enqueued_total", **q) == 7
    outcomes = {o: value("repid_messages_processed_total", **qa, outcome=o)
                for o in ("success", "dead", "failed", "failure", "retried", "rejected")}
    # final outcomes only: one per message, so they sum to the 7 messages
    assert outcomes == {"success": 5, "dead": 2, "failed": None, "failure": None,
                        "retried": None, "rejected": None}
    runs = {r: value("repid_actor_runs_total", **qa, result=r) for r in ("success", "failure")}
    # an eager reject ends its run as a failure with no exception, as in repid 1.x
    assert runs == {"success": 5, "failure": 4}
    returned = {r: value("repid_messages_returned_total", **qa, reason=r)
                for r in ("retry", "reject", "schedule")}
    assert returned == {"retry": 1, "reject": 1, "schedule": None}
    assert value("repid_actor_exceptions_total", **qa, exception_type="ValueError") == 2
    assert value("repid_actor_exceptions_total", **qa, exception_type="KeyError") == 1
    assert value("repid_messages_in_progress", **qa) == 0
    assert value("repid_message_processing_duration_seconds_count", **qa) == 9
    assert value("repid_message_processing_duration_seconds_bucket", **qa, le="900.0") == 9
    assert value("repid_message_delivery_lag_seconds_count", **q) == 9
    calls = {c: value("repid_broker_call_duration_seconds_count", call=c)
             for c in ("enqueue", "ack", "nack", "requeue", "reject")}
    assert calls == {"enqueue": 7, "ack": 5, "nack": 2, "requeue": 1, "reject": 1}
    assert value("repid_broker_call_duration_seconds_count", call="consume") is None


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_prefix_and_buckets(make_conn: Any, queue_name: str, run_worker: Any) -> None:
    registry = CollectorRegistry()
    conn = await make_conn(queue_name, plugins=[MetricsPlugin(registry=registry,
                                                              prefix="jobs")])
    await Job("work", queue=queue_name, args={"mode": "ok"}, _connection=conn).enqueue()
    await run_worker(conn, mixed_router(queue_name), 1)
    labels = {"queue": queue_name, "actor": "work", "outcome": "success"}
    assert registry.get_sample_value("jobs_messages_processed_total", labels) == 1
    assert registry.get_sample_value("repid_messages_processed_total", labels) is None
    assert PROCESSING_BUCKETS[-1] == 900.0  # up to 15 minutes, in seconds


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_metrics_served_over_http_by_the_worker(make_conn: Any, queue_name: str,
                                                      free_port: int) -> None:
    registry = CollectorRegistry()
    conn = await make_conn(queue_name, plugins=[MetricsPlugin(registry=registry)])
    router = mixed_router(queue_name)
    worker = Worker(routers=[router], _connection=conn, handle_signals=[],
                    run_health_check_server=True,
                    health_check_server_settings=HealthCheckServerSettings(
                        address="127.0.0.1", port=free_port))
    running = asyncio.create_task(worker.run())
    try:
        await enqueue_mixed(conn, queue_name)
        labels = {"queue": queue_name, "actor": "work", "outcome": "dead"}
        for _ in range(200):
            if registry.get_sample_value("repid_messages_processed_total", labels) == 2:
                break
            await asyncio.sleep(0.02)

        def scrape(path: str) -> tuple[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{free_port}{path}", timeout=5) as r:
                return r.headers["Content-Type"], r.read().decode()

        content_type, body = await asyncio.to_thread(scrape, "/metrics")
        health = await asyncio.to_thread(scrape, "/healthz")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 10)

    assert content_type.startswith("text/plain")
    assert health[1] == "OK"
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert {"repid_messages_enqueued", "repid_messages_processed", "repid_actor_exceptions",
            "repid_actor_runs", "repid_messages_returned",
            "repid_messages_in_progress", "repid_message_processing_duration_seconds",
            "repid_message_delivery_lag_seconds", "repid_broker_call_duration_seconds",
            } <= set(families)
    dead = [s for s in families["repid_messages_processed"].samples
            if s.labels.get("outcome") == "dead" and s.labels.get("queue") == queue_name]
    assert [s.value for s in dead] == [2.0]


def test_setup_multiprocess_refuses_after_import(tmp_path: Path) -> None:
    assert "prometheus_client" in sys.modules  # imported by this module
    with pytest.raises(RuntimeError, match="before prometheus_client is imported"):
        setup_multiprocess(tmp_path / "metrics")
    mark_process_dead(os.getpid(), tmp_path)  # nothing there: a no-op, no error


CHILD = textwrap.dedent("""
    import asyncio, sys
    from repid import Connection, InMemoryMessageBroker, Job, Router, Worker
    from repid_plugins.prometheus import MetricsPlugin

    async def main(jobs: int) -> None:
        conn = Connection(InMemoryMessageBroker(), plugins=[MetricsPlugin()])
        router = Router()

        @router.actor(name="work", queue="mp")
        async def work(fail: bool) -> None:
            if fail:
                raise ValueError("boom")

        await conn.connect()
        await conn.message_broker.queue_declare("mp")
        for i in range(jobs):
            await Job("work", queue="mp", args={"fail": i == 0}, _connection=conn).enqueue()
        await Worker(routers=[router], messages_limit=jobs, handle_signals=[],
                     _connection=conn).run()

    asyncio.run(main(int(sys.argv[1])))
""")

SUPERVISOR = textwrap.dedent("""
    import subprocess, sys
    from repid_plugins.prometheus import MetricsPlugin, mark_process_dead, setup_multiprocess

    setup_multiprocess(sys.argv[1])  # before anything imports prometheus_client
    children = [subprocess.Popen([sys.executable, "-c", sys.argv[2], str(n)])
                for n in (3, 4)]
    for child in children:
        assert child.wait(timeout=60) == 0
        mark_process_dead(child.pid)
    content_type, body = MetricsPlugin().render()  # what its /metrics would serve
    sys.stdout.write(body.decode())
""")


def test_two_processes_report_the_sum(tmp_path: Path) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale file of an earlier run")
    env = {k: v for k, v in os.environ.items() if k.lower() != "prometheus_multiproc_dir"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", SUPERVISOR, str(directory), CHILD],
                          env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert not (directory / "counter_999999.db").exists()  # wiped at start

    def total(body: str, family: str, **labels: str) -> float:
        return sum(s.value for f in text_string_to_metric_families(body) if f.name == family
                   for s in f.samples if s.name == f"{family}_total"
                   and labels.items() <= s.labels.items())

    served = done.stdout
    assert total(served, "repid_messages_enqueued", queue="mp") == 7
    assert total(served, "repid_messages_processed", outcome="success") == 5
    assert total(served, "repid_messages_processed", outcome="dead") == 2

    # the test process reads the same files with MultiProcessCollector
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    collected = generate_latest(registry).decode()
    assert total(collected, "repid_actor_runs", result="failure") == 2
    assert total(collected, "repid_messages_processed") == 7
    assert registry.get_sample_value("repid_message_processing_duration_seconds_count",
                                     {"queue": "mp", "actor": "work"}) == 7
    assert registry.get_sample_value("repid_messages_in_progress",
                                     {"queue": "mp", "actor": "work"}) in (None, 0.0)


@pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)
async def test_recurring_runs_are_final_outcomes(make_conn: Any, queue_name: str,
                                                 run_worker: Any) -> None:
    registry = CollectorRegistry()
    conn = await make_conn(queue_name, plugins=[MetricsPlugin(registry=registry)])
    for mode in ("ok", "fail"):
        await Job("work", queue=queue_name, args={"mode": mode}, deferred_by=3600,
                  deferred_until=0, _connection=conn).enqueue()
    await run_worker(conn, mixed_router(queue_name), 2)
    labels = {"queue": queue_name, "actor": "work"}

    def processed(outcome: str) -> float | None:
        return registry.get_sample_value("repid_messages_processed_total",
                                         {**labels, "outcome": outcome})

    # each scheduled run ends once: the good one a success, the bad one failed (not dead:
    # the message waits for its next time)
    assert (processed("success"), processed("failed"), processed("dead")) == (1, 1, None)
    assert registry.get_sample_value("repid_actor_runs_total",
                                     {**labels, "result": "failure"}) == 1
    assert registry.get_sample_value("repid_messages_returned_total",
                                     {**labels, "reason": "schedule"}) is None
    assert registry.get_sample_value("repid_broker_call_duration_seconds_count",
                                     {"call": "requeue"}) == 2


async def test_final_outcomes_sum_to_the_jobs_with_retries(make_conn: Any, queue_name: str,
                                                           run_worker: Any,
                                                           broker_kind: str) -> None:
    """With retries in play, the processed counter sums to exactly the jobs handled."""
    registry = CollectorRegistry()
    conn = await make_conn(queue_name, plugins=[MetricsPlugin(registry=registry)])
    jobs = 400 if broker_kind == "in_memory" else 120
    modes = ["ok", "flaky", "fail", "ok", "flaky"]
    for i in range(jobs):
        await Job("work", queue=queue_name, args={"mode": modes[i % 5]}, retries=1,
                  _connection=conn).enqueue()
    # ok: 1 run; flaky: 2 runs; fail: 2 runs (one retry, then dead)
    runs = sum({"ok": 1, "flaky": 2, "fail": 2}[modes[i % 5]] for i in range(jobs))
    await run_worker(conn, mixed_router(queue_name), runs)

    families = {f.name: f for f in registry.collect()}
    processed = {s.labels["outcome"]: s.value for s in families["repid_messages_processed"].samples
                 if s.name.endswith("_total") and s.labels["queue"] == queue_name}
    assert sum(processed.values()) == jobs
    assert processed == {"success": jobs * 4 / 5, "dead": jobs / 5}
    qa = {"queue": queue_name, "actor": "work"}
    assert registry.get_sample_value("repid_actor_runs_total",
                                     {**qa, "result": "failure"}) == jobs * 4 / 5
    assert registry.get_sample_value("repid_messages_returned_total",
                                     {**qa, "reason": "retry"}) == jobs * 3 / 5


def test_fast_values_expose_what_prometheus_client_does() -> None:
    """The plain-number metrics of a single process give the same samples as
    prometheus_client's own metrics fed the same values (bucket edges included)."""
    from prometheus_client import Counter, Gauge, Histogram

    from repid_plugins._fastmetrics import FastCollector

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastCollector(ours)
    families = (fast.counter("c", "doc", ["q"]), fast.gauge("g", "doc", ["q"]),
                fast.histogram("h", "doc", ["q"], (0.005, 0.01, 1.0)))
    fast.register()
    reference = (Counter("c", "doc", ["q"], registry=theirs),
                 Gauge("g", "doc", ["q"], registry=theirs),
                 Histogram("h", "doc", ["q"], registry=theirs, buckets=(0.005, 0.01, 1.0)))
    for pair in zip(families, reference, strict=True):
        children = [family.labels("a") for family in pair]
        for child in children:
            if hasattr(child, "observe"):
                for value in (0.0, 0.005, 0.0051, 0.01, 1.0, 1.5, 99.0):
                    child.observe(value)
            else:
                child.inc()
                child.inc(2)
    families[1].labels("a").dec()
    reference[1].labels("a").dec()

    def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...],
                                                          float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for family in registry.collect() for s in family.samples
                if not s.name.endswith("_created")}

    assert samples(ours) == samples(theirs)
    assert ours.get_sample_value("h_bucket", {"q": "a", "le": "0.005"}) == 2
    with pytest.raises(ValueError, match=r"already|Duplicated"):
        Counter("c", "doc", registry=ours)  # the registry knows the names taken


def test_fast_recorders_record_what_the_values_own_methods_do() -> None:
    """A single process's recorders update the values in place (`_FastRun`, `_FastCall`);
    fed the same runs and calls, they give the samples the generic recorders give through
    the values' `observe`, `inc` and `dec` (bucket edges, the +Inf bucket, cancelled runs
    and failed calls included)."""
    from repid_plugins.prometheus import _Call, _FastCall, _FastRun, _Metrics, _Run

    def record(run_type: type[_Run], call_type: type[_Call]) -> set[Any]:
        registry = CollectorRegistry()
        m = _Metrics(registry, "t")
        assert m.fast
        run, call = run_type(m, "q", "a"), call_type(m, "ack")
        counter = m.processed.labels("q", "a", "success")
        for lag, took, success in ((0.0, 0.0, True), (0.005, 0.005, False),
                                   (0.0051, 0.3, None), (7.0, 2.5, True),
                                   (5000.0, 1000.0, True)):
            run.started(lag)
            run.finished(took, success)
            call.done(took / 1000, counter)
        run.started(0.2)  # still running
        call.failed(0.02, True)
        call.failed(0.03, False)  # cancelled: timed, not counted as a failure
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for family in registry.collect() for s in family.samples}

    fast = record(_FastRun, _FastCall)
    assert fast == record(_Run, _Call)
    assert ("t_messages_in_progress", (("actor", "a"), ("queue", "q")), 1.0) in fast
    assert ("t_broker_call_failures_total", (("call", "ack"),), 1.0) in fast
    assert ("t_message_delivery_lag_seconds_bucket", (("le", "+Inf"), ("queue", "q")),
            6.0) in fast


async def test_a_result_store_that_fails_is_counted_and_not_as_an_outcome() -> None:
    from repid import Connection, InMemoryBucketBroker, InMemoryMessageBroker, Queue
    from repid.data import BucketT

    class DownStore(InMemoryBucketBroker):
        async def _store_bucket(self, id_: str, payload: BucketT) -> None:
            raise ConnectionError("results store unreachable")

    registry = CollectorRegistry()
    conn = Connection(InMemoryMessageBroker(max_deliveries=2),
                      results_bucket_broker=DownStore(use_result_bucket=True),
                      plugins=[MetricsPlugin(registry=registry)])
    await conn.connect()
    await Queue(_connection=conn).declare()
    router = Router()

    @router.actor
    async def work() -> None:
        pass

    await Job("work", _connection=conn).enqueue()
    await asyncio.wait_for(Worker(routers=[router], _connection=conn,
                                  messages_limit=2).run(), 10)
    value = registry.get_sample_value
    assert value("repid_broker_call_failures_total", {"call": "store_bucket"}) == 2
    # the first failure sent it back (a return), the second dead-lettered it (final)
    assert value("repid_messages_processed_total",
                 {"queue": "default", "actor": "work", "outcome": "dead"}) == 1
    assert value("repid_messages_processed_total",
                 {"queue": "default", "actor": "work", "outcome": "success"}) is None


async def test_a_refused_enqueue_makes_no_enqueued_series() -> None:
    """An enqueue the broker refused (an undeclared queue) is a failed call, and leaves no
    `enqueued` series for that queue behind, not even one at 0."""
    from repid import Connection, InMemoryMessageBroker, Queue
    from repid.errors import QueueNotDeclaredError

    registry = CollectorRegistry()
    plugin = MetricsPlugin(registry=registry)
    conn = Connection(InMemoryMessageBroker(require_declared_queues=True), plugins=[plugin])
    await conn.connect()
    await Queue("known", _connection=conn).declare()
    with pytest.raises(QueueNotDeclaredError):
        await Job("work", queue="typo", _connection=conn).enqueue()
    await Job("work", queue="known", _connection=conn).enqueue()
    value = registry.get_sample_value
    assert value("repid_broker_call_failures_total", {"call": "enqueue"}) == 1
    assert value("repid_messages_enqueued_total", {"queue": "known"}) == 1
    enqueued = [sample.labels["queue"] for family in text_string_to_metric_families(
        plugin.render()[1].decode())
        if family.name == "repid_messages_enqueued" for sample in family.samples
        if sample.name == "repid_messages_enqueued_total"]
    assert enqueued == ["known"]
