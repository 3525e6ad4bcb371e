"""repid 1.x retry delays: `default_retry_policy_factory` gives 1.x's delays for the same
arguments (`multiplier * 2 ** n`, the exponent capped, then held between the minimum and
the maximum backoff, no jitter), and a job with no policy waits 1.x's first delay."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any

from repid import (
    Connection,
    InMemoryMessageBroker,
    Job,
    Parameters,
    Queue,
    Repid,
    Router,
    Worker,
    default_retry_policy_factory,
    hookimpl,
)

TIMEOUT = 5


def seconds(policy: Any, upto: int) -> list[float]:
    return [policy(n).total_seconds() for n in range(1, upto + 1)]


def test_the_reference_arguments_give_the_v1_delays() -> None:
    policy = default_retry_policy_factory(min_backoff=60, max_backoff=86400, multiplier=5,
                                          max_exponent=15)
    assert seconds(policy, 8) == [60, 60, 60, 80, 160, 320, 640, 1280]
    assert policy(14) == timedelta(seconds=81920)
    assert policy(15) == policy(40) == timedelta(days=1)  # 5 * 2**15 is past the maximum


def test_the_exponent_stops_at_max_exponent() -> None:
    policy = default_retry_policy_factory(min_backoff=1, max_backoff=10**6, multiplier=3,
                                          max_exponent=4)
    assert seconds(policy, 6) == [6, 12, 24, 48, 48, 48]


def test_the_minimum_wins_over_a_smaller_maximum() -> None:
    policy = default_retry_policy_factory(min_backoff=30, max_backoff=20)
    assert seconds(policy, 3) == [30, 30, 30]


def test_the_defaults_are_v1s() -> None:
    policy = default_retry_policy_factory()
    assert policy() == policy(1) == timedelta(seconds=10)
    assert seconds(policy, 5) == [10, 20, 40, 80, 160]
    assert policy(14) == timedelta(seconds=81920)
    assert policy(15) == timedelta(days=1)


class RetryDelays:
    """Records how far in the future each retry was requeued."""

    def __init__(self) -> None:
        self.delays: list[timedelta] = []

    @hookimpl(wrapper=True)
    def repid_requeue(self, params: Parameters, reason: str | None) -> Generator[None, Any, Any]:
        ready = params.delay.next_execution_time
        if reason == "retry" and ready is not None:
            self.delays.append(ready - datetime.now(timezone.utc))
        return (yield)


async def test_a_job_without_a_policy_first_retries_after_v1s_first_delay() -> None:
    recorder = RetryDelays()
    router = Router()

    @router.actor
    async def flaky() -> None:
        raise ConnectionError("down")

    app = Repid(Connection(InMemoryMessageBroker(), plugins=[recorder]))
    async with app.magic(auto_disconnect=True):
        await Queue().declare()
        await Job("flaky", retries=1).enqueue()
        await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    assert len(recorder.delays) == 1
    assert timedelta(seconds=9) <= recorder.delays[0] <= timedelta(seconds=10)
