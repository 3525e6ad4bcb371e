"""The decision hooks see the delivery's stash: what an around hook of the same run kept
there decides whether, and after how long, a failed run is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from repid import Connection, Job, MessageCategory, Router, StashKey, hookimpl
from repid.data import Parameters, Stash, utcnow

#: what the wrapper below records: the attempt the run was
ATTEMPT: StashKey[int] = StashKey()


class AttemptAware:
    """Records each run's attempt in the stash around the actor run; refuses a retry after
    the second attempt and waits 0.3 s per attempt, reading only the stash."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int | None]] = []

    @hookimpl(wrapper=True)
    def repid_actor_run(self, params: Parameters, stash: Stash) -> Generator[None, Any, Any]:
        stash[ATTEMPT] = params.retries.already_tried + 1
        return (yield)

    @hookimpl
    def repid_should_retry(self, stash: Stash) -> bool:
        self.asked.append(("should_retry", stash.get(ATTEMPT, None)))
        return stash[ATTEMPT] < 2

    @hookimpl
    def repid_retry_delay(self, stash: Stash) -> timedelta:
        self.asked.append(("retry_delay", stash.get(ATTEMPT, None)))
        return timedelta(seconds=0.3 * stash[ATTEMPT])


async def test_decision_hooks_read_what_the_run_stashed(make_conn, run_worker, stats,
                                                        messages_of) -> None:
    plugin = AttemptAware()
    conn: Connection = await make_conn(plugins=(plugin,))
    router = Router()

    @router.actor
    async def fails() -> None:
        raise RuntimeError("always")

    await Job("fails", retries=5, _connection=conn).enqueue()
    await run_worker(conn, router)  # attempt 1: retried after 0.3 s (the stash said 1)
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    wait = (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 0.1 < wait <= 0.3
    assert plugin.asked == [("should_retry", 1), ("retry_delay", 1)]
    await asyncio.sleep(0.35)
    await run_worker(conn, router)  # attempt 2: the stash says 2, so no retry though 4 left
    assert plugin.asked[2:] == [("should_retry", 2)]
    assert (await stats(conn))["dead"] == 1
