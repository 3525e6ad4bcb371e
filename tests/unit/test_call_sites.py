"""Every around call hands its hook every argument the hook's spec has, with the right
values: a recorder that names every parameter of every around hookspec (read from
`hookspecs.py`) is driven through every call, and what each call site gave it (built in
the brokers and the worker) is compared with the spec and with the call."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Generator
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


Gen = Generator[None, Any, Any]


class Recorder:
    """A wrapper on every around hook naming every parameter of its spec (written out, so
    that any pluggy reads them; `test_the_recorder_names_every_spec_parameter` holds them
    to the specs), recording what each call site gave it."""

    def __init__(self) -> None:
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def _record(self, hook_name: str, values: dict[str, Any]) -> Gen:
        self.seen.setdefault(hook_name, []).append(values)
        return (yield)

    @hookimpl(wrapper=True)
    def repid_consume(self, connection: Any, broker: Any, queue: Any, category: Any) -> Gen:
        return (yield from self._record("repid_consume", {
            "connection": connection, "broker": broker, "queue": queue,
            "category": category}))

    @hookimpl(wrapper=True)
    def repid_enqueue(self, connection: Any, broker: Any, queue: Any, key: Any, payload: Any,
                      params: Any) -> Gen:
        return (yield from self._record("repid_enqueue", {
            "connection": connection, "broker": broker, "queue": queue, "key": key,
            "payload": payload, "params": params}))

    @hookimpl(wrapper=True)
    def repid_requeue(self, connection: Any, broker: Any, queue: Any, key: Any, payload: Any,
                      params: Any, reason: Any, stash: Any) -> Gen:
        return (yield from self._record("repid_requeue", {
            "connection": connection, "broker": broker, "queue": queue, "key": key,
            "payload": payload, "params": params, "reason": reason, "stash": stash}))

    @hookimpl(wrapper=True)
    def repid_ack(self, connection: Any, broker: Any, queue: Any, key: Any,
                  stash: Any) -> Gen:
        return (yield from self._record("repid_ack", {
            "connection": connection, "broker": broker, "queue": queue, "key": key,
            "stash": stash}))

    @hookimpl(wrapper=True)
    def repid_nack(self, connection: Any, broker: Any, queue: Any, key: Any, reason: Any,
                   stash: Any) -> Gen:
        return (yield from self._record("repid_nack", {
            "connection": connection, "broker": broker, "queue": queue, "key": key,
            "reason": reason, "stash": stash}))

    @hookimpl(wrapper=True)
    def repid_reject(self, connection: Any, broker: Any, queue: Any, key: Any,
                     stash: Any) -> Gen:
        return (yield from self._record("repid_reject", {
            "connection": connection, "broker": broker, "queue": queue, "key": key,
            "stash": stash}))

    @hookimpl(wrapper=True)
    def repid_queue_declare(self, connection: Any, broker: Any, queue: Any) -> Gen:
        return (yield from self._record("repid_queue_declare", {
            "connection": connection, "broker": broker, "queue": queue}))

    @hookimpl(wrapper=True)
    def repid_queue_flush(self, connection: Any, broker: Any, queue: Any) -> Gen:
        return (yield from self._record("repid_queue_flush", {
            "connection": connection, "broker": broker, "queue": queue}))

    @hookimpl(wrapper=True)
    def repid_queue_delete(self, connection: Any, broker: Any, queue: Any) -> Gen:
        return (yield from self._record("repid_queue_delete", {
            "connection": connection, "broker": broker, "queue": queue}))

    @hookimpl(wrapper=True)
    def repid_get_bucket(self, connection: Any, broker: Any, id_: Any) -> Gen:
        return (yield from self._record("repid_get_bucket", {
            "connection": connection, "broker": broker, "id_": id_}))

    @hookimpl(wrapper=True)
    def repid_store_bucket(self, connection: Any, broker: Any, id_: Any,
                           payload: Any) -> Gen:
        return (yield from self._record("repid_store_bucket", {
            "connection": connection, "broker": broker, "id_": id_, "payload": payload}))

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self, connection: Any, broker: Any, id_: Any) -> Gen:
        return (yield from self._record("repid_delete_bucket", {
            "connection": connection, "broker": broker, "id_": id_}))

    @hookimpl(wrapper=True)
    def repid_actor_run(self, connection: Any, actor: Any, key: Any, payload: Any,
                        params: Any, stash: Any) -> Gen:
        return (yield from self._record("repid_actor_run", {
            "connection": connection, "actor": actor, "key": key, "payload": payload,
            "params": params, "stash": stash}))


def test_the_recorder_names_every_spec_parameter() -> None:
    for hook_name in hookspecs.AROUND_HOOKS:
        method = getattr(Recorder, hook_name)
        assert list(inspect.signature(method).parameters)[1:] == spec_params(hook_name)


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
