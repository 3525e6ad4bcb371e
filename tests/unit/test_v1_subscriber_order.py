"""v1 `before_*` / `after_*` subscribers and around wrappers on the same call: the order
they run in, what happens when the call raises, and that the chain runner
(`repid.middleware._chain`) leaves the subscribers to `repid.middleware._v1.Subscribers`."""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import pytest

from repid import Connection, Job, hookimpl
from repid.middleware import Middleware, _chain, _v1
from repid.middleware._chain import HookChain


class Wrapper:
    """An around wrapper of `repid_ack` and `repid_enqueue` that records what it sees;
    `replace` (when set) is returned instead of an error."""

    def __init__(self, log: list[Any], replace: object = None) -> None:
        self.log = log
        self.replace = replace

    def _wrap(self, key: Any) -> Generator[None, Any, Any]:
        self.log.append(("wrapper enter", key))
        try:
            result = yield
        except ValueError as exc:
            self.log.append(("wrapper error", str(exc)))
            if self.replace is None:
                raise
            return self.replace
        self.log.append(("wrapper leave", result))
        return f"wrapped {result}"

    @hookimpl(wrapper=True)
    def repid_ack(self, key: Any) -> Generator[None, Any, Any]:
        return (yield from self._wrap(key))

    @hookimpl(wrapper=True)
    def repid_enqueue(self, key: Any) -> Generator[None, Any, Any]:
        return (yield from self._wrap(key.id_))


class V1Middleware:
    """A repid 1.x middleware object: async and sync subscribers of the same events."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def before_ack(self, key: Any) -> None:
        self.log.append(("before", key))

    def after_ack(self, key: Any, result: Any) -> None:  # sync: runs in a thread
        self.log.append(("after", key, result))

    def before_enqueue(self, key: Any) -> None:
        self.log.append(("before", key.id_))

    async def after_enqueue(self, key: Any, result: Any) -> None:
        self.log.append(("after", key.id_, result))


def ack_chain(log: list[Any], replace: object = None) -> HookChain:
    middleware = Middleware()
    middleware.register(Wrapper(log, replace))
    middleware.add_middleware(V1Middleware(log))
    chain = middleware.chains.ack
    assert chain is not None
    return chain


def ack_args(key: str) -> dict[str, Any]:
    return {"connection": None, "broker": None, "queue": "q", "key": key, "stash": {}}


async def test_before_then_wrapper_then_call_then_wrapper_then_after() -> None:
    log: list[Any] = []
    chain = ack_chain(log)

    async def call(value: str) -> str:
        log.append(("call", value))
        return value

    result = await chain.around(ack_args("k1"), call, "done")
    assert result == "wrapped done"
    assert log == [
        ("before", "k1"),
        ("wrapper enter", "k1"),
        ("call", "done"),
        ("wrapper leave", "done"),
        ("after", "k1", "wrapped done"),  # what the outermost wrapper returned
    ]


async def test_the_call_raises_after_subscribers_do_not_run_and_the_error_propagates(
) -> None:
    log: list[Any] = []
    chain = ack_chain(log)

    async def call() -> None:
        log.append(("call",))
        raise ValueError("broker said no")

    with pytest.raises(ValueError, match="broker said no"):
        await chain.around(ack_args("k2"), call)
    assert log == [
        ("before", "k2"),
        ("wrapper enter", "k2"),
        ("call",),
        ("wrapper error", "broker said no"),
    ]


async def test_an_error_a_wrapper_replaced_reaches_after_subscribers_as_the_result() -> None:
    log: list[Any] = []
    chain = ack_chain(log, replace="recovered")

    async def call() -> None:
        raise ValueError("broker said no")

    assert await chain.around(ack_args("k3"), call) == "recovered"
    assert log[-1] == ("after", "k3", "recovered")


async def test_order_through_a_real_broker_call(conn: Connection) -> None:
    log: list[Any] = []
    conn.middleware.register(Wrapper(log))
    conn.middleware.add_middleware(V1Middleware(log))
    await Job("x", id_="job-1", _connection=conn).enqueue()
    assert log == [
        ("before", "job-1"),
        ("wrapper enter", "job-1"),
        ("wrapper leave", None),  # the broker's enqueue returns None
        ("after", "job-1", "wrapped None"),
    ]


def test_a_chain_with_subscribers_takes_the_general_path_and_builds_its_arguments() -> None:
    chain = ack_chain([])
    assert isinstance(chain.subscribers, _v1.Subscribers)
    assert chain.single is None  # one wrapper, but subscribers around it
    assert chain.takes_args

    middleware = Middleware()
    middleware.register(Wrapper([]))
    plain = middleware.chains.ack
    assert plain is not None and plain.subscribers is None and plain.single is not None


def test_subscribers_alone_make_a_chain_without_wrappers() -> None:
    middleware = Middleware()
    middleware.add_middleware(V1Middleware([]))
    chain = middleware.chains.ack
    assert chain is not None and chain.wrappers == () and chain.takes_args
    assert chain.subscribers is not None
    assert len(chain.subscribers.before) == 1 and len(chain.subscribers.after) == 1
    assert middleware.chains.nack is None  # no subscriber, no wrapper: no chain


def test_the_chain_runner_no_longer_knows_before_or_after_subscribers() -> None:
    for name in ("before", "after", "aliases", "_with_subscribers"):
        assert not hasattr(HookChain, name), name
    assert "subscribers" in HookChain.__slots__
    # the runner module imports the subscriber types only for annotations
    assert not hasattr(_chain, "Subscriber") and not hasattr(_chain, "Subscribers")
    source = inspect.getsource(HookChain)
    for text in (".before", ".after", "v1_values", "aliases"):
        assert text not in source, text
    # the sequencing lives in the v1 adapter
    assert inspect.iscoroutinefunction(_v1.Subscribers.around)
