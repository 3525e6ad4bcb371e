"""Middleware: the pluggy plugin contract (around hooks, decisions, lifecycle), header
propagation, error isolation and the no-plugin fast path."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from repid import (
    ArgsBucket,
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    MessageCategory,
    MessageDependency,
    Parameters,
    Queue,
    QueueNotDeclaredError,
    Router,
    Worker,
    hookimpl,
)
from repid.brokers.base import DEAD_REASON_HEADER
from repid.data import utcnow
from repid.middleware.hookspecs import AROUND_HOOKS


class AllAroundHooks:
    """Wraps every around hook; each wrapper names only some of the arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.results: dict[str, list[Any]] = {}

    def _wrap(self, hook: str, **got: Any):  # type: ignore[no-untyped-def]
        self.calls.append((hook, got))
        result = yield
        self.results.setdefault(hook, []).append(result)
        return result

    @hookimpl(wrapper=True)
    def repid_consume(self, queue, category):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("consume", queue=queue, category=category))

    @hookimpl(wrapper=True)
    def repid_enqueue(self, params, key, queue, payload, broker,  # type: ignore[no-untyped-def]
                      connection):
        return (yield from self._wrap("enqueue", params=params, key=key, queue=queue,
                                      payload=payload, broker=broker, connection=connection))

    @hookimpl(wrapper=True)
    def repid_requeue(self, key, params):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("requeue", key=key, params=params))

    @hookimpl(wrapper=True)
    def repid_ack(self, key):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("ack", key=key))

    @hookimpl(wrapper=True)
    def repid_nack(self, queue):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("nack", queue=queue))

    @hookimpl(wrapper=True)
    def repid_reject(self, key, broker):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("reject", key=key, broker=broker))

    @hookimpl(wrapper=True)
    def repid_queue_declare(self, queue):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("queue_declare", queue=queue))

    @hookimpl(wrapper=True)
    def repid_queue_flush(self, queue):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("queue_flush", queue=queue))

    @hookimpl(wrapper=True)
    def repid_queue_delete(self, queue, connection):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("queue_delete", queue=queue, connection=connection))

    @hookimpl(wrapper=True)
    def repid_get_bucket(self, id_):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("get_bucket", id_=id_))

    @hookimpl(wrapper=True)
    def repid_store_bucket(self, payload, id_, broker):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("store_bucket", id_=id_, payload=payload, broker=broker))

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self, id_):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("delete_bucket", id_=id_))

    @hookimpl(wrapper=True)
    def repid_actor_run(self, actor, params):  # type: ignore[no-untyped-def]
        return (yield from self._wrap("actor_run", actor=actor, params=params))

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [got for name, got in self.calls if name == hook]


