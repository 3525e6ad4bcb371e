"""Every row of the outcome table (repid/processor.py, SPEC "What happens to a message") on
the in-memory broker, through a real `Worker(...).run()`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from repid import (
    Connection,
    Job,
    Message,
    MessageCategory,
    MessageDependency,
    Parameters,
    Queue,
    Router,
    RoutingKey,
    Worker,
    hookimpl,
)
from repid.brokers.base import DEAD_REASON_HEADER
from repid.data import DelayProperties, RetriesProperties, utcnow
from repid.data.headers import NO_ACTOR_RETURNS_HEADER
from repid.testing.app import InMemoryTestApp
from repid.testing.event_log import EventLogPlugin
from repid.testing.markers import MarkerSettings
from repid.worker._processor import no_actor_delay, no_actor_returns_allowed


def no_wait(_: int) -> int:
    return 0


async def test_actor_returns_ack_and_result(conn: Connection, run_worker, stats) -> None:
    router = Router()

    @router.actor
    async def ok() -> str:
        return "done"

    job = Job("ok", _connection=conn)
    await job.enqueue()
    runner = await run_worker(conn, router)
    assert runner.processed == 1
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    result = await job.result
    assert result is not None and result.success and result.data == "done"


async def test_raise_with_retries_left_requeues_after_delay_with_try_counted(
        conn: Connection, run_worker, stats, messages_of) -> None:
    router = Router()
    tries: list[tuple[int, float]] = []

    @router.actor(retry_policy=lambda n: 1)
    async def flaky(msg: MessageDependency) -> str:
        tries.append((msg.parameters.retries.already_tried, time.monotonic()))
        if len(tries) == 1:
            raise ValueError("first time fails")
        return "second time works"

    job = Job("flaky", retries=2, _connection=conn)
    await job.enqueue()
    await run_worker(conn, router)  # the failing run only
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    assert delayed.parameters.retries.already_tried == 1
    assert delayed.parameters.retries.max_amount == 2
    wait = (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 0.2 < wait <= 1
    failed = await job.result  # the failed run's result is stored
    assert failed is not None and failed.success is False
    assert failed.exception == "ValueError: first time fails"

    await run_worker(conn, router)  # the retry, once its delay has passed
    assert [t for t, _ in tries] == [0, 1]
    assert tries[1][1] - tries[0][1] >= 0.9
    assert (await job.result).data == "second time works"  # type: ignore[union-attr]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_failed_result_is_stored_before_the_retry_is_requeued(
        make_conn, run_worker) -> None:
    log = EventLogPlugin()
    conn = await make_conn(plugins=(log,))
    router = Router()

    @router.actor(retry_policy=no_wait)
    async def fails() -> None:
        raise RuntimeError("nope")

    await Job("fails", retries=1, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=2)
    names = [e.function for e in log.events if e.function not in ("consume", "queue_declare")]
    assert names == ["enqueue", "store_bucket", "requeue", "store_bucket", "nack"]
    # the stored result of the first run is the failure, and the requeue counts the try
    first_store = next(e for e in log.events if e.function == "store_bucket")
    assert first_store.kwargs["payload"].success is False
    requeue = next(e for e in log.events if e.function == "requeue")
    assert requeue.kwargs["params"].retries.already_tried == 1


async def test_timeout_counts_as_failure(conn: Connection, run_worker, stats) -> None:
    router = Router()

    @router.actor
    async def slow() -> None:
        await asyncio.sleep(3)

    job = Job("slow", timeout=1, _connection=conn)
    await job.enqueue()
    started = time.monotonic()
    await run_worker(conn, router)
    assert time.monotonic() - started < 2.5
    result = await job.result
    assert result is not None and result.success is False
    assert result.exception is not None
    assert "timeout" in result.exception.lower() and "slow" in result.exception
    assert (await stats(conn))["dead"] == 1


async def test_timeout_with_retries_left_is_retried(conn: Connection, run_worker) -> None:
    router = Router()
    runs = []

    @router.actor(retry_policy=no_wait)
    async def slow_once(msg: MessageDependency) -> str:
        runs.append(msg.parameters.retries.already_tried)
        if len(runs) == 1:
            await asyncio.sleep(3)
        return "ok"

    job = Job("slow_once", timeout=1, retries=1, _connection=conn)
    await job.enqueue()
    await run_worker(conn, router, messages_limit=2)
    assert runs == [0, 1]
    assert (await job.result).data == "ok"  # type: ignore[union-attr]


async def test_no_retries_left_goes_to_dead_letter_queue(
        conn: Connection, run_worker, stats, messages_of) -> None:
    router = Router()
    runs = []

    @router.actor(retry_policy=no_wait)
    async def always_fails() -> None:
        runs.append(1)
        raise KeyError("missing")

    job = Job("always_fails", retries=2, args=None, _connection=conn)
    key, _, _ = await job.enqueue()
    await run_worker(conn, router, messages_limit=3)
    assert len(runs) == 3  # the first run and two retries
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    [dead] = await messages_of(conn)
    assert dead.key.id_ == key.id_ and dead.key.topic == "always_fails"
    assert dead.category is MessageCategory.DEAD
    assert dead.parameters.retries.already_tried == 2
    result = await job.result
    assert result is not None and result.success is False
    assert result.exception == "KeyError: 'missing'"


async def test_recurring_deferred_by_is_requeued_for_next_time(
        conn: Connection, run_worker, stats, messages_of) -> None:
    router = Router()
    runs: list[float] = []

    @router.actor
    async def tick() -> None:
        runs.append(time.monotonic())

    enqueued = time.monotonic()
    await Job("tick", deferred_by=1, _connection=conn).enqueue()
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    await run_worker(conn, router)
    assert len(runs) == 1 and runs[0] - enqueued >= 0.9  # the first run is one period away
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    [nxt] = await messages_of(conn, category=MessageCategory.DELAYED)
    wait = (nxt.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 0 < wait <= 1
    assert nxt.parameters.delay.defer_by == timedelta(seconds=1)


async def test_recurring_job_that_fails_goes_on_to_next_time(
        conn: Connection, run_worker, stats) -> None:
    router = Router()

    @router.actor
    async def tick() -> None:
        raise RuntimeError("broken tick")

    await Job("tick", deferred_by=1, _connection=conn).enqueue()
    await run_worker(conn, router)
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}


async def test_recurring_cron_every_second_is_requeued_for_next_time(
        conn: Connection, run_worker, stats, messages_of) -> None:
    router = Router()
    runs = []

    @router.actor
    async def cron_tick() -> None:
        runs.append(utcnow())

    # croniter reads a sixth field as seconds: "* * * * * *" is every second
    await Job("cron_tick", cron="* * * * * *", _connection=conn).enqueue()
    [first] = await messages_of(conn, category=MessageCategory.DELAYED)
    first_time = first.parameters.delay.next_execution_time
    assert first_time is not None and first_time.microsecond == 0
    await run_worker(conn, router)
    assert len(runs) == 1 and runs[0] >= first_time
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    [nxt] = await messages_of(conn, category=MessageCategory.DELAYED)
    assert nxt.parameters.delay.next_execution_time > first_time
    assert nxt.parameters.delay.cron == "* * * * * *"


async def test_ttl_passed_before_run_dead_letters_without_running(
        conn: Connection, run_worker, stats, caplog) -> None:
    router = Router()
    ran = []

    @router.actor
    async def late() -> None:
        ran.append(1)

    await conn.message_broker.enqueue(
        RoutingKey("old-msg", "late"), "",
        Parameters(timestamp=utcnow() - timedelta(seconds=10), ttl=timedelta(seconds=1)))
    await Job("late", ttl=60, _connection=conn).enqueue()  # a fresh one still runs
    with caplog.at_level(logging.WARNING, logger="repid"):
        runner = await run_worker(conn, router, messages_limit=2)
    assert runner.processed == 2
    assert ran == [1]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    assert "old-msg" in caplog.text and "expired" in caplog.text


async def test_ttl_of_a_job_that_waited_too_long(conn: Connection, run_worker, stats) -> None:
    router = Router()
    ran = []

    @router.actor
    async def late() -> None:
        ran.append(1)

    await Job("late", ttl=1, _connection=conn).enqueue()
    await asyncio.sleep(1.1)
    await run_worker(conn, router)
    assert ran == []
    assert (await stats(conn))["dead"] == 1


async def test_poison_payload_dead_letters_and_worker_keeps_going(
        conn: Connection, run_worker, stats, messages_of, caplog) -> None:
    router = Router()
    ran = []

    @router.actor(retry_policy=no_wait)
    async def work(n: int = 0) -> None:
        ran.append(n)

    await conn.message_broker.enqueue(RoutingKey("poison-1", "work"), "not json",
                                      Parameters(retries=RetriesProperties(3, 0)))
    await Job("work", args={"n": 7}, _connection=conn).enqueue()
    with caplog.at_level(logging.ERROR, logger="repid"):
        runner = await run_worker(conn, router, messages_limit=2)
    assert runner.processed == 2
    assert ran == [7]  # the next message was processed
    [dead] = await messages_of(conn)
    assert dead.key.id_ == "poison-1" and dead.raw_payload == "not json"
    assert dead.parameters.retries.already_tried == 0  # not retried: it can never work
    assert "poison-1" in caplog.text and "not JSON" in caplog.text


async def test_args_that_do_not_fit_dead_letter(conn: Connection, run_worker, stats,
                                              messages_of, caplog) -> None:
    router = Router()
    ran = []

    @router.actor
    async def add(a: int, b: int) -> int:
        ran.append((a, b))
        return a + b

    bad = {"missing": {"a": 1}, "too-many": [1, 2, 3],
           "wrong-type": {"a": 1, "b": "not a number"}, "not-object": "5"}
    for id_, args in bad.items():
        payload = args if isinstance(args, str) else json.dumps(args)
        await conn.message_broker.enqueue(RoutingKey(id_, "add"), payload,
                                          Parameters(retries=RetriesProperties(2, 0)))
    await Job("add", args={"a": 1, "b": "2"}, _connection=conn).enqueue()  # coerced
    with caplog.at_level(logging.ERROR, logger="repid"):
        runner = await run_worker(conn, router, messages_limit=5)
    assert runner.processed == 5
    assert ran == [(1, 2)]
    dead = await messages_of(conn)
    assert sorted(m.key.id_ for m in dead) == sorted(bad)
    assert "missing required arguments ['b']" in caplog.text
    assert "takes 2 arguments, the job gave 3" in caplog.text


async def test_message_for_unknown_topic_is_returned_with_warning(
        conn: Connection, run_worker, stats, caplog) -> None:
    router = Router()
    ran = []

    @router.actor
    async def mine() -> None:
        ran.append(1)

    other, _, _ = await Job("not_mine", _connection=conn).enqueue()
    await Job("mine", _connection=conn).enqueue()
    with caplog.at_level(logging.WARNING, logger="repid"):
        runner = await run_worker(conn, router)
    assert ran == [1] and runner.processed == 1
    # still in its queue (waiting a moment before it is offered again), never dropped
    counts = await stats(conn)
    assert counts["ready"] + counts["delayed"] == 1 and counts["dead"] == 0
    assert counts["in_flight"] == 0
    assert "'not_mine'" in caplog.text
    [warning] = [r for r in caplog.records if "not_mine" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    await asyncio.sleep(1.1)
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    key, _, params = await asyncio.wait_for(
        conn.message_broker.consume("default").__anext__(), 5)
    assert key.id_ == other.id_ and params.retries.already_tried == 0


def test_returns_for_another_worker_are_bounded_and_spread_out() -> None:
    assert no_actor_returns_allowed(5) == 20  # the brokers' default max_deliveries
    assert no_actor_returns_allowed(1) == 4
    assert [no_actor_delay(n).total_seconds() for n in (1, 2, 3, 20, 100)] == [
        1, 2, 3, 20, 60]
    # the default allowance spreads over 3.5 minutes
    assert sum(no_actor_delay(n).total_seconds() for n in range(1, 21)) == 210


async def test_job_for_an_actor_no_worker_has_is_returned_then_dead_lettered(
        conn: Connection, stats, messages_of, caplog) -> None:
    """The return before the last counts and waits; the last take dead-letters it with a
    reason that starts with `no actor '<name>'`, logged as an error naming the known
    actors; sent back by hand, it starts afresh."""
    router = Router()

    @router.actor
    async def send_email() -> None:
        pass

    @router.actor
    async def report() -> None:
        pass

    @router.actor(queue="elsewhere")
    async def unrelated() -> None:
        pass

    allowed = no_actor_returns_allowed(conn.message_broker.max_deliveries)
    broker = conn.message_broker
    await broker.enqueue(RoutingKey("typo", "sned_email"), "",
                         Parameters(headers={NO_ACTOR_RETURNS_HEADER: str(allowed - 1)}))
    worker = Worker(routers=[router], _connection=conn, handle_signals=[])
    running = asyncio.create_task(worker.run())
    try:
        with caplog.at_level(logging.WARNING, logger="repid"):
            [delayed] = await _eventually(messages_of, conn, MessageCategory.DELAYED)
            assert delayed.parameters.headers[NO_ACTOR_RETURNS_HEADER] == str(allowed)
            wait = delayed.parameters.delay.next_execution_time - utcnow()
            assert wait.total_seconds() > allowed - 1  # return n waits n seconds
            await delayed.force_retry(0)  # due now, its count kept: the last take
            [dead] = await _eventually(messages_of, conn, MessageCategory.DEAD)
    finally:
        worker.stop()
        runner = await asyncio.wait_for(running, 5)
    assert runner.processed == 0  # no actor here handled it
    assert dead.parameters.headers[DEAD_REASON_HEADER].startswith("no actor 'sned_email'")
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "sned_email" in error.getMessage()
    assert "'report', 'send_email'." in error.getMessage()  # this queue's actors
    await dead.reschedule()
    key, _, params = await asyncio.wait_for(broker.consume("default").__anext__(), 5)
    assert key.id_ == "typo" and NO_ACTOR_RETURNS_HEADER not in params.headers


async def _eventually(messages_of: Callable[..., Awaitable[list[Message]]],
                      conn: Connection, category: MessageCategory) -> list[Message]:
    """The messages of queue `default` in `category`, once there are some (polled)."""
    deadline = time.monotonic() + 5
    while not (found := await messages_of(conn, "default", category)):
        assert time.monotonic() < deadline, f"no {category.name} message within 5 s"
        await asyncio.sleep(0.02)
    return found


async def test_returns_count_starts_over_once_its_actor_took_it(
        conn: Connection, run_worker, messages_of) -> None:
    """A message that reached a worker with its actor forgets the returns before: a retry
    gets the whole allowance again."""
    router = Router()

    @router.actor(retry_policy=no_wait)
    async def flaky() -> None:
        raise ValueError("again")

    await conn.message_broker.enqueue(
        RoutingKey("bounced", "flaky"), "",
        Parameters(retries=RetriesProperties(1, 0), headers={NO_ACTOR_RETURNS_HEADER: "4"}))
    await run_worker(conn, router, messages_limit=2)
    [dead] = await messages_of(conn)
    assert dead.key.id_ == "bounced" and dead.parameters.retries.already_tried == 1
    assert NO_ACTOR_RETURNS_HEADER not in dead.parameters.headers


async def test_only_unknown_topics_do_not_block_messages_limit(conn: Connection,
                                                               run_worker) -> None:
    """A message returned for another worker does not use up `messages_limit`."""
    router = Router()
    ran = []

    @router.actor
    async def mine() -> None:
        ran.append(1)

    await Job("not_mine", _connection=conn).enqueue()
    await Job("mine", _connection=conn).enqueue()
    runner = await run_worker(conn, router, messages_limit=1, tasks_limit=1)
    assert ran == [1] and runner.processed == 1


class _Exploding:
    """A plugin whose every hook raises."""

    @hookimpl(wrapper=True)
    def repid_actor_run(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("plugin broke before")
        yield  # pragma: no cover

    @hookimpl(wrapper=True)
    def repid_ack(self):  # type: ignore[no-untyped-def]
        yield
        raise RuntimeError("plugin broke after")

    @hookimpl
    def repid_should_retry(self) -> bool:
        raise RuntimeError("plugin broke in a decision")

    @hookimpl
    def repid_retry_delay(self) -> float:
        raise RuntimeError("plugin broke in a decision")

    @hookimpl
    def repid_worker_start(self) -> None:
        raise RuntimeError("plugin broke at start")


async def test_plugin_that_raises_is_logged_and_message_handled_as_without_it(
        make_conn, run_worker, stats, messages_of, caplog) -> None:
    conn = await make_conn(plugins=(_Exploding(),))
    router = Router()
    runs = []

    @router.actor
    async def work(n: int) -> int:
        runs.append(n)
        if len(runs) == 1:
            raise ValueError("retry me")
        return n * 2

    await Job("work", args={"n": 21}, retries=1, _connection=conn).enqueue()
    job = Job("work", args={"n": 5}, _connection=conn)
    await job.enqueue()
    with caplog.at_level(logging.ERROR, logger="repid"):
        await run_worker(conn, router, messages_limit=2, timeout=6)
    assert runs == [21, 5]
    assert (await job.result).data == 10  # type: ignore[union-attr]  (acked through it)
    # retried (should_retry skipped), after the default first delay (10 s), not at once
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    wait = (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 8 < wait <= 10
    assert delayed.parameters.retries.already_tried == 1
    for text in ("plugin broke before", "plugin broke after", "plugin broke in a decision",
                 "plugin broke at start"):
        assert any(r.exc_info and text in str(r.exc_info[1]) for r in caplog.records), text


async def test_dead_letters_sent_back_with_reschedule_run_again(
        conn: Connection, run_worker, stats, messages_of) -> None:
    router = Router()
    runs = []

    @router.actor(retry_policy=no_wait)
    async def fixable(msg: MessageDependency) -> str:
        runs.append(msg.parameters.retries.already_tried)
        if len(runs) <= 2:
            raise ValueError("not yet")
        return "fixed"

    job = Job("fixable", retries=1, _connection=conn)
    await job.enqueue()
    await run_worker(conn, router, messages_limit=2)
    assert (await stats(conn))["dead"] == 1
    async for msg in Queue(_connection=conn).get_messages(category=MessageCategory.DEAD,
                                                          stop_when_empty=True):
        await msg.reschedule()
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    await run_worker(conn, router)
    assert runs == [0, 1, 0]  # tries were reset when sent back
    assert (await job.result).data == "fixed"  # type: ignore[union-attr]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_dead_letter_can_be_deleted_with_ack(conn: Connection, run_worker, stats,
                                                   messages_of) -> None:
    router = Router()

    @router.actor
    async def fails() -> None:
        raise ValueError

    await Job("fails", _connection=conn).enqueue()
    await run_worker(conn, router)
    [dead] = await messages_of(conn)
    await dead.ack()
    assert (await stats(conn))["dead"] == 0


async def test_delayed_messages_can_be_read_without_taking_them(
        conn: Connection, messages_of, stats) -> None:
    await Job("later", deferred_until=utcnow() + timedelta(hours=1), _connection=conn).enqueue()
    first = await messages_of(conn, category=MessageCategory.DELAYED)
    second = await messages_of(conn, category=MessageCategory.DELAYED)
    assert [m.key.topic for m in first] == [m.key.topic for m in second] == ["later"]
    assert first[0].category is MessageCategory.DELAYED
    assert (await stats(conn))["delayed"] == 1


async def test_delay_is_honoured_and_short_delay_not_held_back_by_long(
        conn: Connection, run_worker) -> None:
    router = Router()
    seen: list[tuple[str, float]] = []

    @router.actor
    async def when(tag: str) -> None:
        seen.append((tag, time.monotonic()))

    start = time.monotonic()
    await Job("when", args={"tag": "long"}, deferred_until=utcnow() + timedelta(hours=1),
              _connection=conn).enqueue()
    await Job("when", args={"tag": "short"}, deferred_until=utcnow() + timedelta(seconds=1),
              _connection=conn).enqueue()
    await run_worker(conn, router)
    assert [t for t, _ in seen] == ["short"]
    assert 0.9 <= seen[0][1] - start < 2


def test_only_deferred_by_and_cron_are_recurring() -> None:
    assert DelayProperties(defer_by=timedelta(seconds=5)).is_recurring
    assert DelayProperties(cron="* * * * *").is_recurring
    assert not DelayProperties(delay_until=utcnow()).is_recurring
    assert not DelayProperties().is_recurring


class _RunsAndSettles:
    """Records what the plugins are told of each run (`repid_actor_run`'s result) and of
    each settle, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl(wrapper=True)
    def repid_actor_run(self, actor):  # type: ignore[no-untyped-def]
        result = yield
        self.seen.append((actor.name, "run ok" if result.success else
                          f"run failed: {type(result.exception).__name__}"))
        return result

    @hookimpl(wrapper=True)
    def repid_ack(self, key):  # type: ignore[no-untyped-def]
        self.seen.append((key.topic, "ack"))
        return (yield)

    @hookimpl(wrapper=True)
    def repid_nack(self, key):  # type: ignore[no-untyped-def]
        self.seen.append((key.topic, "nack"))
        return (yield)

    @hookimpl(wrapper=True)
    def repid_requeue(self, key, reason):  # type: ignore[no-untyped-def]
        self.seen.append((key.topic, f"requeue {reason}"))
        return (yield)


async def test_result_that_cannot_be_encoded_is_a_failed_run_retried_then_dead(
        make_conn, run_worker, stats, messages_of, caplog) -> None:
    """One outcome per run: stored, told to the plugins (metrics, traces) and settled
    alike; a return value that is not stored, or an eager response, keeps its own."""
    plugin = _RunsAndSettles()
    conn = await make_conn(plugins=(plugin,))
    router = Router()

    @router.actor(retry_policy=no_wait)
    async def weird() -> object:
        return object()

    @router.actor
    async def weird_unstored() -> object:
        return object()

    @router.actor
    async def weird_eager(msg: MessageDependency) -> object:
        msg.set_result("given")
        return object()

    job = Job("weird", retries=2, store_result=True, _connection=conn)
    await job.enqueue()
    await Job("weird_unstored", store_result=False, _connection=conn).enqueue()
    eager = Job("weird_eager", store_result=True, _connection=conn)
    await eager.enqueue()
    with caplog.at_level(logging.ERROR, logger="repid"):
        await run_worker(conn, router, messages_limit=5, tasks_limit=1)
    assert [event for actor, event in plugin.seen if actor == "weird"] == [
        "run failed: TypeError", "requeue retry", "run failed: TypeError", "requeue retry",
        "run failed: TypeError", "nack"]
    assert [event for actor, event in plugin.seen if actor != "weird"] == [
        "run ok", "ack", "run ok", "ack"]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    [dead] = await messages_of(conn)
    assert dead.parameters.headers[DEAD_REASON_HEADER].startswith(
        "no retries left; last error: TypeError: object is not JSON-serializable")
    result = await job.result
    assert result is not None and result.success is False and result.data is None
    assert (result.exception or "").startswith("TypeError: object is not JSON-serializable")
    assert "cannot be encoded" in caplog.text and "weird" in caplog.text
    given = await eager.result
    assert given is not None and given.success and given.data == "given"


async def test_unencodable_result_settles_as_failure_in_the_v1_order_too() -> None:
    """The pytest plugin's app stores results after the settle (repid 1.x's order): the
    settle still follows the failed encoding."""
    router = Router()

    @router.actor(retry_policy=no_wait)
    async def weird() -> object:
        return object()

    app = InMemoryTestApp(MarkerSettings(routers=(router,), declare_all_known_queues=True,
                                         autoconnection=False))
    try:
        job = Job("weird", retries=1, store_result=True, _connection=app.connection)
        await asyncio.wait_for(job.enqueue(), 5)  # runs it, and its retry, at once
        names = [e.function for e in app.events.events
                 if e.function not in ("consume", "queue_declare")]
        assert names == ["enqueue", "requeue", "store_bucket", "nack", "store_bucket"]
        stored = [e.kwargs["payload"] for e in app.events.events
                  if e.function == "store_bucket"]
        assert [b.success for b in stored] == [False, False]
    finally:
        app.close()


async def test_sync_actor_past_grace_time_is_returned_too(conn: Connection, stats) -> None:
    import threading

    router = Router()
    started = threading.Event()
    release = threading.Event()

    @router.actor
    def blocking() -> None:
        started.set()
        release.wait(5)

    await Job("blocking", retries=1, _connection=conn).enqueue()
    worker = Worker(routers=[router], _connection=conn, graceful_shutdown_time=0.2)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(asyncio.to_thread(started.wait, 5), 5)
        worker.stop()
        await asyncio.wait_for(task, 5)
    finally:
        release.set()
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}


async def test_failure_logs_name_the_message_and_its_result_id(
        make_conn, run_worker, caplog) -> None:
    """From a log line an operator reaches the job's result: `repid jobs show` takes the
    result id the line names beside the message id."""
    conn = await make_conn()
    router = Router()

    @router.actor(retry_policy=no_wait)
    async def fails() -> None:
        raise RuntimeError("nope")

    job = Job("fails", retries=1, _connection=conn)
    key, _, _ = await job.enqueue()
    with caplog.at_level(logging.WARNING, logger="repid"):
        await run_worker(conn, router, messages_limit=2)
    named = f"message {key.id_} (result {job.result_id})"
    lines = [r.getMessage() for r in caplog.records]
    assert any(named in line and "retrying" in line for line in lines), lines
    assert any(named in line and "dead-lettered" in line for line in lines), lines
