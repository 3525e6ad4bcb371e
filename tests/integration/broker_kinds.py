"""The message brokers the integration tests run on, by kind, each on its real server."""

from __future__ import annotations

from typing import Any

import pytest

from repid import InMemoryMessageBroker, RabbitMessageBroker, RedisMessageBroker
from repid.brokers.base import MessageBroker


def message_broker(kind: str, request: pytest.FixtureRequest, **options: Any) -> MessageBroker:
    """A broker of `kind` (`in_memory`, `redis`, `redis_cluster`, `rabbitmq`,
    `rabbitmq_quorum`) with `options`, on the server the session's fixtures give (a test
    without that server skips, or fails under CI=true)."""
    if kind == "in_memory":
        return InMemoryMessageBroker(**options)
    if kind in ("redis", "redis_cluster"):
        return RedisMessageBroker(request.getfixturevalue(f"{kind}_dsn"), **options)
    if kind == "rabbitmq_quorum":
        options.setdefault("queue_type", "quorum")
    elif kind != "rabbitmq":
        raise ValueError(f"no broker of kind {kind!r}")
    return RabbitMessageBroker(request.getfixturevalue("amqp_dsn"), **options)
