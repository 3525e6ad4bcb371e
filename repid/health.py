"""The health-check HTTP server: `GET /healthz` answers 200 while the worker runs.

Plugins may add paths (the metrics plugin adds `/metrics`) through `repid_http_routes`.
A tiny HTTP/1.0 responder on asyncio streams: no dependency for two GET endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("repid.health")

Route = Callable[[], tuple[str, bytes]]


@dataclass(frozen=True)
class HealthCheckServerSettings:
    """Where the health-check server listens."""

    address: str = "0.0.0.0"
    port: int = 8080
    endpoint_name: str = "/healthz"


class HealthCheckServer:
    """Serves the health endpoint and the routes plugins add."""

    def __init__(self, settings: HealthCheckServerSettings,
                 routes: dict[str, Route] | None = None) -> None:
        self.settings = settings
        self.routes: dict[str, Route] = {settings.endpoint_name: lambda: ("text/plain",
                                                                          b"OK")}
        self.routes.update(routes or {})
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port=0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.settings.address,
                                                  self.settings.port)
        logger.info("health check server on http://%s:%d%s", self.settings.address,
                    self.port, self.settings.endpoint_name)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            route = self.routes.get(path)
            if method != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only"
            elif route is None:
                status, ctype, body = "404 Not Found", "text/plain", b"not found"
            else:
                try:
                    ctype, body = route()
                    status = "200 OK"
                except Exception:
                    logger.exception("health route %s failed", path)
                    status, ctype, body = "500 Internal Server Error", "text/plain", b"error"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}"
                "\r\nConnection: close\r\n\r\n".encode("latin-1") + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
