"""Every example in examples/ runs as its docstring says, and prints what it promises."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(script: str, *args: str, env: dict[str, str] | None = None,
        timeout: float = 45) -> str:
    """Run an example with this interpreter from the repository root; its stdout."""
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return done.stdout.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_example_says_how_to_run_it() -> None:
    for path in EXAMPLES.rglob("*.py"):
        first_line = path.read_text().split('"""')[1].splitlines()[0]
        assert first_line.startswith(("Run it with: python examples/",
                                      "Run it with: pytest examples/")), path


def test_quickstart() -> None:
    out = run("quickstart.py")
    assert "enqueued 3 jobs" in out and "worker processed 3 jobs" in out
    assert "'Hello, Ada!' (success=True)" in out


def test_custom_plugin() -> None:
    out = run("custom_plugin.py")
    assert out.count("[timing-plugin] enqueued a message to queue 'default'") == 2
    assert "greet('Ada') sees x-enqueued-by=timing-plugin" in out
    assert out.count("[timing-plugin] actor greet ran in") == 2
    assert "plugin saw 2 actor runs" in out


def test_prometheus_worker() -> None:
    pytest.importorskip("prometheus_client", reason="needs the prometheus extra")
    out = run("prometheus_worker.py", str(free_port()))
    assert 'repid_messages_processed_total{actor="resize",outcome="success",queue="default"} ' \
           "2.0" in out
    assert 'exception_type="ValueError",queue="default"} 1.0' in out


def test_fastapi_tracing() -> None:
    pytest.importorskip("fastapi", reason="needs fastapi (the test extra)")
    out = run("fastapi_tracing.py")
    request_trace = re.search(r"request trace ([0-9a-f]{32}): job result 'cat.png@64px'", out)
    assert request_trace is not None, out
    names = {name: trace for trace, name in
             re.findall(r"trace=([0-9a-f]{32}) span=\S+ parent=\S+ (.+)", out)}
    for name in ("POST /images", "send default", "process default"):
        assert names[name] == request_trace.group(1), out


def test_testing_example_passes_under_pytest() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "examples/testing/test_app.py",
                           "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                          timeout=45, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "3 passed" in out


def test_testing_app_runs() -> None:
    assert "users: {'ada@example.com': 'Ada'}" in run("testing/testing_app.py")


async def _delete(broker: object, queue: str) -> None:
    """Delete a queue an example used."""
    from repid.brokers.base import MessageBroker

    assert isinstance(broker, MessageBroker)
    await broker.connect()
    try:
        await broker.queue_delete(queue)
    finally:
        await broker.disconnect()


def test_rabbitmq_producer_and_consumer(amqp_dsn: str) -> None:
    rabbitmq = pytest.importorskip("repid.brokers.rabbitmq",
                                   reason="the RabbitMQ broker is not importable")
    queue = f"example_{uuid.uuid4().hex[:10]}"
    broker = rabbitmq.RabbitMessageBroker(dsn=amqp_dsn)
    env = {"RABBIT_CONNECTION_STRING": amqp_dsn, "REPID_EXAMPLE_QUEUE": queue}
    try:
        assert f"enqueued 2 send_email jobs to queue {queue}" in run("rabbitmq_producer.py",
                                                                     "2", env=env)
        out = run("rabbitmq_consumer.py", "2", env=env)
        assert "sent 'Hello #0' to user0@example.com" in out
        assert "sent 'Hello #1' to user1@example.com" in out
        assert "worker processed 2 messages" in out
    finally:
        asyncio.run(_delete(broker, queue))


def test_redis_producer_and_consumer(redis_dsn: str) -> None:
    redis = pytest.importorskip("repid.brokers.redis",
                                reason="the Redis broker is not importable")
    queue = f"example_{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "REDIS_CONNECTION_STRING": redis_dsn, "REPID_EXAMPLE_QUEUE": queue}
    consumer = subprocess.Popen([sys.executable, str(EXAMPLES / "redis_consumer.py"), "1"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    try:
        out = run("redis_producer.py", "4", "5", env=env)
        assert "enqueued add(4, 5)" in out and "result: 9 (success=True)" in out
        consumer_out = consumer.communicate(timeout=30)[0].decode()
        assert consumer.returncode == 0, consumer_out
        assert "adding 4 + 5" in consumer_out and "worker processed 1 messages" in consumer_out
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        asyncio.run(_delete(redis.RedisMessageBroker(dsn=redis_dsn), queue))
