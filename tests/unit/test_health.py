"""The health-check HTTP server of a running Worker, probed with raw HTTP requests."""

from __future__ import annotations

import asyncio

import pytest

from repid import Connection, HealthCheckServerSettings, Router, Worker, hookimpl
from repid.worker._health import HealthCheckServer


async def http(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


class Metrics:
    @hookimpl
    def repid_http_routes(self, worker):  # type: ignore[no-untyped-def]
        return {"/metrics": lambda: ("text/plain; version=0.0.4",
                                     f"actors {len(worker.actors)}\n".encode())}


class Started:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    @hookimpl
    def repid_worker_start(self) -> None:
        self.event.set()


async def test_health_server_answers_while_worker_runs(make_conn) -> None:
    started = Started()
    conn: Connection = await make_conn(plugins=(Metrics(), started))
    router = Router()

    @router.actor
    async def work() -> None: ...

    worker = Worker(routers=[router], _connection=conn, run_health_check_server=True,
                    health_check_server_settings=HealthCheckServerSettings(
                        address="127.0.0.1", port=0, endpoint_name="/healthz"))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.event.wait(), 5)
        assert worker.health_server is not None
        port = worker.health_server.port
        assert port > 0
        assert await http(port, get("/healthz")) == (200, b"OK")
        assert await http(port, get("/healthz?probe=1")) == (200, b"OK")
        assert (await http(port, get("/elsewhere")))[0] == 404
        assert await http(port, get("/metrics")) == (200, b"actors 1\n")
        assert (await http(port, b"POST /healthz HTTP/1.1\r\n\r\n"))[0] == 405
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
    assert worker.health_server is None
    with pytest.raises(OSError):
        await http(port, get("/healthz"))  # closed once the worker stopped


async def test_no_health_server_by_default(conn: Connection) -> None:
    router = Router()

    @router.actor
    async def work() -> None: ...

    started = asyncio.Event()

    class Hook:
        @hookimpl
        def repid_worker_start(self, worker):  # type: ignore[no-untyped-def]
            started.set()
            assert worker.health_server is None

    conn.middleware.register(Hook())
    worker = Worker(routers=[router], _connection=conn)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    assert worker.health_server is None
    worker.stop()
    await asyncio.wait_for(task, 5)


async def test_failing_route_answers_500(caplog) -> None:
    def broken() -> tuple[str, bytes]:
        raise RuntimeError("route broke")

    server = HealthCheckServer(HealthCheckServerSettings(address="127.0.0.1", port=0,
                                                         endpoint_name="/alive"),
                               {"/broken": broken})
    await server.start()
    try:
        assert await http(server.port, get("/alive")) == (200, b"OK")
        assert (await http(server.port, get("/healthz")))[0] == 404  # a custom endpoint
        assert (await http(server.port, get("/broken")))[0] == 500
    finally:
        await server.stop()
    assert "route broke" in caplog.text


def test_settings_defaults() -> None:
    settings = HealthCheckServerSettings()
    assert (settings.address, settings.port, settings.endpoint_name) == (
        "0.0.0.0", 8080, "/healthz")
