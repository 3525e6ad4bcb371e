"""Retry policies and RetryPlugin: the delays, the retry_on filter, and precedence."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from repid import Job, MessageCategory, MessageDependency, Router, default_retry_policy_factory
from repid.data import Parameters, RetriesProperties
from repid_plugins.retries import RetryPlugin, exponential, fixed, jittered

IN_MEMORY = pytest.mark.parametrize("make_conn", ["in_memory"], indirect=True)


def secs(policy: Any, upto: int = 6) -> list[float]:
    return [policy(n).total_seconds() for n in range(1, upto + 1)]


def test_exponential_is_geometric_from_min_backoff() -> None:
    assert secs(exponential()) == [1, 5, 25, 125, 625, 3125]
    # not repid 1.x's formula, which repid.default_retry_policy_factory keeps
    assert secs(default_retry_policy_factory(), 3) == [10, 20, 40]
    assert exponential()(30) == timedelta(days=1)  # capped
    assert secs(exponential(min_backoff=timedelta(seconds=2), multiplier=2,
                            max_backoff=10)) == [2, 4, 8, 10, 10, 10]


def test_fixed_waits_the_same() -> None:
    assert secs(fixed(3)) == [3] * 6
    assert secs(fixed(timedelta(minutes=1)), 3) == [60] * 3
    with pytest.raises(ValueError, match="negative"):
        fixed(-1)


def test_jittered_stays_within_its_band() -> None:
    base = exponential()
    policy = jittered(base, jitter=0.5, rng=random.Random(7))
    for n in range(1, 10):
        for _ in range(50):
            d = policy(n)
            assert base(n) * 0.5 <= d <= base(n)
    assert len({policy(3) for _ in range(20)}) > 1  # it does vary
    assert secs(jittered(fixed(4), jitter=0.0)) == [4] * 6
    full = jittered(fixed(10), jitter=1.0, rng=random.Random(1))
    assert all(0 <= full(1).total_seconds() <= 10 for _ in range(100))
    with pytest.raises(ValueError):
        jittered(jitter=1.5)


def test_plugin_answers_the_delay_hook() -> None:
    plugin = RetryPlugin(exponential())
    failed_second_run = Parameters(retries=RetriesProperties(max_amount=5, already_tried=2))
    assert plugin.repid_retry_delay(failed_second_run) == timedelta(seconds=25)
    with pytest.raises(TypeError):
        RetryPlugin(retry_on=[ValueError, "oops"])  # type: ignore[list-item]


@IN_MEMORY
async def test_retry_on_sends_other_exceptions_to_the_dlq(make_conn: Any, queue_name: str,
                                                          run_worker: Any) -> None:
    conn = await make_conn(queue_name,
                           plugins=[RetryPlugin(fixed(0), retry_on=(ConnectionError,))])
    router = Router()
    tries: dict[str, int] = {}

    @router.actor(name="work", queue=queue_name)
    async def work(error: str, msg: MessageDependency) -> None:
        tries[error] = msg.parameters.retries.already_tried + 1
        if tries[error] == 1:
            raise {"conn": ConnectionError, "value": ValueError}[error]("first try fails")

    await Job("work", queue=queue_name, args={"error": "value"}, retries=3,
              _connection=conn).enqueue()
    await Job("work", queue=queue_name, args={"error": "conn"}, retries=3,
              _connection=conn).enqueue()
    await run_worker(conn, router, 3)

    assert tries == {"value": 1, "conn": 2}  # ValueError is not retried, ConnectionError is
    stats = await conn.message_broker.queue_stats(queue_name)
    assert stats["dead"] == 1 and stats["ready"] == stats["delayed"] == 0


@IN_MEMORY
async def test_plugin_delay_replaces_the_default(make_conn: Any, queue_name: str,
                                                 run_worker: Any) -> None:
    conn = await make_conn(queue_name, plugins=[RetryPlugin(fixed(timedelta(hours=1)))])
    router = Router()

    @router.actor(name="work", queue=queue_name)
    async def work() -> None:
        raise ValueError("fails")

    await Job("work", queue=queue_name, retries=1, _connection=conn).enqueue()
    await run_worker(conn, router, 1)
    stats = await conn.message_broker.queue_stats(queue_name)
    assert stats["delayed"] == 1
    waiting = [m async for m in conn.message_broker.consume(
        queue_name, category=MessageCategory.DELAYED, stop_when_empty=True)]
    when = waiting[0][2].delay.next_execution_time
    assert when is not None
    assert timedelta(minutes=59) < when - waiting[0][2].timestamp


@IN_MEMORY
async def test_actor_retry_policy_wins_over_the_plugin(make_conn: Any, queue_name: str,
                                                       run_worker: Any) -> None:
    conn = await make_conn(queue_name, plugins=[RetryPlugin(fixed(timedelta(hours=1)))])
    router = Router()
    runs: list[int] = []

    @router.actor(name="work", queue=queue_name, retry_policy=lambda n: 0)
    async def work(msg: MessageDependency) -> None:
        runs.append(msg.parameters.retries.already_tried)
        if len(runs) == 1:
            raise ValueError("first try fails")

    await Job("work", queue=queue_name, retries=1, _connection=conn).enqueue()
    await run_worker(conn, router, 2)  # the retry ran at once, not in an hour
    assert runs == [0, 1]
