"""Shared pieces of the benchmarks: timing and a plugin wrapping every hook doing nothing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from repid import hookimpl


async def rate(n: int, run: Callable[[], Awaitable[Any]]) -> float:
    """Jobs per second of `run()`, which handles `n` jobs."""
    start = time.perf_counter()
    await run()
    return n / (time.perf_counter() - start)



class NoopPlugin:
    """A wrapper on every around hook that only passes the result through."""

    @hookimpl(wrapper=True)
    def repid_consume(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_enqueue(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_requeue(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_ack(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_nack(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_reject(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_queue_declare(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_queue_flush(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_queue_delete(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_get_bucket(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_store_bucket(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self) -> Generator[None, Any, Any]:
        return (yield)

    @hookimpl(wrapper=True)
    def repid_actor_run(self) -> Generator[None, Any, Any]:
        return (yield)


def table(rows: list[tuple[str, float, float]], left: str, right: str) -> str:
    """Rows of (what, left rate, right rate) with the ratio right/left."""
    lines = [f"{'':<28}{left:>16}{right:>16}{'ratio':>8}"]
    for name, a, b in rows:
        lines.append(f"{name:<28}{a:>14,.0f}/s{b:>14,.0f}/s{b / a:>8.2f}")
    return "\n".join(lines)
