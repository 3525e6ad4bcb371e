"""The HTTP server of /healthz and /metrics against slow, huge and idle clients.

The server runs in the test's event loop, like a worker's; hostile clients run in threads
with blocking sockets, so they load the server and not the loop. Each test checks that a
good client still gets its answer quickly, and that the loop never stalls.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from repid.worker._health import (
    HealthCheckServer,
    HealthCheckServerSettings,
    HttpLimits,
    HttpServer,
    ServerThread,
)

#: a good client must be answered within this many seconds while under attack
QUICK = 1.0


def request(port: int, raw: bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            timeout: float = 5) -> tuple[int, bytes, float]:
    """(status, body, seconds taken) of one request on a fresh blocking socket."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, time.monotonic() - started


async def good_request(port: int) -> tuple[int, bytes, float]:
    return await asyncio.to_thread(request, port)


class LoopLag:
    """The longest the event loop was late for a 10 ms tick."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - before - 0.01)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
async def server() -> AsyncIterator[HealthCheckServer]:
    limits = HttpLimits(max_head_bytes=8192, max_headers=100, max_connections=64,
                        request_seconds=1.5)
    srv = HealthCheckServer(HealthCheckServerSettings(address="127.0.0.1", port=0),
                            {"/metrics": lambda: ("text/plain", b"m 1\n")}, limits=limits)
    await srv.start()
    yield srv
    await srv.stop()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def slowloris(port: int, clients: int) -> Iterator[list[socket.socket]]:
    """`clients` connections sending one byte of a request every 0.2 s until closed."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(clients)]
    stop = threading.Event()

    def trickle() -> None:
        payload = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        for byte in payload:
            for sock in socks:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    continue
            if stop.wait(0.2):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(5)
        for sock in socks:
            sock.close()


async def test_slow_clients_do_not_delay_others_and_are_cut_off(
        server: HealthCheckServer) -> None:
    with LoopLag() as lag, slowloris(server.port, 10) as slow:
        await asyncio.sleep(0.3)  # they are connected and trickling
        status, body, took = await good_request(server.port)
        assert (status, body) == (200, b"OK")
        assert took < QUICK
        # the whole request gets 1.5 s however slowly it comes, then the server closes it
        started = time.monotonic()
        assert await asyncio.to_thread(closed_within, slow[0], 4)
        assert time.monotonic() - started < 3
    assert lag.worst < 0.25


async def test_huge_header_is_refused_at_the_limit(server: HealthCheckServer) -> None:
    huge = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"

    def send_huge() -> tuple[int, int]:
        """(status answered, bytes the server accepted before answering)."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sent = 0
            try:
                while sent < len(huge):
                    sent += sock.send(huge[sent:sent + 65536])
            except OSError:
                pass  # the server answered and closed while we were still sending
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except OSError:
                pass
        return int(data.split(b" ", 2)[1]) if data else 0, sent

    with LoopLag() as lag:
        huge_task = asyncio.create_task(asyncio.to_thread(send_huge))
        status, body, took = await good_request(server.port)
        assert (status, body) == (200, b"OK") and took < QUICK
        answered, _ = await asyncio.wait_for(huge_task, 10)
    assert answered in (431, 0)  # 0: the reset came before the answer could be read
    assert lag.worst < 0.25


async def test_limits_answer_431(server: HealthCheckServer) -> None:
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"
    assert (await asyncio.to_thread(request, server.port, long_line))[0] == 431
    many = b"GET /healthz HTTP/1.1\r\n" + b"X-H: 1\r\n" * 101 + b"\r\n"
    assert (await asyncio.to_thread(request, server.port, many))[0] == 431
    enough = b"GET /healthz HTTP/1.1\r\n" + b"X-H: 1\r\n" * 100 + b"\r\n"
    assert (await asyncio.to_thread(request, server.port, enough))[:2] == (200, b"OK")
    # a head of 8 KiB in many small headers is too large as a whole
    bulky = b"GET /healthz HTTP/1.1\r\n" + (b"X-H: " + b"b" * 150 + b"\r\n") * 60 + b"\r\n"
    assert (await asyncio.to_thread(request, server.port, bulky))[0] == 431


#: a separate process opens the idle connections (in a thread of the test process it would
#: compete with the server's loop for the GIL and measure that instead)
IDLE_CLIENTS = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
print(len(socks), flush=True)
sys.stdin.read()  # hold them until the test closes our stdin
"""


