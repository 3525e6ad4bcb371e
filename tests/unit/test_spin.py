"""The reply spin: it keeps the loop polling instead of sleeping, and only for as long as
it is asked to."""

from __future__ import annotations

import asyncio
import time

from repid.brokers._spin import Spin


async def _cpu_while_sleeping(seconds: float) -> float:
    """Process CPU time spent while this coroutine sleeps `seconds`."""
    start = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - start


async def test_a_spin_keeps_the_loop_busy_until_it_is_stopped() -> None:
    spin = Spin(10.0)
    try:
        busy = await _cpu_while_sleeping(0.2)
    finally:
        spin.stop()
    idle = await _cpu_while_sleeping(0.2)
    # polling all along costs about the whole 200 ms; a loop left to sleep, almost nothing
    assert busy > 0.06, busy
    assert idle < 0.03, idle


async def test_a_spin_ends_by_itself_once_its_time_is_up() -> None:
    spin = Spin(0.005)
    await asyncio.sleep(0.01)  # its time runs out, nobody stops it
    try:
        assert await _cpu_while_sleeping(0.2) < 0.03
    finally:
        spin.stop()


async def test_other_work_runs_while_a_spin_is_on() -> None:
    spin = Spin(10.0)
    try:
        done = await asyncio.wait_for(asyncio.to_thread(sum, range(1000)), 1)
        assert done == 499500
        assert await asyncio.wait_for(asyncio.sleep(0.001, "slept"), 1) == "slept"
    finally:
        spin.stop()
