"""The default retry policy: exponential backoff, registered as the last-resort plugin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from repid.data import Parameters, RoutingKey, Stash
from repid.middleware import hookimpl, hookspecs

if TYPE_CHECKING:
    from repid.connection import Connection

RetryPolicyT = Callable[[int], "timedelta | float | int"]


class DefaultRetryPolicyT(Protocol):
    """A policy made by `default_retry_policy_factory`: `policy()` is the first retry's
    wait, as in repid 1.x."""

    def __call__(self, retry_number: int = 1) -> timedelta: ...


def default_retry_policy_factory(
    min_backoff: timedelta | float = 10,
    max_backoff: timedelta | float = 86400,
    multiplier: float = 5,
    max_exponent: int = 15,
) -> DefaultRetryPolicyT:
    """repid 1.x's exponential policy: before retry n (1 for the first retry, the default,
    so `policy()` is the first wait) it waits `multiplier * 2 ** min(n, max_exponent)`
    seconds, at most `max_backoff` and at least `min_backoff` (the minimum wins).

    With the defaults: 10 s, 20 s, 40 s, ... up to one day; `(60, 86400, 5, 15)` gives
    60 s, 60 s, 60 s, 80 s, 160 s, ... There is no jitter. Backoffs are seconds or
    timedeltas.
    """
    low = _seconds(min_backoff)
    high = _seconds(max_backoff)

    def policy(retry_number: int = 1) -> timedelta:
        exponent = min(retry_number, max_exponent)
        return timedelta(seconds=max(low, min(multiplier * 2**exponent, high)))

    return policy


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


#: what a retry policy (or a `repid_retry_delay` plugin) may answer
_DELAY = hookspecs.DECISION_ANSWERS["repid_retry_delay"]


def to_timedelta(value: timedelta | float, source: str) -> timedelta:
    """A retry policy's answer as a timedelta; a wrong type names its source (a
    `repid_retry_delay` plugin's wrong answer never gets here: `call_first` drops it)."""
    if isinstance(value, timedelta):
        return value
    if _DELAY.accepts(value):
        return timedelta(seconds=value)
    raise TypeError(f"{source} returned {value!r}; return {_DELAY.text}")


class DefaultRetryPolicy:
    """Plugin answering `repid_retry_delay` with `default_retry_policy_factory()`; it runs
    last, so any other plugin's answer wins."""

    def __init__(self, policy: Callable[[int], timedelta] | None = None) -> None:
        self.policy = policy or default_retry_policy_factory()

    @hookimpl(trylast=True)
    def repid_retry_delay(self, params: Parameters) -> timedelta:
        return self.policy(params.retries.already_tried + 1)


def compute_retry_delay(connection: Connection, actor: Any, key: RoutingKey,
                        params: Parameters, exception: BaseException | None,
                        stash: Stash) -> timedelta:
    """The wait before the next attempt: the actor's own `retry_policy` if it has one,
    else the first plugin answering `repid_retry_delay` with a delay (`stash`: the
    delivery's); a plugin answering something else is logged and skipped, so the default
    policy (asked last) decides."""
    policy = getattr(actor, "retry_policy", None)
    if policy is not None:
        return to_timedelta(policy(params.retries.already_tried + 1),
                            f"retry_policy of actor {actor.name!r}")
    value = connection.middleware.call_first(
        "repid_retry_delay", actor=actor, key=key, params=params, exception=exception,
        stash=stash)
    if value is None:
        return timedelta(0)
    return to_timedelta(value, "a repid_retry_delay plugin")
