"""The HTTP server for `/healthz` and `/metrics`, of one worker and of the supervisor.

`HttpServer` answers GET for a fixed set of routes on asyncio streams (no dependency for a
few GET endpoints). `HealthCheckServer` is an `HttpServer` with the health endpoint; the
worker runs it in its own event loop. `ServerThread` runs any of them in a thread with an
event loop of its own, for the supervisor, which has none.

A route returns `(content_type, body)` (answered with 200) or `(status, content_type,
body)`; plugins add routes through `repid_http_routes`.

Guarantees against slow or hostile clients, each kept in `HttpServer._serve`:

- a request's line and headers together are at most `HttpLimits.max_head_bytes` bytes and
  `max_headers` lines (else 431 and the connection is closed);
- a connection gets `request_seconds` in total to send its request and read the answer,
  however slowly it trickles bytes (then it is closed);
- at most `max_connections` connections are open; when one more arrives, the oldest one
  still sending its request is dropped to make room, and if every open connection is being
  answered the newcomer gets 503. Idle connections therefore never lock a probe out.

Routes run in the server's event loop and must be quick: the health route only reads state.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

logger = logging.getLogger("repid.worker._health")

#: connections the kernel may queue before the server accepts them
ACCEPT_BACKLOG = 1024
#: connections accepted in one event loop iteration
ACCEPT_BATCH = 16

#: what a route answers: (content type, body) for 200, or (status, content type, body)
Answer = tuple[str, bytes] | tuple[int, str, bytes]
Route = Callable[[], Answer]
#: why the worker is unhealthy, or None while it is fine
HealthProbe = Callable[[], str | None]


@dataclass(frozen=True)
class HealthCheckServerSettings:
    """Where the health-check server listens, and how long a problem may last before
    `/healthz` answers 503 (`unhealthy_after`, seconds)."""

    address: str = "0.0.0.0"
    #: a number, or its digits as a string (`port="12345"`, as repid 1.x's docs write it)
    port: int = 8080
    endpoint_name: str = "/healthz"
    unhealthy_after: float = 30.0

    def __post_init__(self) -> None:
        port: object = self.port
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"HealthCheckServerSettings(port={self.port!r}): the port must "
                             "be a whole number from 0 to 65535, e.g. port=8080")
        object.__setattr__(self, "port", port)


@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost the server."""

    max_head_bytes: int = 8192
    max_headers: int = 100
    max_connections: int = 64
    request_seconds: float = 5.0


class _HeadTooLarge(Exception):
    """The request line and headers pass `max_head_bytes` or `max_headers`."""


