"""In-flight counts through RabbitMQ's management API (the rabbitmq_management plugin)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
from rabbit_helpers import broker, key, params, queue, take  # noqa: F401 - fixtures

from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq._management import vhost_of

MANAGEMENT_URL = os.environ.get("REPID_TEST_RABBITMQ_MANAGEMENT_URL",
                                "http://guest:guest@127.0.0.1:15672")


@pytest.fixture
def management_url() -> str:
    parts = urlsplit(MANAGEMENT_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 15672), timeout=1).close()
    except OSError:
        reason = f"RabbitMQ's management API is not reachable at {parts.hostname}:{parts.port}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it (.ci/run enables the plugin)")
        pytest.skip(f"{reason}; run `rabbitmq-plugins enable rabbitmq_management`")
    return MANAGEMENT_URL


async def _in_flight_becomes(rabbit: RabbitMessageBroker, name: str, want: int) -> int:
    """The management API refreshes its counts every few seconds: poll until `want`."""
    deadline = time.monotonic() + 15
    seen = -2
    while time.monotonic() < deadline:
        seen = (await rabbit.queue_stats(name))["in_flight"]
        if seen == want:
            return seen
        await asyncio.sleep(0.5)
    return seen


async def test_in_flight_counts_unacked_messages(
        broker: RabbitMessageBroker, queue: str, management_url: str) -> None:  # noqa: F811
    broker.management_url = management_url
    for _ in range(2):
        await broker.enqueue(key(queue), "{}", params())
    consumer = broker.consume(queue, max_unacked_messages=10)
    await consumer.start()
    try:
        first = await take(consumer)
        second = await take(consumer)
        assert await _in_flight_becomes(broker, queue, 2) == 2
        await broker.ack(first[0])
        await broker.ack(second[0])
        assert await _in_flight_becomes(broker, queue, 0) == 0
    finally:
        await consumer.finish()


async def test_without_management_in_flight_is_unknown(
        broker: RabbitMessageBroker, queue: str) -> None:  # noqa: F811
    broker.management_url = None
    assert (await broker.queue_stats(queue))["in_flight"] == -1


async def test_unreachable_management_is_unknown_and_masked(
        broker: RabbitMessageBroker, queue: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker.management_url = f"http://guest:s3cret@127.0.0.1:{port}"
    assert (await broker.queue_stats(queue))["in_flight"] == -1
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(broker)


def test_vhost_of_dsn() -> None:
    assert vhost_of("amqp://u:p@h:5672/") == "/"
    assert vhost_of("amqp://u:p@h:5672") == "/"
    assert vhost_of("amqp://u:p@h/prod%2Fjobs") == "prod/jobs"