async def test_every_around_hook_fires_with_the_arguments_it_names(make_conn,
                                                                   run_worker) -> None:
    plugin = AllAroundHooks()
    conn = await make_conn(queues=("default", "other"), args=True, plugins=(plugin,))
    router = Router()

    @router.actor(retry_policy=lambda n: 0)
    async def work(n: int, msg: MessageDependency) -> int:
        if n == 1 and msg.parameters.retries.already_tried == 0:
            raise ValueError("retry once")
        if n == 2:
            raise ValueError("dead")
        if n == 3 and msg.parameters.retries.already_tried == 0:
            await msg.reject()
            raise ValueError("rejected")  # the result says so; the message is back
        return n

    job = Job("work", args={"n": 1}, retries=1, _connection=conn)
    await job.enqueue()
    await Job("work", args={"n": 2}, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=3)
    await Job("work", args={"n": 3}, use_args_bucketer=False, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=1)
    await Queue("other", _connection=conn).flush()
    await Queue("other", _connection=conn).delete()
    await conn.args_bucket_broker.delete_bucket("nothing")  # type: ignore[union-attr]

    fired = {name for name, _ in plugin.calls}
    assert fired == {h.removeprefix("repid_") for h in AROUND_HOOKS}

    [first, *_] = plugin.of("enqueue")
    assert set(first) == {"params", "key", "queue", "payload", "broker", "connection"}
    assert first["connection"] is conn and first["broker"] is conn.message_broker
    assert first["key"].topic == "work" and first["queue"] == "default"
    assert first["payload"].startswith('{"$repid_args_bucket"')
    assert plugin.of("consume")[0] == {"queue": "default", "category": MessageCategory.NORMAL}
    assert [c["params"].retries.already_tried for c in plugin.of("requeue")] == [1]
    assert [c["queue"] for c in plugin.of("nack")] == ["default"]
    assert plugin.of("reject")[0]["broker"] is conn.message_broker
    assert {c["queue"] for c in plugin.of("queue_declare")} == {"default", "other"}
    assert plugin.of("queue_flush") == [{"queue": "other"}]
    assert plugin.of("queue_delete") == [{"queue": "other", "connection": conn}]
    assert plugin.of("delete_bucket") == [{"id_": "nothing"}]
    store = plugin.of("store_bucket")
    assert isinstance(store[0]["payload"], ArgsBucket)
    assert store[0]["broker"] is conn.args_bucket_broker
    assert any(s["id_"] == job.result_id and s["broker"] is conn.results_bucket_broker
               for s in store)
    runs = plugin.of("actor_run")
    assert [r["actor"].name for r in runs] == ["work"] * 4
    # wrappers see the results of the calls
    assert all(r.success is not None for r in plugin.results["actor_run"])
    assert [r.data for r in plugin.results["actor_run"]] == [None, None, 1, None]
    assert isinstance(plugin.results["get_bucket"][0], ArgsBucket)
    key, _, params = plugin.results["consume"][0]
    assert key.topic == "work" and params.retries.max_amount in (0, 1)


class AddsHeaders:
    @hookimpl(wrapper=True)
    def repid_enqueue(self, params):  # type: ignore[no-untyped-def]
        params.headers["traceparent"] = "00-abc-def-01"
        return (yield)


async def test_enqueue_wrapper_headers_reach_actor_through_retry_and_dlq(
        make_conn, run_worker, messages_of) -> None:
    conn = await make_conn(plugins=(AddsHeaders(),))
    router = Router()
    seen: list[dict[str, str]] = []

    @router.actor(retry_policy=lambda n: 0)
    async def work(msg: MessageDependency) -> None:
        seen.append(dict(msg.parameters.headers))
        raise ValueError("always")

    await Job("work", retries=1, headers={"tenant": "acme"}, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=2)
    expected = {"tenant": "acme", "traceparent": "00-abc-def-01"}
    assert seen == [expected, expected]  # first run and the retry
    [dead] = await messages_of(conn)
    headers = dict(dead.parameters.headers)
    assert headers.pop(DEAD_REASON_HEADER) == "no retries left; last error: ValueError: always"
    assert headers == expected


async def test_headers_survive_a_delay(make_conn, run_worker) -> None:
    conn = await make_conn(plugins=(AddsHeaders(),))
    router = Router()
    seen = []

    @router.actor
    async def work(msg: MessageDependency) -> None:
        seen.append(msg.parameters.headers)

    await Job("work", deferred_until=utcnow() + timedelta(seconds=1),
              _connection=conn).enqueue()
    await run_worker(conn, router)
    assert seen == [{"traceparent": "00-abc-def-01"}]


class Nesting:
    def __init__(self) -> None:
        self.depth = 0
        self.enqueues: list[tuple[str, int]] = []
        self.acks: list[int] = []

    @hookimpl(wrapper=True)
    def repid_actor_run(self):  # type: ignore[no-untyped-def]
        self.depth += 1
        try:
            return (yield)
        finally:
            self.depth -= 1

    @hookimpl(wrapper=True)
    def repid_enqueue(self, key):  # type: ignore[no-untyped-def]
        self.enqueues.append((key.topic, self.depth))
        return (yield)

    @hookimpl(wrapper=True)
    def repid_ack(self):  # type: ignore[no-untyped-def]
        self.acks.append(self.depth)
        return (yield)


async def test_nested_enqueue_and_eager_ack_fire_inside_actor_run(make_conn,
                                                                  run_worker) -> None:
    plugin = Nesting()
    conn = await make_conn(plugins=(plugin,))
    router = Router()

    @router.actor
    async def parent(msg: MessageDependency) -> None:
        await Job("child", _connection=conn).enqueue()
        await msg.ack()

    @router.actor
    async def child() -> None: ...

    await Job("parent", _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=2)
    assert plugin.enqueues == [("parent", 0), ("child", 1)]
    assert plugin.acks == [1, 0]  # the eager ack inside the parent, the child's after its run


