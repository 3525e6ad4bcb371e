"""Worker and Router: limits, concurrency, where actors run, graceful shutdown."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
import time

import pytest

from repid import Connection, Job, MessageDependency, Queue, Router, Worker
from repid.router import ActorOptions


def in_another_process(x: int) -> dict[str, int]:
    """A module-level actor, so a process pool can pickle it."""
    return {"pid": os.getpid(), "double": x * 2}


# --- router ---------------------------------------------------------------------------


def test_actor_decorator_returns_function_unchanged_with_and_without_arguments() -> None:
    router = Router()

    def plain(a: int) -> int:
        return a

    async def configured() -> None: ...

    assert router.actor(plain) is plain
    assert router.actor(name="other-name", queue="q2", retry_policy=lambda n: 1)(
        configured) is configured
    assert set(router.actors) == {"plain", "other-name"}
    actor = router.actors["other-name"]
    assert (actor.queue, actor.is_async) == ("q2", True)
    assert router.actors["plain"].is_async is False
    assert router.topics_by_queue == {"default": frozenset({"plain"}),
                                      "q2": frozenset({"other-name"})}


def test_actor_options_name_exactly_what_router_actor_takes() -> None:
    """`ActorOptions` types the keyword form of `Router.actor` for mypy; the
    implementation's own keywords are what runs, so the two lists must agree."""
    taken = [parameter.name for parameter in inspect.signature(Router.actor).parameters.values()
             if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
    assert taken == list(ActorOptions.__annotations__)
    with pytest.raises(TypeError, match="nmae"):
        Router().actor(nmae="x")  # type: ignore[call-overload]


def test_bad_actor_names_and_async_process_actor_are_rejected() -> None:
    router = Router()
    with pytest.raises(ValueError, match="actor name 'a b'"):
        router.actor(name="a b")(lambda: None)
    with pytest.raises(ValueError, match="run_in_process=True needs a sync function"):
        @router.actor(run_in_process=True)
        async def no() -> None: ...


def test_worker_is_a_router_including_routers() -> None:
    r1, r2 = Router(), Router()

    @r1.actor
    def one() -> None: ...

    @r2.actor(queue="other")
    def two() -> None: ...

    worker = Worker(routers=[r1])
    worker.include_router(r2)
    assert isinstance(worker, Router)
    assert set(worker.actors) == {"one", "two"}
    assert set(worker.topics_by_queue) == {"default", "other"}


def test_worker_defaults_and_validation() -> None:
    worker = Worker()
    assert worker.graceful_shutdown_time == 25.0
    assert worker.messages_limit == float("inf")
    assert worker.tasks_limit == 1000
    assert worker.handle_signals is None and worker.auto_declare is True
    assert worker.run_health_check_server is False
    with pytest.raises(ValueError, match="tasks_limit is 0"):
        Worker(tasks_limit=0)
    with pytest.raises(ValueError, match="messages_limit is 0"):
        Worker(messages_limit=0)


async def test_worker_without_actors_says_so_and_returns(conn: Connection, caplog) -> None:
    runner = await asyncio.wait_for(Worker(_connection=conn).run(), 5)
    assert runner.processed == 0
    assert "no actors" in caplog.text


async def test_worker_auto_declares_its_queues(make_conn, run_worker) -> None:
    conn = await make_conn(queues=())
    router = Router()

    @router.actor(queue="fresh")
    async def job() -> None: ...

    worker = Worker(routers=[router], _connection=conn, messages_limit=1)
    task = asyncio.create_task(worker.run())
    for _ in range(100):
        if "fresh" in conn.message_broker.queues:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    await Job("job", queue="fresh", _connection=conn).enqueue()
    runner = await asyncio.wait_for(task, 5)
    assert runner.processed == 1


async def test_worker_with_auto_declare_false_waits_for_the_queue(make_conn, caplog) -> None:
    conn = await make_conn(queues=())
    router = Router()

    @router.actor(queue="fresh")
    async def job() -> None: ...

    worker = Worker(routers=[router], _connection=conn, auto_declare=False, messages_limit=1)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    assert "fresh" not in conn.message_broker.queues  # type: ignore[attr-defined]
    assert not task.done()  # keeps trying instead of dying
    assert "'fresh' is not declared" in caplog.text
    await Queue("fresh", _connection=conn).declare()
    await Job("job", queue="fresh", _connection=conn).enqueue()
    runner = await asyncio.wait_for(task, 5)
    assert runner.processed == 1


async def test_worker_opens_and_closes_a_closed_connection(make_conn) -> None:
    conn = await make_conn()
    await conn.disconnect()
    router = Router()
    seen_open = []

    @router.actor
    async def job() -> None:
        seen_open.append(conn.is_open)

    await Job("job", _connection=conn).enqueue()
    await asyncio.wait_for(Worker(routers=[router], _connection=conn,
                                  messages_limit=1).run(), 5)
    assert seen_open == [True]
    assert conn.is_open is False


# --- limits and concurrency -------------------------------------------------------------


async def test_messages_limit_stops_after_exactly_that_many(conn: Connection, run_worker,
                                                           stats) -> None:
    router = Router()
    ran = []

    @router.actor
    async def job(n: int) -> None:
        ran.append(n)

    for n in range(10):
        await Job("job", args={"n": n}, _connection=conn).enqueue()
    runner = await run_worker(conn, router, messages_limit=3)
    assert runner.processed == 3
    assert ran == [0, 1, 2]
    assert await stats(conn) == {"ready": 7, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_tasks_limit_bounds_concurrency(conn: Connection, run_worker) -> None:
    router = Router()
    running = 0
    most = 0

    @router.actor
    async def job() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1

    for _ in range(9):
        await Job("job", _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=9, tasks_limit=3)
    assert most == 3


async def test_many_tasks_run_concurrently_by_default(conn: Connection, run_worker) -> None:
    router = Router()
    gate = asyncio.Event()
    arrived = 0

    @router.actor
    async def job() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 5:
            gate.set()
        await asyncio.wait_for(gate.wait(), 3)  # only passes if all 5 run at once

    for _ in range(5):
        await Job("job", _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=5)
    assert arrived == 5 and gate.is_set()


async def test_sync_actor_runs_in_a_thread(conn: Connection, run_worker) -> None:
    router = Router()
    loop_thread = threading.get_ident()
    seen = []

    @router.actor
    def blocking() -> int:
        seen.append(threading.get_ident())
        time.sleep(0.01)
        return 1

    await Job("blocking", _connection=conn).enqueue()
    await run_worker(conn, router)
    assert len(seen) == 1 and seen[0] != loop_thread


async def test_run_in_process_runs_in_another_process(conn: Connection, run_worker) -> None:
    router = Router()
    router.actor(run_in_process=True)(in_another_process)
    job = Job("in_another_process", args={"x": 21}, _connection=conn)
    await job.enqueue()
    await run_worker(conn, router, timeout=20)
    result = await job.result
    assert result is not None and result.success, result
    assert result.data["double"] == 42
    assert result.data["pid"] != os.getpid()


# --- graceful shutdown ------------------------------------------------------------------


async def _start_blocked_worker(conn: Connection, **kwargs: object):  # type: ignore[no-untyped-def]
    router = Router()
    started = asyncio.Event()
    finished = []

    @router.actor
    async def long_job(msg: MessageDependency) -> None:
        started.set()
        await asyncio.sleep(10)
        finished.append(msg)

    await Job("long_job", retries=3, _connection=conn).enqueue()
    worker = Worker(routers=[router], _connection=conn, **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    return worker, task, finished


async def test_stop_returns_job_running_past_grace_time_without_counting_a_try(
        conn: Connection, stats) -> None:
    worker, task, finished = await _start_blocked_worker(conn, graceful_shutdown_time=0.2)
    assert (await stats(conn))["in_flight"] == 1
    stopped_at = time.monotonic()
    worker.stop()
    runner = await asyncio.wait_for(task, 5)
    assert time.monotonic() - stopped_at < 2
    assert finished == []
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    key, _, params = await asyncio.wait_for(
        conn.message_broker.consume("default").__anext__(), 5)
    assert key.topic == "long_job"
    assert params.retries.already_tried == 0
    assert runner is worker.runner


async def test_sigterm_stops_gracefully_and_returns_the_running_job(
        conn: Connection, stats) -> None:
    _, task, finished = await _start_blocked_worker(conn, graceful_shutdown_time=0.2)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert finished == []
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    # the handler is removed again once the worker returned
    assert asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM) is False


async def test_jobs_finishing_within_grace_time_complete(conn: Connection, stats) -> None:
    router = Router()
    started = asyncio.Event()
    done = []

    @router.actor
    async def short_job() -> str:
        started.set()
        await asyncio.sleep(0.3)
        done.append(1)
        return "ok"

    job = Job("short_job", _connection=conn)
    await job.enqueue()
    worker = Worker(routers=[router], _connection=conn, graceful_shutdown_time=3)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert done == [1]
    assert (await job.result).data == "ok"  # type: ignore[union-attr]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_stopped_worker_takes_no_more_messages(conn: Connection, stats) -> None:
    router = Router()

    @router.actor
    async def job() -> None: ...

    worker = Worker(routers=[router], _connection=conn)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    worker.stop()
    await asyncio.wait_for(task, 5)
    await Job("job", _connection=conn).enqueue()
    await asyncio.sleep(0.05)
    assert (await stats(conn))["ready"] == 1


async def test_messages_limit_with_several_queues(make_conn, run_worker, stats) -> None:
    """A consumer waiting on an empty queue must not block the limit for the others, and
    the limit is never exceeded when two queues have messages at once."""
    conn = await make_conn(queues=("a", "b"))
    router = Router()
    ran: list[str] = []

    @router.actor(queue="a")
    async def on_a() -> None:
        ran.append("a")

    @router.actor(queue="b")
    async def on_b() -> None:
        ran.append("b")

    await Job("on_b", queue="b", _connection=conn).enqueue()
    runner = await run_worker(conn, router, messages_limit=1)
    assert ran == ["b"] and runner.processed == 1

    await Job("on_a", queue="a", _connection=conn).enqueue()
    await Job("on_b", queue="b", _connection=conn).enqueue()
    runner = await run_worker(conn, router, messages_limit=1)
    assert runner.processed == 1 and len(ran) == 2
    left = [await stats(conn, q) for q in ("a", "b")]
    assert sum(s["ready"] for s in left) == 1  # the other one is back, not lost
    assert all(s["in_flight"] == 0 and s["dead"] == 0 for s in left)


async def test_open_connection_stays_open_after_worker(conn: Connection, run_worker) -> None:
    router = Router()

    @router.actor
    async def job() -> None: ...

    await Job("job", _connection=conn).enqueue()
    await run_worker(conn, router)
    assert conn.is_open is True
