"""Shared fixtures: the real servers the integration tests talk to.

Without a reachable server those tests skip and say why, except under CI=true, where a
missing server fails them.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

REDIS_DSN = os.environ.get("REPID_TEST_REDIS_DSN", "redis://127.0.0.1:6379/0")
AMQP_DSN = os.environ.get("REPID_TEST_AMQP_DSN", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(dsn: str, default_port: int) -> bool:
    parts = urlsplit(dsn)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1",
                                       parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _need(dsn: str, default_port: int, what: str) -> str:
    if _reachable(dsn, default_port):
        return dsn
    message = f"{what} is not reachable at {dsn.split('@')[-1]}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it (.ci/run starts it)")
    pytest.skip(f"{message}; start it or set the DSN variable to run this test")


@pytest.fixture(scope="session")
def redis_dsn() -> str:
    """DSN of the real Redis (REPID_TEST_REDIS_DSN)."""
    return _need(REDIS_DSN, 6379, "Redis")


@pytest.fixture(scope="session")
def amqp_dsn() -> str:
    """DSN of the real RabbitMQ (REPID_TEST_AMQP_DSN)."""
    return _need(AMQP_DSN, 5672, "RabbitMQ")
