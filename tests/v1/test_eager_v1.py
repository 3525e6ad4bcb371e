"""Eager responses as repid 1.x's "Message & Eager response" page describes them: a
settling call ends the actor, `set_result` / `set_exception` are plain calls applied after
it in submission order with the callbacks, and `retry` refuses a job with no retries."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    MessageDependency,
    Queue,
    RedisBucketBroker,
    Repid,
    Router,
    Worker,
)
from repid.brokers.base import MessageBroker

TIMEOUT = 10
Body = Callable[[MessageDependency], Awaitable[Any]]


@pytest.fixture(params=["in_memory", "redis"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Repid, str]]:
    broker: MessageBroker
    if request.param == "in_memory":
        broker = InMemoryMessageBroker()
        buckets: Any = InMemoryBucketBroker(use_result_bucket=True)
    else:
        from repid import RedisMessageBroker

        dsn = request.getfixturevalue("redis_dsn")
        broker = RedisMessageBroker(dsn)
        buckets = RedisBucketBroker(dsn, use_result_bucket=True)
    app = Repid(Connection(broker, results_bucket_broker=buckets))
    queue = f"eager-{uuid.uuid4().hex[:10]}"
    async with app.magic(auto_disconnect=True):
        await Queue(queue).declare()
        try:
            yield app, queue
        finally:
            await Queue(queue).delete()


async def run(queue: str, body: Body, *, retries: int = 0,
              **job: Any) -> tuple[Job, dict[str, int]]:
    """Enqueue one job whose actor is `body`, run it on one Worker, return the job and the
    queue's counts afterwards."""
    router = Router()

    @router.actor(name="eager", queue=queue, retry_policy=lambda n: 3600)
    async def eager(msg: MessageDependency) -> Any:
        return await body(msg)

    j = Job("eager", queue=queue, retries=retries, **job)
    await j.enqueue()
    await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    return j, await Queue(queue).stats()


async def settle(msg: MessageDependency, how: str) -> None:
    if how in ("retry", "force_retry"):
        await getattr(msg, how)(next_retry=timedelta(hours=1))
    else:
        await getattr(msg, how)()


EXPECTED = {  # where the message is once the eager response was made
    "ack": {"ready": 0, "delayed": 0, "dead": 0},
    "nack": {"ready": 0, "delayed": 0, "dead": 1},
    "reject": {"ready": 1, "delayed": 0, "dead": 0},
    "retry": {"ready": 0, "delayed": 1, "dead": 0},
    "force_retry": {"ready": 0, "delayed": 1, "dead": 0},
    "reschedule": {"ready": 1, "delayed": 0, "dead": 0},
}


@pytest.mark.parametrize("how", list(EXPECTED))
async def test_an_eager_response_ends_the_actor_and_its_return_is_not_stored(
        app: tuple[Repid, str], how: str) -> None:
    _, queue = app
    after: list[str] = []

    async def body(msg: MessageDependency) -> str:
        await settle(msg, how)
        after.append("Hello?")
        return "returned"

    job, counts = await run(queue, body, retries=1)
    assert after == []
    assert await job.result is None
    assert {k: counts[k] for k in ("ready", "delayed", "dead")} == EXPECTED[how]


async def test_set_result_is_a_plain_call_applied_after_the_ack(app: tuple[Repid, str]) -> None:
    _, queue = app

    async def body(msg: MessageDependency) -> int:
        assert msg.set_result(123) is None  # type: ignore[func-returns-value]
        await msg.ack()
        return 0

    job, counts = await run(queue, body)
    result = await job.result
    assert result is not None and result.success and result.data == 123
    assert counts["ready"] == counts["dead"] == 0


async def test_set_exception_stores_a_failure(app: tuple[Repid, str]) -> None:
    _, queue = app

    async def body(msg: MessageDependency) -> int:
        msg.set_exception(Exception("Terrible error happened during execution!"))
        await msg.ack()
        return 0

    job, counts = await run(queue, body)
    result = await job.result
    assert result is not None and not result.success
    assert "Terrible error happened during execution!" in (result.exception or "")
    assert counts["dead"] == 0  # acked, as the actor said


