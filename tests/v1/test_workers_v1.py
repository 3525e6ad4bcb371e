"""Workers, actors, dependencies and health checks as repid 1.x's guides use them."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from typing import Annotated

import pytest

from repid import (
    Connection,
    Depends,
    HealthCheckServerSettings,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    Queue,
    Repid,
    Router,
    Worker,
)

TIMEOUT = 10


@pytest.fixture
async def app() -> AsyncIterator[Repid]:
    app = Repid(Connection(InMemoryMessageBroker(),
                           results_bucket_broker=InMemoryBucketBroker(use_result_bucket=True)))
    async with app.magic(auto_disconnect=True):
        await Queue().declare()
        yield app


async def test_a_worker_with_no_actors_returns_with_nothing_processed(app: Repid) -> None:
    runner = await asyncio.wait_for(Worker().run(), TIMEOUT)
    assert runner.processed == 0


async def test_actor_result_imports_from_repid_actor_for_a_v1_subscriber(app: Repid) -> None:
    from repid.actor import ActorResult

    seen: list[ActorResult] = []

    def after_actor_run(result: ActorResult) -> None:
        seen.append(result)

    app.connection.middleware.add_subscriber(after_actor_run)
    router = Router()

    @router.actor
    async def fails() -> None:
        raise LookupError("nope")

    await Job("fails").enqueue()
    await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    assert len(seen) == 1
    assert isinstance(seen[0], ActorResult)
    assert not seen[0].success and isinstance(seen[0].exception, LookupError)


def where_it_runs() -> int:
    return os.getpid()


def original() -> int:
    return -1


dependency = Depends(original)
pid_router = Router()


@pid_router.actor
async def report(pid: Annotated[int, dependency]) -> int:
    return pid


async def test_a_dependency_override_may_run_in_a_process(app: Repid) -> None:
    dependency.override(where_it_runs, run_in_process=True)
    router = pid_router

    job = Job("report")
    await job.enqueue()
    await asyncio.wait_for(Worker(routers=[router], messages_limit=1).run(), TIMEOUT)
    result = await job.result
    assert result is not None and result.success
    assert result.data not in (-1, os.getpid())  # the override ran, in another process
    dependency.override(None)
    assert dependency.fn is original and not dependency.run_in_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_health_check_port_may_be_given_as_a_string(app: Repid) -> None:
    port = free_port()
    router = Router()

    @router.actor
    async def idle() -> None: ...

    worker = Worker(routers=[router], run_health_check_server=True,
                    health_check_server_settings=HealthCheckServerSettings(
                        address="127.0.0.1", port=str(port),  # type: ignore[arg-type]
                        endpoint_name="/health-check"))
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            if worker.health_server is not None:
                break
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        writer.write(b"GET /health-check HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        worker.stop()
        await asyncio.wait_for(task, TIMEOUT)


@pytest.mark.parametrize("port", ["http", "-1", "70000", True])
def test_a_port_that_is_not_one_is_refused_with_the_reason(port: object) -> None:
    with pytest.raises(ValueError, match="whole number from 0 to 65535"):
        HealthCheckServerSettings(port=port)  # type: ignore[arg-type]
