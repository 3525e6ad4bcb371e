"""Dependency injection: Depends (sync, async, nested, Annotated, in a process,
overridden), MessageDependency, and one evaluation per message."""

from __future__ import annotations

import os
import threading
from typing import Annotated

import pytest

from repid import Connection, Depends, Job, MessageDependency, Router


async def settings() -> dict:
    """Module-level: with `from __future__ import annotations`, an `Annotated[...]` hint
    is resolved from the module's globals."""
    return {"greeting": "hello"}


def pid_dependency() -> int:
    """Module-level so a process pool can pickle it."""
    return os.getpid()


async def run(conn: Connection, run_worker, router: Router, n: int = 1, **job) -> Job:  # type: ignore[no-untyped-def]
    name = next(iter(router.actors))
    last = Job(name, _connection=conn, **job)
    for _ in range(n):
        await last.enqueue()
    await run_worker(conn, router, messages_limit=n)
    return last


async def test_sync_and_async_dependencies(conn: Connection, run_worker) -> None:
    router = Router()
    loop_thread = threading.get_ident()
    where = {}

    def sync_dep() -> str:
        where["sync"] = threading.get_ident()
        return "sync-value"

    async def async_dep() -> str:
        where["async"] = threading.get_ident()
        return "async-value"

    @router.actor
    async def actor(x: int, a: str = Depends(sync_dep), b: str = Depends(async_dep)) -> list:
        return [x, a, b]

    job = await run(conn, run_worker, router, args={"x": 1})
    assert (await job.result).data == [1, "sync-value", "async-value"]  # type: ignore
    assert where["async"] == loop_thread  # async dependencies run on the loop
    assert where["sync"] != loop_thread  # sync ones in a thread


async def test_sub_dependencies(conn: Connection, run_worker) -> None:
    router = Router()

    def base() -> int:
        return 2

    async def middle(b: int = Depends(base)) -> int:
        return b * 10

    def top(m: int = Depends(middle), b: int = Depends(base)) -> int:
        return m + b

    @router.actor
    def actor(value: int = Depends(top)) -> int:
        return value

    job = await run(conn, run_worker, router)
    assert (await job.result).data == 22  # type: ignore[union-attr]


async def test_annotated_depends(conn: Connection, run_worker) -> None:
    router = Router()

    @router.actor
    async def actor(name: str, cfg: Annotated[dict, Depends(settings)]) -> str:
        return f"{cfg['greeting']} {name}"

    job = await run(conn, run_worker, router, args={"name": "ada"})
    assert (await job.result).data == "hello ada"  # type: ignore[union-attr]


async def test_dependency_in_a_process(conn: Connection, run_worker) -> None:
    router = Router()

    @router.actor
    async def actor(pid: int = Depends(pid_dependency, run_in_process=True),
                    here: int = Depends(pid_dependency)) -> list:
        return [pid, here]

    job = await run(conn, run_worker, router)
    result = await job.result
    assert result is not None and result.success, result
    in_process, in_thread = result.data
    assert in_thread == os.getpid()
    assert in_process != os.getpid()


async def test_override_swaps_and_none_restores(conn: Connection, run_worker) -> None:
    router = Router()

    def real() -> str:
        return "real"

    def fake() -> str:
        return "fake"

    dep = Depends(real)

    @router.actor
    async def actor(v: str = dep) -> str:
        return v

    dep.override(fake)
    assert dep.fn is fake
    job = await run(conn, run_worker, router)
    assert (await job.result).data == "fake"  # type: ignore[union-attr]
    dep.override(None)
    assert dep.fn is real
    job = await run(conn, run_worker, router)
    assert (await job.result).data == "real"  # type: ignore[union-attr]


async def test_dependency_receives_the_message(conn: Connection, run_worker) -> None:
    router = Router()

    def tenant(msg: MessageDependency) -> str:
        return f"{msg.parameters.headers['tenant']}/{msg.key.topic}"

    @router.actor
    async def actor(t: str = Depends(tenant), msg: MessageDependency = None) -> list:  # type: ignore[assignment]
        return [t, msg.key.topic]

    job = await run(conn, run_worker, router, headers={"tenant": "acme"})
    assert (await job.result).data == ["acme/actor", "actor"]  # type: ignore[union-attr]


