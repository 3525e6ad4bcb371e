"""Every around call hands its hook every argument the hook's spec has, with the right
values: a recorder that names every parameter of every around hookspec (read from
`hookspecs.py`) is driven through every call, and what each call site gave it (built in
the brokers and the worker) is compared with the spec and with the call."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator
from typing import Any

from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    MessageCategory,
    Queue,
    Repid,
    Router,
    Worker,
    hookimpl,
)
from repid.middleware import hookspecs


def spec_params(hook_name: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, hook_name)).parameters)


def recording_wrapper(hook_name: str, seen: dict[str, list[dict[str, Any]]]
                      ) -> Callable[..., Generator[None, Any, Any]]:
    """A wrapper for `hook_name` that takes every parameter of its spec."""
    params = spec_params(hook_name)

    def wrapper(*args: Any) -> Generator[None, Any, Any]:
        seen.setdefault(hook_name, []).append(dict(zip(params, args, strict=True)))
        return (yield)

    wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
    wrapper.__name__ = hook_name
    return hookimpl(wrapper=True)(wrapper)  # type: ignore[no-any-return]


class Recorder:
    def __init__(self) -> None:
        self.seen: dict[str, list[dict[str, Any]]] = {}
        for hook_name in hookspecs.AROUND_HOOKS:
            setattr(self, hook_name, recording_wrapper(hook_name, self.seen))


async def test_every_around_call_gives_its_hook_every_spec_argument() -> None:
    recorder = Recorder()
    broker = InMemoryMessageBroker()
    buckets = InMemoryBucketBroker(use_result_bucket=True)
    connection = Connection(broker, InMemoryBucketBroker(), buckets, plugins=[recorder])
    router = Router()

    @router.actor(queue="sites")
    async def fails_once(n: int) -> int:
        if n == 1:
            raise ValueError("once")
        return n

    async with Repid(connection).magic(auto_disconnect=True):
        queue = Queue("sites")
        await queue.declare()
        ok = Job("fails_once", queue="sites", args={"n": 2}, use_args_bucketer=True)
        await ok.enqueue()
        await Job("fails_once", queue="sites", args={"n": 1}).enqueue()
        await asyncio.wait_for(Worker(routers=[router], messages_limit=2).run(), 5)
        assert (await ok.result).data == 2  # type: ignore[union-attr]
        iterator = queue.get_messages(category=MessageCategory.DEAD)
        dead = await asyncio.wait_for(anext(iterator), 5)
        await dead.reschedule()
        again = await asyncio.wait_for(anext(queue.get_messages()), 5)
        await again.reject()
        taken = await asyncio.wait_for(anext(queue.get_messages()), 5)
        await taken.ack()
        await buckets.delete_bucket(ok.result_id)
        await queue.flush()
        await queue.delete()

    seen = recorder.seen
    assert set(seen) == set(hookspecs.AROUND_HOOKS)
    for hook_name, calls in seen.items():
        for call in calls:
            assert list(call) == spec_params(hook_name), hook_name
            if "connection" in call:
                assert call["connection"] is connection, hook_name
            if "queue" in call:
                assert call["queue"] == "sites", hook_name
            if "key" in call:
                assert call["key"].queue == "sites", hook_name
            if "stash" in call:
                assert call["stash"] is call["key"].stash, hook_name
    assert {c["broker"] for c in seen["repid_enqueue"]} == {broker}
    assert {c["broker"] for c in seen["repid_store_bucket"]} >= {buckets}
    assert [c["reason"] for c in seen["repid_requeue"]] == ["reschedule"]
    assert [c["reason"] for c in seen["repid_nack"]] == [
        "no retries left; last error: ValueError: once"]
    assert {c["category"] for c in seen["repid_consume"]} == {MessageCategory.NORMAL,
                                                              MessageCategory.DEAD}
    assert [c["actor"].name for c in seen["repid_actor_run"]] == ["fails_once"] * 2
    assert [c["params"].result is not None for c in seen["repid_actor_run"]] == [True, True]
