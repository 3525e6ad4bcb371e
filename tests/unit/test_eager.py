"""Eager responses on MessageDependency inside an actor: each settles the message at once,
applies what set_result / add_callback submitted, and ends the actor; the worker then
leaves the message alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from repid import Connection, Job, MessageCategory, MessageDependency, Router
from repid.errors import AlreadySettledError
from repid.testing.event_log import EventLogPlugin

SETTLES = ("ack", "nack", "reject", "requeue")


@pytest.fixture
async def logged(make_conn) -> tuple[Connection, EventLogPlugin]:
    log = EventLogPlugin()
    return await make_conn(plugins=(log,)), log


def settles(log: EventLogPlugin) -> list[str]:
    return [e.function for e in log.events if e.function in SETTLES]


async def run_one(conn: Connection, run_worker, body: Callable[[MessageDependency],
                  Awaitable[Any]], **job: Any) -> tuple[Job, list[MessageDependency]]:
    router = Router()
    seen: list[MessageDependency] = []

    @router.actor(retry_policy=lambda n: 0)
    async def eager(msg: MessageDependency) -> Any:
        seen.append(msg)
        return await body(msg)

    j = Job("eager", _connection=conn, **job)
    await j.enqueue()
    await run_worker(conn, router)
    return j, seen


async def test_ack(logged, run_worker, stats) -> None:
    conn, log = logged

    in_flight: list[int] = []

    async def callback() -> None:
        in_flight.append((await stats(conn))["in_flight"])  # settled at once

    async def body(msg: MessageDependency) -> str:
        msg.add_callback(callback)
        await msg.ack()
        return "value"  # not reached: the eager response ended the actor

    job, [msg] = await run_one(conn, run_worker, body, retries=2)
    assert msg.is_settled
    assert in_flight == [0]
    assert settles(log) == ["ack"]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    assert await job.result is None  # nothing was set with set_result


async def test_an_actor_catching_exception_still_ends_at_its_ack(logged, run_worker,
                                                                 stats) -> None:
    conn, log = logged
    reached: list[str] = []

    async def body(msg: MessageDependency) -> None:
        try:
            await msg.ack()
        except Exception:  # the eager exit is not an Exception: this does not catch it
            reached.append("except")
        reached.append("after")
        raise ValueError("after ack")

    job, _ = await run_one(conn, run_worker, body, retries=2)
    assert reached == []
    assert settles(log) == ["ack"]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    assert await job.result is None


async def test_nack(logged, run_worker, stats, messages_of) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> None:
        await msg.nack()

    _, _ = await run_one(conn, run_worker, body, retries=3)
    assert settles(log) == ["nack"]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    [dead] = await messages_of(conn)
    assert dead.key.topic == "eager" and dead.category is MessageCategory.DEAD


async def test_reject_returns_message_unchanged(logged, run_worker, stats) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> None:
        await msg.reject()

    _, [msg] = await run_one(conn, run_worker, body, retries=3)
    assert settles(log) == ["reject"]
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    stored = next(conn.message_broker.queues["default"].simple.items())  # type: ignore
    assert stored.key.id_ == msg.key.id_
    assert stored.params.retries.already_tried == 0


async def test_retry_with_retries_left(logged, run_worker, stats, messages_of) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> None:
        await msg.retry(delay=60)

    await run_one(conn, run_worker, body, retries=1)
    assert settles(log) == ["requeue"]
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    assert delayed.parameters.retries.already_tried == 1


async def test_retry_uses_actor_retry_policy_by_default(logged, run_worker, stats) -> None:
    conn, _ = logged

    async def body(msg: MessageDependency) -> None:
        await msg.retry()  # the actor's retry_policy (0 s): ready again at once

    _, _ = await run_one(conn, run_worker, body, retries=1)
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    stored = next(conn.message_broker.queues["default"].simple.items())  # type: ignore
    assert stored.params.retries.already_tried == 1


async def test_retry_without_retries_left_raises_and_the_run_fails(logged, run_worker,
                                                                   stats) -> None:
    conn, log = logged
    raised: list[BaseException] = []

    async def body(msg: MessageDependency) -> None:
        try:
            await msg.retry()
        except ValueError as exc:
            raised.append(exc)
            raise

    job, _ = await run_one(conn, run_worker, body, retries=0)
    assert len(raised) == 1 and "no retries left" in str(raised[0])
    assert settles(log) == ["nack"]  # the failed run, with no retries left
    result = await job.result
    assert result is not None and result.exception is not None
    assert result.exception.startswith("NoRetriesLeftError")
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}


async def test_force_retry_without_retries_left_requeues(logged, run_worker, stats) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> None:
        await msg.force_retry(0)

    await run_one(conn, run_worker, body, retries=0)
    assert settles(log) == ["requeue"]
    assert await stats(conn) == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    stored = next(conn.message_broker.queues["default"].simple.items())  # type: ignore
    assert stored.params.retries.already_tried == 1


async def test_reschedule_sends_back_with_tries_reset(logged, run_worker, stats) -> None:
    conn, log = logged
    router = Router()
    tries = []

    @router.actor(retry_policy=lambda n: 0)
    async def eager(msg: MessageDependency) -> None:
        tries.append(msg.parameters.retries.already_tried)
        if len(tries) == 1:
            raise ValueError("fail once")
        if len(tries) == 2:
            await msg.reschedule()

    await Job("eager", retries=3, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=3)
    assert tries == [0, 1, 0]
    assert settles(log) == ["requeue", "requeue", "ack"]


async def test_reschedule_of_recurring_job_goes_to_next_time(logged, run_worker,
                                                             stats) -> None:
    conn, log = logged
    router = Router()

    @router.actor
    async def tick(msg: MessageDependency) -> None:
        await msg.reschedule()

    await Job("tick", deferred_by=1, _connection=conn).enqueue()
    await run_worker(conn, router)
    assert settles(log) == ["requeue"]
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}


async def test_set_result_replaces_return_value(logged, run_worker, stats) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> str:
        msg.set_result({"early": [1, 2]})
        return "returned"

    job, _ = await run_one(conn, run_worker, body)
    result = await job.result
    assert result is not None and result.success is True
    assert result.data == {"early": [1, 2]}
    assert [e.function for e in log.events].count("store_bucket") == 1
    assert settles(log) == ["ack"]


async def test_set_exception_stores_failure_and_message_is_acked(logged, run_worker,
                                                                 stats) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> str:
        msg.set_exception(LookupError("not found"))
        return "returned"

    job, _ = await run_one(conn, run_worker, body)
    result = await job.result
    assert result is not None and result.success is False
    assert result.exception == "LookupError: not found"
    assert [e.function for e in log.events].count("store_bucket") == 1
    assert settles(log) == ["ack"]


async def test_set_result_without_results_broker_raises(make_conn, run_worker) -> None:
    conn = await make_conn(results=False)
    errors = []

    async def body(msg: MessageDependency) -> None:
        try:
            msg.set_result(1)
        except ValueError as exc:
            errors.append(str(exc))

    await run_one(conn, run_worker, body)
    assert len(errors) == 1 and "no result to store" in errors[0]


async def test_add_callback_sync_and_async_run_after_processing(logged, run_worker,
                                                                stats) -> None:
    conn, log = logged
    calls: list[tuple[str, int, bool]] = []
    job_holder: list[Job] = []

    async def state() -> tuple[int, bool]:
        result = await job_holder[0].result
        return (await stats(conn))["in_flight"], result is not None

    def sync_cb() -> None:
        calls.append(("sync", len(log.events), False))

    async def async_cb() -> None:
        in_flight, has_result = await state()
        calls.append(("async", in_flight, has_result))

    async def body(msg: MessageDependency) -> str:
        msg.add_callback(sync_cb)
        msg.add_callback(async_cb)
        assert calls == []  # not yet
        return "x"

    router = Router()

    @router.actor
    async def eager(msg: MessageDependency) -> Any:
        return await body(msg)

    job = Job("eager", _connection=conn)
    job_holder.append(job)
    await job.enqueue()
    await run_worker(conn, router)
    assert [c[0] for c in calls] == ["sync", "async"]
    # after the ack and the stored result
    ack_index = [e.function for e in log.events].index("ack")
    assert calls[0][1] > ack_index
    assert calls[1][1:] == (0, True)


async def test_failing_callback_after_a_return_is_logged_and_stops_the_rest(
        conn: Connection, run_worker, caplog) -> None:
    calls = []

    def bad() -> None:
        raise RuntimeError("callback broke")

    async def body(msg: MessageDependency) -> None:
        msg.add_callback(lambda: calls.append("before"))
        msg.add_callback(bad)
        msg.add_callback(lambda: calls.append("after"))

    await run_one(conn, run_worker, body)
    assert calls == ["before"]
    assert "callback broke" in caplog.text


async def test_settling_twice_is_refused(logged, run_worker, messages_of) -> None:
    conn, log = logged

    async def body(msg: MessageDependency) -> None:
        await msg.nack()

    await run_one(conn, run_worker, body)
    [dead] = await messages_of(conn, category=MessageCategory.DEAD)
    await dead.reschedule()
    errors = []
    for second in (dead.nack, dead.reject, dead.ack, dead.force_retry, dead.reschedule):
        try:
            await second()
        except AlreadySettledError as exc:
            assert isinstance(exc, ValueError) and isinstance(exc, RuntimeError)
            errors.append(str(exc))
    assert len(errors) == 5
    assert all("already acked" in e for e in errors)
    assert settles(log) == ["nack", "requeue"]