class Broken:
    @hookimpl(wrapper=True)
    def repid_enqueue(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("broken before yield")
        yield  # pragma: no cover

    @hookimpl(wrapper=True)
    def repid_get_bucket(self):  # type: ignore[no-untyped-def]
        yield
        raise RuntimeError("broken after yield")

    @hookimpl(wrapper=True)
    def repid_queue_declare(self):  # type: ignore[no-untyped-def]
        if False:  # pragma: no cover
            yield
        return "never yielded"

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self):  # type: ignore[no-untyped-def]
        yield
        yield "a second time"


async def test_wrapper_raising_is_logged_and_call_keeps_its_result(make_conn, stats,
                                                                   caplog) -> None:
    conn = await make_conn(plugins=(Broken(),), results=True)
    with caplog.at_level(logging.ERROR, logger="repid"):
        await Queue("q", _connection=conn).declare()
        await Job("x", queue="q", _connection=conn).enqueue()
        broker: InMemoryBucketBroker = conn.results_bucket_broker  # type: ignore
        stored = ArgsBucket("data")
        await broker.store_bucket("b1", stored)
        got = await broker.get_bucket("b1")
        await broker.delete_bucket("b1")
    assert got is stored  # the original result
    assert await broker.get_bucket("b1") is None  # deleted, the second yield ignored
    assert (await stats(conn, "q"))["ready"] == 1  # enqueued anyway
    text = caplog.text
    assert "raised in repid_enqueue before the call" in text
    assert "raised in repid_get_bucket after the call" in text
    assert "repid_queue_declare wrapper returned without yielding" in text
    assert "repid_delete_bucket wrapper yielded twice" in text
    assert any(r.exc_info and "broken before yield" in str(r.exc_info[1])
               for r in caplog.records)


class SeesErrors:
    def __init__(self, swallow: bool) -> None:
        self.swallow = swallow
        self.seen: list[BaseException] = []

    @hookimpl(wrapper=True)
    def repid_enqueue(self):  # type: ignore[no-untyped-def]
        try:
            return (yield)
        except Exception as exc:
            self.seen.append(exc)
            if self.swallow:
                return None
            raise


async def test_wrapper_sees_the_calls_exception_and_may_replace_it(make_conn) -> None:
    reraise = SeesErrors(swallow=False)
    conn = await make_conn(queues=(), plugins=(reraise,))
    conn.message_broker.require_declared_queues = True
    with pytest.raises(QueueNotDeclaredError):
        await Job("x", queue="nowhere", _connection=conn).enqueue()
    assert isinstance(reraise.seen[0], QueueNotDeclaredError)

    swallow = SeesErrors(swallow=True)
    conn = await make_conn(queues=(), plugins=(swallow,))
    conn.message_broker.require_declared_queues = True
    await Job("x", queue="nowhere", _connection=conn).enqueue()  # replaced by None
    assert isinstance(swallow.seen[0], QueueNotDeclaredError)


def test_plain_impl_of_an_around_hook_is_rejected_with_clear_type_error() -> None:
    class NotAWrapper:
        @hookimpl
        def repid_enqueue(self, key):  # type: ignore[no-untyped-def]
            return None

    conn = Connection(InMemoryMessageBroker())
    plugin = NotAWrapper()
    with pytest.raises(TypeError, match=r"repid_enqueue .* around hook.*wrapper=True"):
        conn.middleware.register(plugin)
    assert not conn.middleware.pm.is_registered(plugin)
    assert conn.middleware.chains.enqueue is None
    with pytest.raises(TypeError, match="wrapper=True"):
        Connection(InMemoryMessageBroker(), plugins=[NotAWrapper()])


REPID = Path(__file__).resolve().parents[2] / "repid"


