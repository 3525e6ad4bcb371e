"""The options every Redis client repid makes gets, one server or a cluster alike."""

from __future__ import annotations

from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

#: seconds between the checks of an idle connection before it is used again
HEALTH_CHECK_INTERVAL = 15


def client_options(*, retries: int, socket_timeout: float | None,
                   socket_connect_timeout: float | None,
                   client_name: str | None) -> dict[str, Any]:
    """Replies decoded; a command that fails on a dropped connection retried `retries`
    times on a fresh one, with jittered exponential backoff (50 ms doubling up to 2 s);
    the timeouts; idle connections checked before use; the client's name."""
    return {
        "decode_responses": True,
        "retry": Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries),
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "client_name": client_name,
    }