async def test_the_latest_of_set_result_and_set_exception_wins(app: tuple[Repid, str]) -> None:
    _, queue = app

    async def body(msg: MessageDependency) -> None:
        msg.set_exception(ValueError("first"))
        msg.set_result({"second": True})
        await msg.nack()

    job, counts = await run(queue, body)
    result = await job.result
    assert result is not None and result.success and result.data == {"second": True}
    assert counts["dead"] == 1


async def test_callbacks_and_the_result_run_in_submission_order_after_the_response(
        app: tuple[Repid, str]) -> None:
    _, queue = app
    seen: list[tuple[str, bool, int]] = []  # (callback, result stored yet, dead count)
    main_thread = threading.get_ident()
    jobs: list[Job] = []

    async def state() -> tuple[bool, int]:
        return (await jobs[0].result) is not None, (await Queue(queue).stats())["dead"]

    def sync_callback() -> None:
        seen.append(("sync", threading.get_ident() != main_thread, -1))

    async def before() -> None:
        seen.append(("before", *await state()))

    async def after() -> None:
        seen.append(("after", *await state()))

    async def body(msg: MessageDependency) -> int:
        msg.add_callback(before)
        msg.add_callback(sync_callback)
        msg.set_result(123)
        msg.add_callback(after)
        assert seen == []
        await msg.nack()  # dead: 1 once it is done
        return 0

    router = Router()

    @router.actor(name="eager", queue=queue)
    async def eager(msg: MessageDependency) -> Any:
        return await body(msg)

    job = Job("eager", queue=queue)
    jobs.append(job)
    await job.enqueue()
    await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    assert seen == [("before", False, 1), ("sync", True, -1), ("after", True, 1)]


async def test_a_raising_callback_fails_the_run_and_stops_the_rest(
        app: tuple[Repid, str]) -> None:
    _, queue = app
    calls: list[str] = []
    outcome: list[BaseException] = []

    def broken() -> None:
        raise RuntimeError("callback broke")

    async def body(msg: MessageDependency) -> None:
        msg.add_callback(broken)
        msg.add_callback(lambda: calls.append("later"))
        try:
            await msg.ack()
        except RuntimeError as exc:  # the callback's error comes out of the eager call
            outcome.append(exc)
            raise

    job, counts = await run(queue, body, retries=2)
    assert [str(e) for e in outcome] == ["callback broke"]
    assert calls == []
    result = await job.result
    assert result is not None and not result.success
    assert result.exception == "RuntimeError: callback broke"
    # the message was acked by the eager response; the failure is not settled again
    assert counts == {**counts, "ready": 0, "delayed": 0, "dead": 0}


async def test_retry_with_no_retries_left_raises_value_error(app: tuple[Repid, str]) -> None:
    _, queue = app
    raised: list[BaseException] = []

    async def body(msg: MessageDependency) -> None:
        try:
            await msg.retry()
        except ValueError as exc:
            raised.append(exc)
        await msg.force_retry(next_retry=timedelta(hours=1))

    _, counts = await run(queue, body, retries=0)
    assert len(raised) == 1
    assert counts["delayed"] == 1 and counts["dead"] == 0


async def test_retry_next_retry_sets_the_delay(app: tuple[Repid, str]) -> None:
    _, queue = app

    async def body(msg: MessageDependency) -> None:
        await msg.retry(next_retry=timedelta(seconds=0))

    router = Router()
    tries: list[int] = []

    @router.actor(name="eager", queue=queue, retry_policy=lambda n: 3600)
    async def eager(msg: MessageDependency) -> None:  # a failure would wait an hour
        tries.append(msg.parameters.retries.already_tried)
        if len(tries) == 1:
            await body(msg)

    await Job("eager", queue=queue, retries=1).enqueue()
    await asyncio.wait_for(Worker(routers=[router], messages_limit=2).run(), TIMEOUT)
    assert tries == [0, 1]


async def test_settling_a_queue_message_twice_raises_value_error(
        app: tuple[Repid, str]) -> None:
    _, queue = app
    await Job("eager", queue=queue).enqueue()
    iterator = Queue(queue).get_messages()
    message = await asyncio.wait_for(anext(iterator), TIMEOUT)
    await message.ack()
    with pytest.raises(ValueError, match="already acked"):
        await message.reject()
    await iterator.aclose()
