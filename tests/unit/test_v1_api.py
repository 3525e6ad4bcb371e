"""repid 1.x code runs unchanged: the documented v1 API of jobs, queues, names, actors and
retry policies, on the in-memory broker (chaining on Redis and RabbitMQ is in
tests/integration/test_v1_chaining.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import pytest

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Parameters,
    Queue,
    Repid,
    Router,
    RoutingKey,
    Worker,
    default_retry_policy_factory,
    enqueue_many,
)

TIMEOUT = 5


def _app(args: bool = False, results: bool = False) -> Repid:
    return Repid(Connection(
        InMemoryMessageBroker(),
        args_bucket_broker=InMemoryBucketBroker() if args else None,
        results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True) if results
        else None))


# --- 1. job.queue is a Queue ------------------------------------------------------------


async def test_job_queue_is_a_queue_bound_to_the_jobs_connection() -> None:
    async with _app().magic():
        job = Job("my_job", queue="emails")
        assert isinstance(job.queue, Queue) and job.queue.name == "emails"
        await job.queue.declare()  # the v1 guide's first steps
        await job.enqueue()
        assert (await job.queue.stats())["ready"] == 1


async def test_job_queue_given_as_a_queue_object_is_kept() -> None:
    conn = Connection(InMemoryMessageBroker())
    await conn.connect()
    queue = Queue("reports", _connection=conn)
    job = Job("build", queue=queue, _connection=conn)
    assert job.queue is queue
    await job.queue.declare()
    key, _, _ = await job.enqueue()
    assert key.queue == "reports"


# --- 2. enqueue returns (key, args, params) ----------------------------------------------


async def test_enqueue_returns_key_args_and_params() -> None:
    async with _app().magic():
        await Queue().declare()
        key, args, params = await Job("add", args={"a": 1, "b": 2}).enqueue()
        assert isinstance(key, RoutingKey) and key.topic == "add"
        assert args == '{"a":1,"b":2}'
        assert isinstance(params, Parameters) and params.retries.max_amount == 0
        key2, args2, _ = await Job("noop").enqueue()
        assert args2 == "" and key2 != key
        sent = await Job("noop", id_="mine").enqueue()
        assert sent.id_ == "mine" and sent.key.id_ == "mine"  # the key's fields, too
        keys = await enqueue_many([Job("noop"), Job("noop")])
        assert all(isinstance(k, RoutingKey) for k in keys)


# --- 3. resolved attributes ---------------------------------------------------------------


async def test_bucket_flags_are_resolved_from_the_connection() -> None:
    async with _app(args=True, results=True).magic():
        job = Job("x", args={"a": 1})
        assert job.use_args_bucketer is True and job.store_result is True
        assert Job("x", store_result=False).store_result is False
    async with _app().magic():
        job = Job("x")
        assert job.use_args_bucketer is False and job.store_result is False
        assert len(job.args_id) == 32 and len(job.result_id) == 32
        assert Job("x").args_id != job.args_id


async def test_a_job_built_before_any_connection_resolves_at_first_use() -> None:
    job = Job("x", args={"a": 1})  # no magic bound yet
    assert job.store_result is None
    async with _app(results=True).magic():
        await Queue().declare()
        await job.enqueue()
    assert job.store_result is True and job.use_args_bucketer is False


def test_deferred_until_is_exactly_the_value_passed() -> None:
    naive = datetime(2031, 5, 6, 7, 8, 9)
    assert Job("x", deferred_until=naive).deferred_until is naive


# --- 4. arguments from an existing bucket -----------------------------------------------


async def test_chaining_a_result_into_the_next_jobs_arguments() -> None:
    shared = InMemoryBucketBroker(use_result_bucket=True)
    app = Repid(Connection(InMemoryMessageBroker(), args_bucket_broker=shared,
                           results_bucket_broker=shared))
    router = Router()
    got: list[tuple[int, str]] = []

    @router.actor
    async def first() -> dict[str, object]:
        return {"count": 3, "label": "three"}

    @router.actor
    async def second(count: int, label: str) -> None:
        got.append((count, label))

    async with app.magic():
        await Queue().declare()
        one = Job("first")
        await one.enqueue()
        await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
        two = Job("second", args_id=one.result_id)
        assert two.use_args_bucketer is True
        _, args, _ = await two.enqueue()
        assert one.result_id in args  # a reference, not the arguments
        await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    assert got == [(3, "three")]


# --- 5. names -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda n: Job(n), lambda n: Queue(n),
                                  lambda n: Job("ok", queue=n)])
def test_names_start_with_a_letter_or_underscore(make: object) -> None:
    with pytest.raises(ValueError, match="start it with a letter or '_'"):
        make("1starts_with_digit")  # type: ignore[operator]
    make("_private-1")  # type: ignore[operator]


def test_ids_may_start_with_a_digit() -> None:
    job = Job("x", id_="1abc", args_id="2def", result_id="3f")
    assert (job.id_, job.args_id, job.result_id) == ("1abc", "2def", "3f")


# --- 7. two actors with one name ------------------------------------------------------


async def test_the_actor_registered_last_handles_the_jobs(
        caplog: pytest.LogCaptureFixture) -> None:
    router = Router()
    ran: list[str] = []

    @router.actor(name="same")
    async def first_one() -> None:
        ran.append("first")

    with caplog.at_level(logging.WARNING, logger="repid.router"):
        @router.actor(name="same")
        async def second_one() -> None:
            ran.append("second")

    [record] = [r for r in caplog.records if r.name == "repid.router"]
    assert "first_one" in record.getMessage() and "second_one" in record.getMessage()
    async with _app().magic():
        await Queue().declare()
        await Job("same").enqueue()
        await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    assert ran == ["second"]


# --- 8. default_retry_policy_factory ---------------------------------------------------


def test_default_retry_policy_takes_v1_arguments_and_defaults_to_the_first_retry() -> None:
    policy = default_retry_policy_factory(min_backoff=2, max_backoff=100, multiplier=3,
                                          max_exponent=2)
    assert policy() == timedelta(seconds=6)  # 1.x: multiplier * 2 ** n, at least min
    assert policy(2) == timedelta(seconds=12)
    assert policy(3) == policy(4) == timedelta(seconds=12)  # exponent capped at 2
    assert default_retry_policy_factory(min_backoff=1, max_backoff=timedelta(seconds=4))(9) \
        == timedelta(seconds=4)


# --- 10. a DSN read from an unset variable -----------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: __import__("repid").RabbitMessageBroker(dsn=None),
    lambda: __import__("repid").RedisMessageBroker(dsn=None),
    lambda: __import__("repid").RedisBucketBroker(dsn=""),
])
def test_a_missing_dsn_is_refused_naming_it(make: object) -> None:
    with pytest.raises(ValueError, match=r"needs a DSN such as .*variable is not set"):
        make()  # type: ignore[operator]
