"""The actor runs' timeouts (`repid.worker._deadlines`): one loop timer for every run,
cancelling each run at its own deadline and never a run that has ended."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from repid.worker._deadlines import SLACK, Deadlines


async def _run(deadlines: Deadlines, seconds: float, work: float) -> tuple[str, float]:
    """A run of `work` seconds under a deadline of `seconds`: how it ended, and when."""
    started = time.monotonic()
    entry = deadlines.start(seconds)
    try:
        await asyncio.sleep(work)
        return "finished", time.monotonic() - started
    except asyncio.CancelledError:
        if not deadlines.timed_out(entry):
            raise
        return "timed out", time.monotonic() - started
    finally:
        deadlines.stop(entry)


async def test_a_run_past_its_deadline_is_cancelled_at_it_and_goes_on_normally() -> None:
    deadlines = Deadlines()
    try:
        how, took = await asyncio.wait_for(_run(deadlines, 0.1, 5), 2)
        assert how == "timed out" and 0.09 <= took < 0.5
        task = asyncio.current_task()
        assert task is not None
        if sys.version_info >= (3, 11):
            assert task.cancelling() == 0  # the cancel request was taken back
        await asyncio.sleep(0.01)  # and the task is not cancelled again
    finally:
        deadlines.close()


async def test_each_run_gets_its_own_deadline_whatever_the_order_they_start_in() -> None:
    deadlines = Deadlines()
    try:
        long = asyncio.create_task(_run(deadlines, 0.6, 5))
        await asyncio.sleep(0.01)
        short = asyncio.create_task(_run(deadlines, 0.1, 5))  # earlier than the timer's
        quick = asyncio.create_task(_run(deadlines, 0.1, 0.02))  # ends before it
        (how_short, t_short), (how_quick, _), (how_long, t_long) = await asyncio.wait_for(
            asyncio.gather(short, quick, long), 3)
        assert (how_short, how_quick, how_long) == ("timed out", "finished", "timed out")
        assert 0.09 <= t_short < 0.4
        assert 0.59 <= t_long < 1.0
    finally:
        deadlines.close()


async def test_runs_that_end_in_time_are_never_cancelled_and_the_heap_stays_small() -> None:
    deadlines = Deadlines()
    try:
        for _ in range(5 * SLACK):
            assert await _run(deadlines, 0.2, 0) == ("finished", pytest.approx(0, abs=0.1))
            assert deadlines.held <= SLACK + 1
        await asyncio.sleep(0.3)  # the timer fires, with every run over: nothing happens
        assert deadlines.held == 0
    finally:
        deadlines.close()


async def test_many_runs_at_once_each_end_by_their_own_outcome() -> None:
    deadlines = Deadlines()
    try:
        works = [0.01 * (i % 7) for i in range(300)] + [5.0] * 20
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(_run(deadlines, 0.15, w) for w in works)), 3)
        assert [how for how, _ in outcomes] == ["finished"] * 300 + ["timed out"] * 20
        assert deadlines.held <= SLACK + 1
    finally:
        deadlines.close()


async def test_another_cancel_is_not_taken_for_the_timeout() -> None:
    deadlines = Deadlines()
    try:
        run = asyncio.create_task(_run(deadlines, 5, 5))
        await asyncio.sleep(0.02)
        run.cancel()  # a worker shutting down
        with pytest.raises(asyncio.CancelledError):
            await run
    finally:
        deadlines.close()


async def test_close_drops_every_deadline() -> None:
    deadlines = Deadlines()
    entry = deadlines.start(0.05)
    deadlines.close()
    await asyncio.sleep(0.1)  # this task is not cancelled: the timer went with close()
    assert not deadlines.timed_out(entry) and deadlines.held == 0


def test_a_worker_run_again_on_a_new_loop_starts_afresh() -> None:
    deadlines = Deadlines()
    for _ in range(2):  # asyncio.run makes a new loop each time
        how, _ = asyncio.run(_run(deadlines, 0.05, 1))
        assert how == "timed out"
    deadlines.close()
