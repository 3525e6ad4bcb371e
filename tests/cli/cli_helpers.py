"""Helpers of the CLI tests: start `repid` as a subprocess, poll HTTP, enqueue jobs, run a
private redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "tests/cli/cli_app.py:worker"
T = TypeVar("T")


def repid_command() -> list[str]:
    """The installed `repid` console script, else `python -m repid.cli`."""
    script = Path(sys.executable).with_name("repid")
    return [str(script)] if script.exists() else [sys.executable, "-m", "repid.cli"]


def free_port() -> int:
    """A TCP port nothing listens on right now (also usable as a closed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `repid` subprocess: ours, without stray REPID_* DSNs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REPID_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(extra)
    return env


@contextmanager
def running(args: list[str], env: Mapping[str, str], log: Path,
            cwd: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    """Run `repid ARGS` in its own session; kill the whole group when the block ends."""
    with open(log, "wb") as out:
        process = subprocess.Popen([*repid_command(), *args], cwd=cwd, env=dict(env),
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # worker processes left behind


def wait_for(predicate: Callable[[], T | None], timeout: float = 30,
             what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def http_get(port: int, path: str) -> tuple[int, bytes] | None:
    """(status, body) of GET http://127.0.0.1:port/path, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except OSError:
        return None


def health(port: int) -> dict[str, Any] | None:
    """The supervisor's /healthz JSON, or None while it does not answer."""
    answer = http_get(port, "/healthz")
    return None if answer is None else dict(json.loads(answer[1]))


def all_ready(port: int, processes: int) -> dict[str, Any] | None:
    """The /healthz JSON once every worker process is ready."""
    found = health(port)
    if found and found["status"] == "ok" and found["ready"] == processes:
        return found
    return None


def lines(path: Path) -> list[str]:
    """The lines of a file that may not exist yet."""
    return path.read_text().splitlines() if path.exists() else []


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        sample, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


async def _enqueue(dsn: str, queue: str, jobs: list[dict[str, Any]], actor: str) -> None:
    from repid import Connection, Job
    from repid.cli._loading import message_broker_from_dsn

    connection = Connection(message_broker_from_dsn(dsn))
    await connection.connect()
    try:
        for args in jobs:
            await Job(actor, queue=queue, args=args, _connection=connection).enqueue()
    finally:
        await connection.disconnect()


def enqueue(dsn: str, queue: str, jobs: list[dict[str, Any]], actor: str = "work") -> None:
    """Enqueue `actor` jobs with these arguments to `queue` (Redis or RabbitMQ)."""
    asyncio.run(_enqueue(dsn, queue, jobs, actor))


async def _declare(dsn: str, queue: str) -> None:
    from repid.cli._loading import message_broker_from_dsn

    broker = message_broker_from_dsn(dsn)
    await broker.connect()
    try:
        await broker.queue_declare(queue)
    finally:
        await broker.disconnect()


def declare_queue(dsn: str, queue: str) -> None:
    """Declare a test queue before any worker runs (Redis or RabbitMQ)."""
    asyncio.run(_declare(dsn, queue))


async def _stats(dsn: str, queue: str) -> dict[str, int]:
    from repid.cli._loading import message_broker_from_dsn

    broker = message_broker_from_dsn(dsn)
    await broker.connect()
    try:
        return await broker.queue_stats(queue)
    finally:
        await broker.disconnect()


def queue_stats(dsn: str, queue: str) -> dict[str, int]:
    """`ready`, `delayed`, `in_flight`, `dead` counts of a queue."""
    return asyncio.run(_stats(dsn, queue))


class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence: stopping it
    loses every key, as a crashed and replaced Redis would."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: apt-get install redis-server")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._pong, timeout=10, what=f"redis-server on port {self.port}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to its clients)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


async def _delete(dsn: str, queue: str) -> None:
    from repid.cli._loading import message_broker_from_dsn

    broker = message_broker_from_dsn(dsn)
    await broker.connect()
    try:
        await broker.queue_delete(queue)
    finally:
        await broker.disconnect()


def delete_queue(dsn: str, queue: str) -> None:
    """Remove a test queue (Redis or RabbitMQ)."""
    asyncio.run(_delete(dsn, queue))