def marked_hookspecs() -> dict[str, dict[str, Any]]:
    """The functions `hookspecs.py` defines and marks with `HookspecMarker("repid")`, and
    the options pluggy recorded on each (its `repid_spec` attribute): read from the
    functions themselves, not from `HOOK_KINDS`."""
    from repid.middleware import hookspecs

    source = ast.parse(Path(hookspecs.__file__).read_text())
    defined = {node.name for node in source.body if isinstance(node, ast.FunctionDef)}
    marked = {}
    for name in defined:
        opts = getattr(getattr(hookspecs, name), "repid_spec", None)
        if opts is not None:
            marked[name] = opts
    return marked


def chain_slots_read(root: Path) -> dict[str, list[str]]:
    """The around calls the code runs through: every read `<x>.chains.<call>`,
    `<x>._chains.<call>` or `chains.<call>` in the sources under `root`, by call, with
    where it is read."""
    reads: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
                continue
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr in ("chains", "_chains")) \
                    or (isinstance(owner, ast.Name) and owner.id == "chains"):
                where = f"{path.relative_to(root.parent)}:{node.lineno}"
                reads.setdefault(node.attr, []).append(where)
    return reads


def test_hookspecs_cover_every_around_call() -> None:
    """Two lists built apart are compared: the hook functions `hookspecs.py` marks (and the
    `firstresult` pluggy recorded on each) against `HOOK_KINDS`; and the chain slots the
    sources of repid read (`self._chains.ack`, `self.chains.actor_run`, ...) against
    `AROUND_CALLS`. That every around hook fires in a real run is
    `test_call_sites.py::test_every_around_call_gives_its_hook_every_spec_argument`."""
    from repid.middleware import hookspecs

    marked = marked_hookspecs()
    assert sorted(marked) == sorted(hookspecs.HOOK_KINDS), \
        "every @hookspec function needs its HOOK_KINDS entry, and every entry its function"
    decides = {name for name, opts in marked.items() if opts["firstresult"]}
    assert decides == {name for name, kind in hookspecs.HOOK_KINDS.items()
                       if kind == hookspecs.DECISION}, \
        "exactly the decision hooks are @hookspec(firstresult=True)"

    reads = chain_slots_read(REPID)
    never_run = set(hookspecs.AROUND_CALLS) - set(reads)
    assert never_run == set(), f"around calls no code runs through: {sorted(never_run)}"
    unknown = {call: where for call, where in reads.items()
               if call not in hookspecs.AROUND_CALLS}
    assert unknown == {}, f"chains read that are not in AROUND_CALLS: {unknown}"


def test_the_hook_list_is_declared_once_and_matches_the_module() -> None:
    from repid.middleware import hookspecs
    from repid.middleware.compat import EVENTS

    defined = {name for name in vars(hookspecs) if name.startswith("repid_")}
    assert set(hookspecs.HOOKS) == defined  # nothing declared without being listed
    assert set(EVENTS) == set(hookspecs.AROUND_CALLS)  # v1 names map onto exactly these


def test_a_decision_hook_written_as_a_wrapper_is_refused() -> None:
    class WrappedDecision:
        @hookimpl(wrapper=True)
        def repid_should_retry(self):  # type: ignore[no-untyped-def]
            return (yield)

    conn = Connection(InMemoryMessageBroker())
    plugin = WrappedDecision()
    with pytest.raises(TypeError, match=r"repid_should_retry .* decision hook.*not wrapper"):
        conn.middleware.register(plugin)
    assert not conn.middleware.pm.is_registered(plugin)


