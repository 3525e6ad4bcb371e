"""repid 1.x time: a naive datetime is local time, and so are cron schedules. Each test
runs under two zones that are not UTC, one ahead of it and one behind (POSIX TZ strings,
so no time zone database is needed), set with `time.tzset()` and restored after."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from repid import Connection, InMemoryMessageBroker, Job, Queue, Repid, Router, Worker

#: TZ string -> its offset from UTC (POSIX counts west of Greenwich as positive)
ZONES = {"JST-9": timedelta(hours=9), "BRT+3": timedelta(hours=-3)}


@pytest.fixture(params=sorted(ZONES))
def offset(request: pytest.FixtureRequest) -> Iterator[timedelta]:
    """The process runs in a zone other than UTC for the test; its offset is given."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        assert datetime.now().astimezone().utcoffset() == ZONES[request.param]
        yield ZONES[request.param]
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


async def test_naive_deferred_until_is_local_time_for_a_worker(offset: timedelta) -> None:
    router = Router()
    ran_at: list[float] = []

    @router.actor
    async def later() -> None:
        ran_at.append(time.monotonic())

    async with Repid(Connection(InMemoryMessageBroker())).magic(auto_disconnect=True):
        await Queue().declare()
        start = time.monotonic()
        await Job("later", deferred_until=datetime.now() + timedelta(seconds=2)).enqueue()
        worker = Worker(routers=[router], messages_limit=1)
        await asyncio.wait_for(worker.run(), 4.5)
    assert len(ran_at) == 1
    assert 1.5 <= ran_at[0] - start <= 4.5


async def test_naive_deferred_until_is_sent_as_that_local_moment(offset: timedelta) -> None:
    naive = datetime(2030, 1, 2, 12, 0, 0)
    async with Repid(Connection(InMemoryMessageBroker())).magic(auto_disconnect=True):
        await Queue().declare()
        job = Job("report", deferred_until=naive)
        _, _, params = await job.enqueue()
    assert job.deferred_until is naive  # kept as given
    assert params.delay.next_execution_time == \
        naive.replace(tzinfo=timezone.utc) - offset


def test_is_overdue_reads_naive_times_as_local(offset: timedelta) -> None:
    assert Job("x", deferred_until=datetime.now() - timedelta(seconds=5)).is_overdue
    assert not Job("x", deferred_until=datetime.now() + timedelta(minutes=30)).is_overdue


async def test_cron_runs_at_local_wall_clock_times(offset: timedelta) -> None:
    async with Repid(Connection(InMemoryMessageBroker())).magic(auto_disconnect=True):
        await Queue().declare()
        _, _, params = await Job("noon", cron="0 12 * * *").enqueue()
    first = params.delay.next_execution_time
    assert first is not None
    local = first.astimezone()  # the process's zone
    assert (local.hour, local.minute) == (12, 0)
    assert local.utcoffset() == offset
    assert timedelta(0) < first - datetime.now(timezone.utc) <= timedelta(days=1)
