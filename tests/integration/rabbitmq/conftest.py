"""Fixtures of the RabbitMQ tests: a private RabbitMQ node a test may stop, start or wipe
(never the shared server, which other tests use)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers.rabbit_node import PrivateRabbit, available, free_port


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this test module's own (a node takes seconds to start), on free
    loopback ports and a temporary directory; stopped and deleted at the end, even when a
    test fails. A test that stops its app must start it again before it ends."""
    why_not = available()
    if why_not is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why_not}; CI=true requires a RabbitMQ server installation")
        pytest.skip(f"{why_not}; install RabbitMQ to run this test")
    node = PrivateRabbit(free_port())
    try:
        node.start()
        yield node
    finally:
        node.stop()