def test_a_decision_plugin_that_raises_leaves_the_default() -> None:
    class Raises:
        @hookimpl
        def repid_should_retry(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug")

    conn = Connection(InMemoryMessageBroker(), plugins=[Raises()])
    assert conn.middleware.call_first("repid_should_retry", actor=None, key=None,
                                      params=None, exception=None) is None


class FixedDelay:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked: list[tuple[int, str]] = []

    @hookimpl
    def repid_retry_delay(self, params, exception):  # type: ignore[no-untyped-def]
        self.asked.append((params.retries.already_tried, type(exception).__name__))
        return self.seconds


async def test_retry_delay_plugin_overrides_default_policy(make_conn, run_worker,
                                                           stats) -> None:
    plugin = FixedDelay(0)  # the default policy would wait 1 s
    conn = await make_conn(plugins=(plugin,))
    router = Router()
    runs = []

    @router.actor
    async def work() -> None:
        runs.append(1)
        raise ValueError

    await Job("work", retries=1, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=2, timeout=0.9)
    assert len(runs) == 2
    assert plugin.asked == [(0, "ValueError")]


async def test_default_retry_policy_waits_ten_seconds_first(conn: Connection, run_worker,
                                                             messages_of) -> None:
    router = Router()

    @router.actor
    async def work() -> None:
        raise ValueError

    await Job("work", retries=3, _connection=conn).enqueue()
    await run_worker(conn, router)
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    wait = (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 9 < wait <= 10  # repid 1.x's first retry


async def test_actor_retry_policy_wins_over_plugin(make_conn, run_worker,
                                                   messages_of) -> None:
    plugin = FixedDelay(0)
    conn = await make_conn(plugins=(plugin,))
    router = Router()

    @router.actor(retry_policy=lambda n: timedelta(seconds=30 * n))
    async def work() -> None:
        raise ValueError

    await Job("work", retries=1, _connection=conn).enqueue()
    await run_worker(conn, router)
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    wait = (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 29 < wait <= 30
    assert plugin.asked == []


class NeverRetry:
    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def repid_should_retry(self, actor, exception):  # type: ignore[no-untyped-def]
        self.asked.append(f"{actor.name}:{exception}")
        return False


async def test_should_retry_false_sends_failure_straight_to_dlq(make_conn, run_worker,
                                                                stats) -> None:
    plugin = NeverRetry()
    conn = await make_conn(plugins=(plugin,))
    router = Router()

    @router.actor(retry_policy=lambda n: 0)
    async def work() -> None:
        raise ValueError("fatal")

    job = Job("work", retries=5, _connection=conn)
    await job.enqueue()
    await run_worker(conn, router)
    assert plugin.asked == ["work:fatal"]
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    assert (await job.result).success is False  # type: ignore[union-attr]


class Lifecycle:
    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def repid_worker_start(self, worker):  # type: ignore[no-untyped-def]
        self.events.append(f"start sync {type(worker).__name__}")

    @hookimpl
    def repid_worker_stop(self, worker):  # type: ignore[no-untyped-def]
        async def later() -> None:
            await asyncio.sleep(0)
            self.events.append(f"stop async {worker.runner.processed}")

        return later()


class AsyncStart:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    @hookimpl
    def repid_worker_start(self):  # type: ignore[no-untyped-def]
        async def later() -> None:
            self.events.append("start async")

        return later()


async def test_worker_lifecycle_hooks_sync_and_awaitable(make_conn, run_worker) -> None:
    life = Lifecycle()
    conn = await make_conn(plugins=(life, AsyncStart(life.events)))
    router = Router()

    @router.actor
    async def work() -> None:
        life.events.append("run")

    await Job("work", _connection=conn).enqueue()
    await run_worker(conn, router)
    assert sorted(life.events[:2]) == ["start async", "start sync Worker"]
    assert life.events[2:] == ["run", "stop async 1"]


class EnqueueOnly:
    @hookimpl(wrapper=True)
    def repid_enqueue(self):  # type: ignore[no-untyped-def]
        return (yield)


def test_no_plugin_fast_path_chains_are_none_until_registered() -> None:
    broker = InMemoryMessageBroker()
    conn = Connection(broker)
    chains = conn.middleware.chains
    for name in ("consume", "enqueue", "requeue", "ack", "nack", "reject", "queue_declare",
                 "queue_flush", "queue_delete", "get_bucket", "store_bucket",
                 "delete_bucket", "actor_run"):
        assert getattr(chains, name) is None, name
    plugin = EnqueueOnly()
    conn.middleware.register(plugin)
    assert chains.enqueue is not None
    assert chains.ack is None  # only the hooks implemented get a chain
    assert broker._chains is chains  # the broker reads the same cached chains
    conn.middleware.unregister(plugin)
    assert chains.enqueue is None


async def test_plugins_are_per_connection(make_conn, stats) -> None:
    plugin = AllAroundHooks()
    with_plugin = await make_conn(plugins=(plugin,))
    without = await make_conn()
    await Job("x", _connection=without).enqueue()
    assert plugin.of("enqueue") == []
    await Job("x", _connection=with_plugin).enqueue()
    assert len(plugin.of("enqueue")) == 1


async def test_health_routes_hook_is_collected_by_worker(make_conn) -> None:
    class Routes:
        @hookimpl
        def repid_http_routes(self, worker):  # type: ignore[no-untyped-def]
            return {"/extra": lambda: ("text/plain", b"extra")}

    conn = await make_conn(plugins=(Routes(),))
    assert conn.middleware.collect("repid_http_routes", worker=Worker())[0]["/extra"]() == (
        "text/plain", b"extra")


_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")


class SetsContext:
    """Like a tracing plugin: attaches a context before the yield, detaches after."""

    @hookimpl(wrapper=True)
    def repid_actor_run(self, key):  # type: ignore[no-untyped-def]
        token = _CURRENT.set(f"span-of-{key.topic}")
        try:
            return (yield)
        finally:
            _CURRENT.reset(token)

    @hookimpl(wrapper=True)
    def repid_enqueue(self, params):  # type: ignore[no-untyped-def]
        params.headers["parent"] = _CURRENT.get()
        return (yield)


async def test_wrapper_context_is_current_during_the_call(make_conn, run_worker) -> None:
    conn = await make_conn(plugins=(SetsContext(),))
    router = Router()
    seen: dict[str, str] = {}

    @router.actor
    async def async_actor() -> None:
        seen["async"] = _CURRENT.get()
        await Job("sync_actor", _connection=conn).enqueue()

    @router.actor
    def sync_actor(msg: MessageDependency) -> None:
        seen["sync"] = _CURRENT.get()  # in a thread, with the caller's context copied
        seen["parent"] = msg.parameters.headers["parent"]

    await Job("async_actor", _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=2)
    assert seen == {"async": "span-of-async_actor", "sync": "span-of-sync_actor",
                    "parent": "span-of-async_actor"}
    assert _CURRENT.get() == "none"


class RequeueReasons:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, bool]] = []

    @hookimpl(wrapper=True)
    def repid_requeue(self, key, reason, stash):  # type: ignore[no-untyped-def]
        self.seen.append((key.topic, reason, stash is key.stash))
        return (yield)


async def test_a_requeue_says_why(make_conn, run_worker, messages_of) -> None:  # type: ignore[no-untyped-def]
    plugin = RequeueReasons()
    conn = await make_conn(plugins=(plugin,))
    router = Router()

    @router.actor(retry_policy=lambda n: 0)
    async def flaky() -> None:
        raise ValueError("again")

    @router.actor
    async def tick() -> None:
        pass

    await Job("nobody", _connection=conn).enqueue()  # no actor here: sent back
    await Job("flaky", retries=1, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=2)  # flaky's run and its retry
    [dead] = await messages_of(conn)
    await dead.reschedule()
    await Job("tick", deferred_by=1, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=3)  # flaky twice again, then tick
    assert plugin.seen[:2] == [("nobody", "unknown_topic", True), ("flaky", "retry", True)]
    assert ("flaky", "reschedule", True) in plugin.seen
    assert ("tick", "schedule", True) in plugin.seen


def test_every_hook_has_one_kind_and_the_specs_agree_with_it() -> None:
    from repid.middleware import hookspecs

    conn = Connection(InMemoryMessageBroker())
    for name, kind in hookspecs.HOOK_KINDS.items():
        spec = getattr(conn.middleware.pm.hook, name).spec
        assert spec is not None, name
        assert spec.opts["firstresult"] is (kind == hookspecs.DECISION), name
        assert kind in hookspecs.KINDS
    assert hookspecs.HOOK_KINDS["repid_http_routes"] == hookspecs.CONTRIBUTION
    assert tuple(f"repid_{c}" for c in hookspecs.AROUND_CALLS) == hookspecs.AROUND_HOOKS


def test_the_docs_state_the_kinds_of_the_table() -> None:
    from pathlib import Path

    from repid.middleware import hookspecs

    docs = Path(__file__).resolve().parents[2] / "docs"
    reference = (docs / "hooks.md").read_text()
    contract = (docs / "middleware.md").read_text()
    for name, kind in hookspecs.HOOK_KINDS.items():
        assert f"| [`{name}`](#{name}) | {kind} |" in reference, name
        [row] = [line for line in contract.splitlines() if line.startswith(f"| {kind} |")]
        assert f"`{name}`" in row, name


class Misspelt:
    @hookimpl(wrapper=True)
    def repid_enqeue(self, key):  # type: ignore[no-untyped-def]
        return (yield)


class Unmarked:
    def repid_ack(self, key):  # type: ignore[no-untyped-def]
        return None


class UnmarkedMisspelt:
    def repid_retry_dealy(self):  # type: ignore[no-untyped-def]
        return 1


class WrappedLifecycle:
    @hookimpl(wrapper=True)
    def repid_worker_start(self):  # type: ignore[no-untyped-def]
        return (yield)


class OptionalFutureHook:
    @hookimpl(optionalhook=True)
    def repid_not_yet(self):  # type: ignore[no-untyped-def]
        return None


@pytest.mark.parametrize(("plugin", "message"), [
    (Misspelt(), r"plugin Misspelt: repid_enqeue is not a repid hook \(did you mean "
                 r"repid_enqueue\?\)"),
    (UnmarkedMisspelt(), r"plugin UnmarkedMisspelt: repid_retry_dealy is not a repid hook "
                         r"\(did you mean repid_retry_delay\?\)"),
    (Unmarked(), r"plugin Unmarked: repid_ack is not marked, so it would never be called; "
                 r"mark it @repid.hookimpl\(wrapper=True\)"),
    (WrappedLifecycle(), r"plugin WrappedLifecycle: repid_worker_start is a lifecycle hook: "
                         r"mark it @repid.hookimpl \(not wrapper=True\)"),
])
def test_a_plugin_with_a_mistake_is_refused_and_not_registered(plugin: object,
                                                               message: str) -> None:
    conn = Connection(InMemoryMessageBroker())
    with pytest.raises(TypeError, match=message):
        conn.middleware.register(plugin)
    assert not conn.middleware.pm.is_registered(plugin)
    assert conn.middleware.chains.enqueue is None and conn.middleware.chains.ack is None
    conn.middleware.register(EnqueueOnly())  # the manager is still usable
    assert conn.middleware.chains.enqueue is not None
    optional = OptionalFutureHook()  # pluggy's way to say a hook may not exist: let through
    conn.middleware.register(optional)
    assert conn.middleware.pm.is_registered(optional)


class RaisingDelay:
    @hookimpl
    def repid_retry_delay(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("delay plugin bug")


class RaisingRetry:
    @hookimpl
    def repid_should_retry(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("retry plugin bug")


def test_a_decision_plugin_that_raises_leaves_the_next_one_to_answer(caplog) -> None:  # type: ignore[no-untyped-def]
    answering = FixedDelay(3)
    conn = Connection(InMemoryMessageBroker(), plugins=[answering, RaisingDelay()])
    with caplog.at_level(logging.ERROR, logger="repid.middleware"):
        answer = conn.middleware.call_first(
            "repid_retry_delay", actor=None, key=None,
            params=Parameters(), exception=ValueError())
    assert answer == 3  # the raising plugin (asked first) was skipped, the next answered
    assert answering.asked == [(0, "ValueError")]
    assert "plugin RaisingDelay raised in repid_retry_delay" in caplog.text


async def test_a_raising_retry_delay_plugin_leaves_the_default_delay(make_conn, run_worker,
                                                                     messages_of) -> None:
    conn = await make_conn(plugins=(RaisingDelay(), RaisingRetry()))
    router = Router()

    @router.actor
    async def work() -> None:
        raise ValueError

    await Job("work", retries=3, _connection=conn).enqueue()
    await run_worker(conn, router)
    # retried (should_retry's default) after the default policy's 10 s, not at once
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    wait = (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()
    assert 9 < wait <= 10


def test_call_first_refuses_a_hook_that_is_not_a_decision() -> None:
    conn = Connection(InMemoryMessageBroker())
    with pytest.raises(ValueError, match="repid_worker_start is not a decision hook"):
        conn.middleware.call_first("repid_worker_start", worker=None)