async def test_one_depends_used_twice_is_evaluated_once_per_message(
        conn: Connection, run_worker) -> None:
    router = Router()
    calls = []

    def counted() -> int:
        calls.append(1)
        return len(calls)

    shared = Depends(counted)

    def left(v: int = shared) -> int:
        return v

    async def right(v: int = shared) -> int:
        return v

    @router.actor
    async def actor(a: int = Depends(left), b: int = Depends(right), c: int = shared) -> list:
        return [a, b, c]

    job = await run(conn, run_worker, router, n=2)
    assert len(calls) == 2  # once for each of the two messages
    assert (await job.result).data in ([1, 1, 1], [2, 2, 2])  # type: ignore[union-attr]


async def test_dependency_that_raises_fails_the_run(conn: Connection, run_worker,
                                                   stats) -> None:
    router = Router()

    def broken() -> None:
        raise PermissionError("no access")

    @router.actor
    async def actor(v: None = Depends(broken)) -> None: ...

    job = await run(conn, run_worker, router)
    result = await job.result
    assert result is not None and result.exception == "PermissionError: no access"
    assert (await stats(conn))["dead"] == 1


async def test_injected_parameters_are_not_taken_from_the_payload(conn: Connection,
                                                                  run_worker) -> None:
    router = Router()

    def dep() -> str:
        return "injected"

    @router.actor
    async def actor(v: str = Depends(dep)) -> str:
        return v

    # the payload offering `v` is an unknown argument, ignored (as in repid 1.x): it
    # cannot override the dependency
    job = await run(conn, run_worker, router, args={"v": "from payload"})
    result = await job.result
    assert result is not None and result.success is True
    assert result.data == "injected"


def test_depends_needs_a_callable() -> None:
    import pytest

    with pytest.raises(TypeError, match="Depends takes a function"):
        Depends(42)  # type: ignore[arg-type]


def test_unresolvable_depends_hint_is_a_clear_error_at_registration() -> None:
    """A string hint naming a dependency local to a function cannot be resolved: the
    decorator says so, instead of the message failing later as a missing argument."""
    namespace: dict[str, object] = {}
    exec(
        "from __future__ import annotations\n"
        "from typing import Annotated\n"
        "from repid import Depends, Router\n"
        "def build():\n"
        "    def local_dep() -> int:\n"
        "        return 5\n"
        "    router = Router()\n"
        "    @router.actor\n"
        "    async def actor(x: int, d: Annotated[int, Depends(local_dep)]) -> None: ...\n"
        "    return router\n",
        namespace,
    )
    with pytest.raises(TypeError, match=r"parameter 'd'.*module level"):
        namespace["build"]()  # type: ignore[operator]


def test_a_local_dependency_named_in_an_annotated_string_hint_is_refused() -> None:
    """`Annotated[int, dep]` with `dep` a local variable cannot be resolved either."""
    namespace: dict[str, object] = {}
    exec(
        "from __future__ import annotations\n"
        "from typing import Annotated\n"
        "from repid import Depends, Router\n"
        "def build():\n"
        "    dep = Depends(lambda: 5)\n"
        "    router = Router()\n"
        "    @router.actor\n"
        "    async def actor(x: int, d: Annotated[int, dep]) -> None: ...\n"
        "    return router\n",
        namespace,
    )
    with pytest.raises(TypeError, match=r"parameter 'd'.*module level"):
        namespace["build"]()  # type: ignore[operator]


def test_one_unresolvable_hint_keeps_the_others() -> None:
    """Hints that resolve keep their types when another parameter's does not."""
    from repid.dependencies.hints import hints_of

    namespace: dict[str, object] = {}
    exec(
        "from __future__ import annotations\n"
        "def fn(x: int, y: NotDefinedAnywhere) -> None: ...\n",
        namespace,
    )
    hints = hints_of(namespace["fn"])  # type: ignore[arg-type]
    assert hints["x"] is int
    assert hints["y"] == "NotDefinedAnywhere"
