"""v1 subscribers as repid 1.x ran them: sync ones in a thread (the loop keeps running),
async ones on the loop, and every v1 signal firing with its arguments and `result`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from repid import (
    ArgsBucket,
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Parameters,
    Queue,
    Router,
    RoutingKey,
)

#: the v1 events glossary (repid 1.x middleware guide): event -> the arguments it offers
V1_SIGNALS: dict[str, tuple[str, ...]] = {
    "consume": (),
    "enqueue": ("key", "payload", "params"),
    "requeue": ("key", "payload", "params"),
    "queue_declare": ("queue_name",),
    "queue_flush": ("queue_name",),
    "queue_delete": ("queue_name",),
    "ack": ("key",),
    "nack": ("key",),
    "reject": ("key",),
    "get_bucket": ("id_",),
    "store_bucket": ("id_", "payload"),
    "delete_bucket": ("id_",),
    "actor_run": ("actor", "key", "parameters", "payload"),
}

BLOCK = 0.5  # seconds a blocking subscriber sleeps


class Ticker:
    """Measures how responsive the event loop is: the longest gap between ticks of a
    task that sleeps 10 ms at a time."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.ticks.append(time.perf_counter())

    @property
    def longest_gap(self) -> float:
        return max(b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False))


async def test_a_blocking_sync_subscriber_does_not_stall_the_loop(conn: Connection) -> None:
    ran: list[float] = []

    def before_enqueue() -> None:
        time.sleep(BLOCK)  # a blocking report, e.g. to an error tracker
        ran.append(time.perf_counter())

    conn.middleware.add_subscriber(before_enqueue)
    async with Ticker() as ticker:
        started = time.perf_counter()
        await asyncio.wait_for(Job("x", _connection=conn).enqueue(), 5)
        took = time.perf_counter() - started
    # the enqueue waited for its subscriber, the loop did not
    assert took >= BLOCK and len(ran) == 1
    assert ticker.longest_gap < BLOCK * 0.6, f"the loop stalled for {ticker.longest_gap:.3f}s"
    assert len(ticker.ticks) > 10


async def test_a_blocking_sync_subscriber_does_not_stall_a_worker(make_conn: Any,
                                                                  run_worker: Any) -> None:
    conn: Connection = await make_conn()
    router = Router()

    @router.actor
    async def work() -> str:
        return "done"

    def after_actor_run(result):  # type: ignore[no-untyped-def]
        time.sleep(BLOCK)

    conn.middleware.add_subscriber(after_actor_run)
    job = Job("work", _connection=conn)
    await job.enqueue()
    async with Ticker() as ticker:
        await run_worker(conn, router)
    assert (await job.result).data == "done"  # type: ignore[union-attr]
    assert ticker.longest_gap < BLOCK * 0.6, f"the loop stalled for {ticker.longest_gap:.3f}s"


class Reporter:
    def __init__(self) -> None:
        self.threads: dict[str, int] = {}

    def before_enqueue(self) -> None:
        self.threads["sync method"] = threading.get_ident()

    async def after_enqueue(self) -> None:
        self.threads["async method"] = threading.get_ident()


class AsyncCallable:
    def __init__(self, threads: dict[str, int]) -> None:
        self.threads = threads
        self.__name__ = "before_queue_declare"

    async def __call__(self, queue_name: str) -> None:
        self.threads["async callable object"] = threading.get_ident()


async def test_sync_subscribers_run_in_threads_and_async_ones_on_the_loop(
        conn: Connection) -> None:
    reporter = Reporter()
    threads = reporter.threads
    request = contextvars.ContextVar("request", default="none")
    seen: dict[str, str] = {}

    def before_queue_flush(queue_name):  # type: ignore[no-untyped-def]
        threads["sync function"] = threading.get_ident()
        seen["context"] = request.get()

    async def after_queue_flush(queue_name):  # type: ignore[no-untyped-def]
        threads["async function"] = threading.get_ident()

    async def takes_extra(queue_name, extra):  # type: ignore[no-untyped-def]
        threads["async partial"] = threading.get_ident()

    partial = functools.partial(takes_extra, extra=1)
    partial.__name__ = "after_queue_declare"  # type: ignore[attr-defined]

    conn.middleware.add_middleware(reporter)
    for fn in (before_queue_flush, after_queue_flush, partial, AsyncCallable(threads)):
        conn.middleware.add_subscriber(fn)
    request.set("req-1")
    await Job("x", _connection=conn).enqueue()
    await Queue("q", _connection=conn).declare()
    await Queue(_connection=conn).flush()

    loop_thread = threading.get_ident()
    assert set(threads) == {"sync method", "async method", "sync function", "async function",
                            "async partial", "async callable object"}
    on_loop = {name for name, ident in threads.items() if ident == loop_thread}
    assert on_loop == {"async method", "async function", "async partial",
                       "async callable object"}
    assert seen["context"] == "req-1"  # the thread sees the caller's context variables


async def test_a_sync_subscriber_that_raises_in_its_thread_is_logged(
        conn: Connection, caplog: pytest.LogCaptureFixture) -> None:
    def before_enqueue() -> None:
        raise RuntimeError("reporting failed")

    conn.middleware.add_subscriber(before_enqueue)
    await Job("x", _connection=conn).enqueue()
    assert "before_enqueue raised" in caplog.text and "reporting failed" in caplog.text
    assert (await Queue(_connection=conn).stats())["ready"] == 1