def _response(status: int, ctype: str, body: bytes) -> bytes:
    phrase = HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class _Connection:
    """One client connection and whether its request was read yet."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.reading = True
        self.since = time.monotonic()

    def drop(self) -> None:
        """Close at once, without a goodbye."""
        self.writer.transport.abort()


class HttpServer:
    """Serves GET for `routes` on `address:port` in the running event loop."""

    def __init__(self, address: str, port: int, routes: Mapping[str, Route] | None = None,
                 limits: HttpLimits | None = None) -> None:
        self.address = address
        self.requested_port = port
        self.routes: dict[str, Route] = dict(routes or {})
        self.limits = limits or HttpLimits()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, _Connection] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful with port=0)."""
        if self._server is None:
            raise RuntimeError("the server is not listening: call start() first")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; an OSError (port in use, address not available) propagates."""
        family = socket.getaddrinfo(self.address, self.requested_port,
                                    type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.create_server((self.address, self.requested_port), family=family)
        # the stream limit bounds the bytes buffered for one line; asyncio accepts at most
        # `backlog` connections per loop iteration, so a flood is taken in small bites
        self._server = await asyncio.start_server(
            self._accept, sock=sock, limit=self.limits.max_head_bytes + 1,
            backlog=ACCEPT_BATCH)
        # ...while the kernel may queue many more, so that a flood does not make it drop a
        # probe's connection (asyncio set the queue to the batch size: raise it again)
        sock.listen(ACCEPT_BACKLOG)
        logger.info("serving %s on http://%s:%d", ", ".join(sorted(self.routes)),
                    self.address, self.port)

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections.values()):
            connection.drop()
        self._connections.clear()
        if self._handlers:  # they end at once: their connections are gone
            await asyncio.wait(set(self._handlers), timeout=1)
        await self._server.wait_closed()
        self._server = None

    def _make_room(self) -> bool:
        """Keep below `max_connections`: drop the oldest connection still sending its
        request; False when every open connection is being answered."""
        if len(self._connections) < self.limits.max_connections:
            return True
        waiting = [c for c in self._connections.values() if c.reading]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.since)
        del self._connections[oldest.writer]
        oldest.drop()
        return True

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if not self._make_room():
            writer.write(_response(503, "text/plain", b"too many connections\n"))
            writer.transport.close()  # sends what was written, then closes
            return
        connection = self._connections[writer] = _Connection(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await asyncio.wait_for(self._serve(reader, connection),
                                   self.limits.request_seconds)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            connection.drop()
        except asyncio.CancelledError:
            # the loop is shutting down; nobody awaits this task, so end it quietly
            connection.drop()
        finally:
            if task is not None:
                self._handlers.discard(task)
            self._connections.pop(writer, None)
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        """The request line; the headers are read and dropped within the limits."""
        budget, headers = self.limits.max_head_bytes, 0
        request = b""
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # one line longer than the stream limit
                raise _HeadTooLarge from None
            budget -= len(line)
            if budget < 0:
                raise _HeadTooLarge
            if not line.endswith(b"\n"):  # the client closed half-way
                raise ConnectionResetError("the client closed before ending its request")
            if not request:
                request = line
                continue
            if line in (b"\r\n", b"\n"):
                return request
            headers += 1
            if headers > self.limits.max_headers:
                raise _HeadTooLarge

    async def _serve(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        try:
            request = await self._read_head(reader)
        except _HeadTooLarge:
            answer: tuple[int, str, bytes] = (431, "text/plain",
                                              b"request line and headers too large\n")
        else:
            answer = self._answer(request)
        connection.reading = False
        connection.writer.write(_response(*answer))
        await connection.writer.drain()

    def _answer(self, request: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request line."""
        parts = request.decode("latin-1").split()
        if len(parts) < 2:
            return 400, "text/plain", b"bad request\n"
        method, path = parts[0], parts[1].split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            return 404, "text/plain", b"not found\n"
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        try:
            result = route()
        except Exception:
            logger.exception("HTTP route %s failed", path)
            return 500, "text/plain", b"error\n"
        if len(result) == 3:
            return result
        return 200, result[0], result[1]


class HealthCheckServer(HttpServer):
    """Serves the health endpoint and the routes plugins add.

    The health endpoint asks `health` (when given): None means 200 `OK`, a reason means
    503 with the reason as the body. Without `health` it answers 200 while serving.
    """

    def __init__(self, settings: HealthCheckServerSettings,
                 routes: Mapping[str, Route] | None = None, *,
                 health: HealthProbe | None = None, limits: HttpLimits | None = None) -> None:
        super().__init__(settings.address, settings.port, limits=limits)
        self.settings = settings
        self.health = health
        self.routes[settings.endpoint_name] = self._health
        self.routes.update(routes or {})

    def _health(self) -> tuple[int, str, bytes]:
        problem = None if self.health is None else self.health()
        if problem is None:
            return 200, "text/plain", b"OK"
        return 503, "text/plain; charset=utf-8", problem.encode() + b"\n"


class ServerThread:
    """Runs an `HttpServer` in a daemon thread with its own event loop."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"repid-http-{server.requested_port}")

    @property
    def port(self) -> int:
        """The port actually bound."""
        return self.server.port

    def start(self) -> None:
        """Listen and serve in the background; an OSError from listening propagates."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        except BaseException:
            self._shutdown()
            raise

    def stop(self) -> None:
        """Stop serving, close the socket, end the thread."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(5)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