async def test_a_thousand_idle_connections_do_not_lock_out_a_probe(
        server: HealthCheckServer) -> None:
    clients = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IDLE_CLIENTS, str(server.port), "1000",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert clients.stdin is not None and clients.stdout is not None
    try:
        with LoopLag() as lag:
            assert await asyncio.wait_for(clients.stdout.readline(), 15) == b"1000\n"
            await asyncio.sleep(0.1)
            assert len(server._connections) <= server.limits.max_connections
            for _ in range(3):
                status, body, took = await good_request(server.port)
                assert (status, body) == (200, b"OK")
                assert took < QUICK
        assert lag.worst < 0.25
    finally:
        clients.stdin.close()
        await asyncio.wait_for(clients.wait(), 10)


async def test_the_oldest_waiting_connection_makes_room(server: HealthCheckServer) -> None:
    with ExitStack() as stack:
        socks = []
        for _ in range(server.limits.max_connections + 1):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            stack.callback(sock.close)
            socks.append(sock)
            await asyncio.sleep(0.005)  # accepted in this order
        # the first one was dropped at once (not after request_seconds), the last is served
        assert await asyncio.to_thread(closed_within, socks[0], 0.5)
        socks[-1].sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = await asyncio.to_thread(socks[-1].recv, 1000)
        assert answer.startswith(b"HTTP/1.1 200 OK")


async def test_routes_statuses_and_methods(server: HealthCheckServer) -> None:
    port = server.port
    assert (await asyncio.to_thread(request, port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"))[:2] \
        == (200, b"m 1\n")
    assert (await asyncio.to_thread(request, port, b"GET /nope HTTP/1.0\r\n\r\n"))[0] == 404
    assert (await asyncio.to_thread(request, port, b"PUT /healthz HTTP/1.0\r\n\r\n"))[0] == 405
    assert (await asyncio.to_thread(request, port, b"nonsense\r\n\r\n"))[0] == 400
    # a client that ends its head with bare newlines is answered too
    assert (await asyncio.to_thread(request, port, b"GET /healthz HTTP/1.0\n\n"))[:2] == \
        (200, b"OK")


async def test_health_probe_turns_503_with_the_reason_and_back() -> None:
    problem: list[str | None] = ["cannot take messages from 'q' for 3 s: Redis unreachable"]
    srv = HealthCheckServer(HealthCheckServerSettings(address="127.0.0.1", port=0,
                                                      endpoint_name="/alive"),
                            health=lambda: problem[0])
    await srv.start()
    try:
        status, body, _ = await asyncio.to_thread(
            request, srv.port, b"GET /alive HTTP/1.1\r\n\r\n")
        assert status == 503 and body == f"{problem[0]}\n".encode()
        problem[0] = None
        assert (await asyncio.to_thread(request, srv.port,
                                        b"GET /alive HTTP/1.1\r\n\r\n"))[:2] == (200, b"OK")
    finally:
        await srv.stop()


def test_settings_keep_their_v1_shape() -> None:
    settings = HealthCheckServerSettings("127.0.0.1", 9000, "/hc")
    assert (settings.address, settings.port, settings.endpoint_name) == (
        "127.0.0.1", 9000, "/hc")
    assert settings.unhealthy_after == 30.0


def test_server_thread_serves_without_a_loop_of_the_caller() -> None:
    answers = iter([(503, "application/json", b'{"status": "starting"}'),
                    (200, "application/json", b'{"status": "ok"}')])
    thread = ServerThread(HttpServer("127.0.0.1", 0, {"/healthz": lambda: next(answers)}))
    thread.start()
    port = thread.port
    try:
        assert request(thread.port)[:2] == (503, b'{"status": "starting"}')
        assert request(thread.port)[:2] == (200, b'{"status": "ok"}')
        with slowloris(thread.port, 5):
            assert request(thread.port, b"GET /other HTTP/1.0\r\n\r\n")[0] == 404
    finally:
        thread.stop()
    with pytest.raises(OSError):
        request(port)


def test_server_thread_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        thread = ServerThread(HttpServer("127.0.0.1", busy.getsockname()[1], {}))
        with pytest.raises(OSError):
            thread.start()