# --- every signal fires ---

Call = dict[str, Any]


async def drive(conn: Connection, run_worker: Callable[..., Awaitable[Any]]) -> dict[str, Any]:
    """Make every v1 event happen on `conn`, in a known order; return what was used."""
    broker = conn.message_broker
    buckets = conn.args_bucket_broker
    assert buckets is not None
    await Queue("q", _connection=conn).declare()                         # queue_declare
    await broker.enqueue(RoutingKey("m1", "t", "q"), "p1", Parameters())  # enqueue
    consumer = broker.consume("q")
    taken = await consumer.__anext__()                                   # consume
    await broker.reject(taken[0])                                        # reject
    key, _, params = await consumer.__anext__()
    await broker.requeue(key, "p2", params)                              # requeue
    key, _, _ = await consumer.__anext__()
    await broker.nack(key)                                               # nack
    await broker.enqueue(RoutingKey("m2", "t", "q"), "p3", Parameters())
    key, _, _ = await consumer.__anext__()
    await broker.ack(key)                                                # ack
    bucket = ArgsBucket('{"n":1}')
    await buckets.store_bucket("b1", bucket)                             # store_bucket
    await buckets.get_bucket("b1")                                       # get_bucket
    await buckets.delete_bucket("b1")                                    # delete_bucket
    await Queue("q", _connection=conn).flush()                           # queue_flush
    await Queue("q", _connection=conn).delete()                          # queue_delete

    router = Router()

    @router.actor(queue="w")
    async def echo(n: int) -> int:
        return n

    await Queue("w", _connection=conn).declare()
    job = Job("echo", queue="w", args={"n": 7}, _connection=conn)
    job_key = await job.enqueue()
    await run_worker(conn, router)                                       # actor_run
    return {"first_taken": taken, "bucket": bucket, "job_key": job_key}


def check(event: str, call: Call, used: dict[str, Any], stage: str) -> None:
    """The first call of the signal carries the values of the first such event."""
    result: Any = call.get("result")
    if event == "consume":
        if stage == "after":
            key, payload, params = result
            assert (key.id_, payload) == ("m1", "p1") and isinstance(params, Parameters)
            assert result == used["first_taken"]
    elif event in ("enqueue", "requeue"):
        assert call["key"].id_ == "m1" and call["key"].queue == "q"
        assert call["payload"] == ("p1" if event == "enqueue" else "p2")
        assert isinstance(call["params"], Parameters)
    elif event in ("queue_declare", "queue_flush", "queue_delete"):
        assert call["queue_name"] == "q"
    elif event in ("ack", "nack", "reject"):
        assert call["key"].id_ == {"ack": "m2", "nack": "m1", "reject": "m1"}[event]
    elif event in ("get_bucket", "store_bucket", "delete_bucket"):
        assert call["id_"] == "b1"
        if event == "store_bucket":
            assert call["payload"] is used["bucket"]
        if event == "get_bucket" and stage == "after":
            assert result == used["bucket"]
    elif event == "actor_run":
        assert call["actor"].name == "echo" and call["actor"].queue == "w"
        assert call["key"].id_ == used["job_key"].id_
        assert isinstance(call["parameters"], Parameters)
        # the message's raw payload (here a reference to the arguments' bucket)
        assert isinstance(call["payload"], str) and call["payload"]
        if stage == "after":
            assert result.success is True and result.data == 7 and result.exception is None
            assert isinstance(result.started_when, datetime)
            assert result.started_when <= result.finished_when
    if stage == "after" and event not in ("consume", "get_bucket", "actor_run"):
        assert result is None


def make(name: str, is_async: bool, calls: list[tuple[int, Call]]) -> Callable[..., Any]:
    """A subscriber called `name` taking whatever its signal offers (`**kwargs`), noting
    the thread it ran in."""
    if is_async:
        async def subscriber(**kwargs: Any) -> None:
            calls.append((threading.get_ident(), kwargs))
    else:
        def subscriber(**kwargs: Any) -> None:  # type: ignore[misc]
            calls.append((threading.get_ident(), kwargs))
    subscriber.__name__ = name
    return subscriber


SIGNALS = [(stage, event) for event in V1_SIGNALS for stage in ("before", "after")]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("stage", "event"), SIGNALS, ids=[f"{s}_{e}" for s, e in SIGNALS])
async def test_every_v1_signal_fires_with_its_arguments(stage: str, event: str, kind: str,
                                                        run_worker: Any) -> None:
    conn = Connection(InMemoryMessageBroker(), InMemoryBucketBroker(),
                      InMemoryBucketBroker(use_result_bucket=True))
    await conn.connect()
    argnames = V1_SIGNALS[event] + (("result",) if stage == "after" else ())
    calls: list[tuple[int, Call]] = []
    conn.middleware.add_subscriber(make(f"{stage}_{event}", kind == "async", calls))
    used = await drive(conn, run_worker)
    assert calls, f"{stage}_{event} never fired"
    thread, call = calls[0]
    assert set(call) == set(argnames)  # exactly the v1 names, `result` for after_ only
    check(event, call, used, stage)
    on_loop = thread == threading.get_ident()
    assert on_loop is (kind == "async")
