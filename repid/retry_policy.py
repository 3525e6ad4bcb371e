"""The default retry policy: exponential backoff, registered as the last-resort plugin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from repid.data import Parameters, RoutingKey
from repid.middleware import hookimpl

if TYPE_CHECKING:
    from repid.connection import Connection

RetryPolicyT = Callable[[int], "timedelta | float | int"]


def default_retry_policy_factory(
    min_backoff: timedelta | float = 1,
    max_backoff: timedelta | float = timedelta(days=1),
    multiplier: float = 5,
    max_exponent: int = 15,
) -> Callable[[int], timedelta]:
    """A policy waiting `min_backoff * multiplier ** (n - 1)` before retry n, capped.

    `n` is the retry number (1 for the first retry, the default as in repid 1.x, so
    `policy()` is the first wait). With the defaults: 1 s, 5 s, 25 s, ... up to one day.
    """
    low = _seconds(min_backoff)
    high = _seconds(max_backoff)

    def policy(retry_number: int = 1) -> timedelta:
        exponent = min(max(retry_number - 1, 0), max_exponent)
        return timedelta(seconds=min(high, low * multiplier**exponent))

    return policy


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def to_timedelta(value: timedelta | float, source: str) -> timedelta:
    """A retry policy's answer as a timedelta; a wrong type names its source."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise TypeError(f"{source} returned {value!r}; return a timedelta or a number of seconds")


class DefaultRetryPolicy:
    """Plugin answering `repid_retry_delay` with `default_retry_policy_factory()`; it runs
    last, so any other plugin's answer wins."""

    def __init__(self, policy: Callable[[int], timedelta] | None = None) -> None:
        self.policy = policy or default_retry_policy_factory()

    @hookimpl(trylast=True)
    def repid_retry_delay(self, params: Parameters) -> timedelta:
        return self.policy(params.retries.already_tried + 1)


def compute_retry_delay(connection: Connection, actor: Any, key: RoutingKey,
                        params: Parameters, exception: BaseException | None) -> timedelta:
    """The wait before the next attempt: the actor's own `retry_policy` if it has one,
    else the first plugin answering `repid_retry_delay`."""
    policy = getattr(actor, "retry_policy", None)
    if policy is not None:
        return to_timedelta(policy(params.retries.already_tried + 1),
                            f"retry_policy of actor {actor.name!r}")
    value = connection.middleware.call_first(
        "repid_retry_delay", actor=actor, key=key, params=params, exception=exception)
    if value is None:
        return timedelta(0)
    return to_timedelta(value, "a repid_retry_delay plugin")
