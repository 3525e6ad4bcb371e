"""v1-style middleware: `add_middleware(obj)` / `add_subscriber(fn)` with before_/after_
functions, sync or async, receiving only the arguments they name."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from repid import (
    ArgsBucket,
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Parameters,
    Queue,
    Router,
    RoutingKey,
)


class V1Middleware:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def before_enqueue(self, params, key):  # type: ignore[no-untyped-def]  # any order
        self.calls.append(("before_enqueue", {"key": key, "params": params}))

    async def after_enqueue(self, result, key, payload):  # type: ignore[no-untyped-def]
        self.calls.append(("after_enqueue", {"result": result, "key": key,
                                             "payload": payload}))

    def before_queue_declare(self, queue_name):  # type: ignore[no-untyped-def]
        self.calls.append(("before_queue_declare", {"queue_name": queue_name}))

    async def after_consume(self, result):  # type: ignore[no-untyped-def]
        self.calls.append(("after_consume", {"result": result}))

    def before_actor_run(self, actor, key, parameters, payload):  # type: ignore[no-untyped-def]
        self.calls.append(("before_actor_run", {"actor": actor, "key": key,
                                                "parameters": parameters,
                                                "payload": payload}))

    async def after_actor_run(self, result, actor):  # type: ignore[no-untyped-def]
        self.calls.append(("after_actor_run", {"result": result, "actor": actor}))

    def after_ack(self, key):  # type: ignore[no-untyped-def]
        self.calls.append(("after_ack", {"key": key}))

    def after_store_bucket(self, id_, payload, result):  # type: ignore[no-untyped-def]
        self.calls.append(("after_store_bucket", {"id_": id_, "payload": payload,
                                                  "result": result}))

    def before_nothing(self):  # type: ignore[no-untyped-def]  # a name of no event
        self.calls.append(("before_nothing", {}))

    def helper(self) -> None:  # not before_/after_: silently not a subscriber
        raise AssertionError("never called")

    def of(self, name: str) -> list[dict[str, Any]]:
        return [c for n, c in self.calls if n == name]


async def test_add_middleware_sync_and_async_subscribers_get_named_arguments(
        make_conn, run_worker) -> None:
    conn: Connection = await make_conn(queues=())
    mw = V1Middleware()
    with pytest.warns(UserWarning, match="before_nothing .* matches no repid event"):
        conn.middleware.add_middleware(mw)
    router = Router()

    @router.actor
    async def add(a: int, b: int) -> int:
        return a + b

    await Queue(_connection=conn).declare()
    job = Job("add", args={"a": 1, "b": 2}, _connection=conn)
    key, _, _ = await job.enqueue()
    await run_worker(conn, router)

    assert [n for n, _ in mw.calls[:3]] == ["before_queue_declare", "before_enqueue",
                                            "after_enqueue"]
    assert mw.of("before_queue_declare")[0] == {"queue_name": "default"}
    before = mw.of("before_enqueue")[0]
    assert before["key"] == key and isinstance(before["params"], Parameters)
    after = mw.of("after_enqueue")[0]
    assert after == {"result": None, "key": key, "payload": '{"a":1,"b":2}'}

    [consumed] = mw.of("after_consume")
    c_key, c_payload, c_params = consumed["result"]
    assert c_key == key and c_payload == '{"a":1,"b":2}' and isinstance(c_params, Parameters)

    [run] = mw.of("before_actor_run")
    assert run["actor"].name == "add" and run["actor"].queue == "default"
    assert run["key"] == key and run["payload"] == '{"a":1,"b":2}'
    assert isinstance(run["parameters"], Parameters)

    [ran] = mw.of("after_actor_run")
    result = ran["result"]
    assert result.success is True and result.exception is None and result.data == 3
    assert isinstance(result.started_when, datetime)
    assert result.started_when <= result.finished_when
    assert ran["actor"].name == "add"

    assert mw.of("after_ack") == [{"key": key}]
    [stored] = mw.of("after_store_bucket")
    assert stored["id_"] == job.result_id and stored["payload"].data == 3
    assert stored["result"] is None
    assert mw.of("before_nothing") == []
    # the subscriber order of one message: consume, run (storing the result is part of
    # the run), ack
    names = [n for n, _ in mw.calls]
    assert names.index("after_consume") < names.index("before_actor_run") < names.index(
        "after_store_bucket") < names.index("after_actor_run") < names.index("after_ack")


async def test_after_actor_run_sees_the_exception(make_conn, run_worker) -> None:
    conn = await make_conn()
    seen = []

    async def after_actor_run(result):  # type: ignore[no-untyped-def]
        seen.append(result)

    conn.middleware.add_subscriber(after_actor_run)
    router = Router()

    @router.actor
    def fails() -> None:
        raise ZeroDivisionError("oops")

    await Job("fails", _connection=conn).enqueue()
    await run_worker(conn, router)
    [result] = seen
    assert result.success is False and result.data is None
    assert isinstance(result.exception, ZeroDivisionError)


async def test_add_subscriber_functions_for_each_event() -> None:
    broker = InMemoryMessageBroker()
    buckets = InMemoryBucketBroker()
    conn = Connection(broker, buckets)
    calls: list[tuple[str, Any]] = []

    def before_queue_flush(queue_name):  # type: ignore[no-untyped-def]
        calls.append(("flush", queue_name))

    async def after_queue_delete(queue_name, result):  # type: ignore[no-untyped-def]
        calls.append(("delete", (queue_name, result)))

    def before_get_bucket(id_):  # type: ignore[no-untyped-def]
        calls.append(("get", id_))

    def after_get_bucket(result):  # type: ignore[no-untyped-def]
        calls.append(("got", result))

    async def before_delete_bucket(id_):  # type: ignore[no-untyped-def]
        calls.append(("del", id_))

    def before_nack(key):  # type: ignore[no-untyped-def]
        calls.append(("nack", key.id_))

    def before_reject(key):  # type: ignore[no-untyped-def]
        calls.append(("reject", key.id_))

    def after_requeue(key, params):  # type: ignore[no-untyped-def]
        calls.append(("requeue", (key.id_, params.retries.already_tried)))

    def before_consume():  # type: ignore[no-untyped-def]
        calls.append(("consume", None))

    for fn in (before_queue_flush, after_queue_delete, before_get_bucket, after_get_bucket,
               before_delete_bucket, before_nack, before_reject, after_requeue,
               before_consume):
        conn.middleware.add_subscriber(fn)

    await Queue("q", _connection=conn).declare()
    await broker.enqueue(RoutingKey("m1", "t", "q"), "", Parameters())
    consumer = broker.consume("q")
    key, payload, params = await consumer.__anext__()
    await broker.reject(key)
    key, payload, params = await consumer.__anext__()
    await broker.requeue(key, payload, params.with_retry(timedelta()))
    key, payload, params = await consumer.__anext__()
    await broker.nack(key)
    bucket = ArgsBucket("{}")
    await buckets.store_bucket("b", bucket)
    await buckets.get_bucket("b")
    await buckets.delete_bucket("b")
    await Queue("q", _connection=conn).flush()
    await Queue("q", _connection=conn).delete()
    assert calls == [
        ("consume", None), ("reject", "m1"), ("consume", None), ("requeue", ("m1", 1)),
        ("consume", None), ("nack", "m1"), ("get", "b"), ("got", bucket), ("del", "b"),
        ("flush", "q"), ("delete", ("q", None)),
    ]


def test_subscriber_of_unknown_event_is_ignored_with_warning() -> None:
    conn = Connection(InMemoryMessageBroker())

    def before_launch() -> None: ...

    with pytest.warns(UserWarning, match="before_launch matches no repid event"):
        conn.middleware.add_subscriber(before_launch)
    assert all(getattr(conn.middleware.chains, n) is None for n in ("enqueue", "consume"))


def test_subscriber_asking_for_an_argument_the_event_lacks_is_refused() -> None:
    conn = Connection(InMemoryMessageBroker())

    def before_ack(key, payload):  # type: ignore[no-untyped-def]
        ...

    with pytest.raises(TypeError, match=r"asks for \['payload'\].*before_ack"):
        conn.middleware.add_subscriber(before_ack)


async def test_subscriber_taking_kwargs_gets_everything(conn: Connection) -> None:
    got = []

    def before_enqueue(**kwargs):  # type: ignore[no-untyped-def]
        got.append(sorted(kwargs))

    conn.middleware.add_subscriber(before_enqueue)
    await Job("x", _connection=conn).enqueue()
    assert got == [["key", "params", "payload"]]


async def test_subscriber_that_raises_is_logged_and_call_goes_on(conn: Connection, stats,
                                                                 caplog) -> None:
    def before_enqueue() -> None:
        raise RuntimeError("subscriber broke")

    async def after_enqueue() -> None:
        raise RuntimeError("async subscriber broke")

    conn.middleware.add_subscriber(before_enqueue)
    conn.middleware.add_subscriber(after_enqueue)
    await Job("x", _connection=conn).enqueue()
    assert (await stats(conn))["ready"] == 1
    assert "subscriber broke" in caplog.text and "async subscriber broke" in caplog.text


async def test_subscribers_and_plugins_coexist(conn: Connection) -> None:
    from repid import hookimpl

    order = []

    class Plugin:
        @hookimpl(wrapper=True)
        def repid_enqueue(self):  # type: ignore[no-untyped-def]
            order.append("plugin before")
            result = yield
            order.append("plugin after")
            return result

    def before_enqueue() -> None:
        order.append("v1 before")

    def after_enqueue() -> None:
        order.append("v1 after")

    conn.middleware.register(Plugin())
    conn.middleware.add_subscriber(before_enqueue)
    conn.middleware.add_subscriber(after_enqueue)
    await Job("x", _connection=conn).enqueue()
    assert order == ["v1 before", "plugin before", "plugin after", "v1 after"]


def test_a_misspelt_subscriber_is_ignored_with_a_warning_naming_the_closest_event() -> None:
    conn = Connection(InMemoryMessageBroker())

    class Observer:
        def after_enqeue(self, key):  # type: ignore[no-untyped-def]
            ...

    def before_akc(key):  # type: ignore[no-untyped-def]
        ...

    with pytest.warns(UserWarning, match=r"after_enqeue on .* matches no repid event; "
                                         r"ignored \(did you mean after_enqueue\?\)"):
        conn.middleware.add_middleware(Observer())
    with pytest.warns(UserWarning, match=r"did you mean before_ack\?"):
        conn.middleware.add_subscriber(before_akc)
    assert conn.middleware.chains.enqueue is None and conn.middleware.chains.ack is None


def test_the_v1_adapter_is_one_module_and_compat_re_exports_it() -> None:
    from repid.middleware import _chain as chain
    from repid.middleware import _v1 as v1
    from repid.middleware import compat

    assert chain.HookChain.__module__ == "repid.middleware._chain"
    assert v1.Subscriber.__module__ == "repid.middleware._v1"
    for name in compat.__all__:
        assert getattr(compat, name) is getattr(v1, name), name
    assert {"Subscriber", "EVENTS", "make_subscriber", "collect"} <= set(compat.__all__)
