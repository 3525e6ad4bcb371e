"""Retry policies and a plugin that applies one (and retries only chosen exception types).

A policy is a callable taking the retry number (1 for the first retry) and returning a
`timedelta`. Use one on a single actor (`@router.actor(retry_policy=fixed(10))`) or for a
whole connection with `RetryPlugin(policy)`; an actor's own `retry_policy=` always wins.

`RetryPlugin(retry_on=(ConnectionError, TimeoutError))` also decides *whether* to retry: a
failure with any other exception goes straight to the dead-letter queue, retries left or not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from repid import hookimpl

if TYPE_CHECKING:
    from repid import Parameters

__all__ = ["RetryPlugin", "RetryPolicy", "exponential", "fixed", "jittered"]

#: retry number (1 for the first retry) -> how long to wait before it
RetryPolicy = Callable[[int], timedelta]


def _to_timedelta(value: timedelta | float, what: str) -> timedelta:
    """A duration given as a timedelta or seconds, checked to be non-negative."""
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise ValueError(f"{what} is {value!r}; it must not be negative")
    return delta


def exponential(
    min_backoff: timedelta | float = 1,
    max_backoff: timedelta | float = timedelta(days=1),
    multiplier: float = 5,
    max_exponent: int = 15,
) -> RetryPolicy:
    """Wait `min_backoff * multiplier ** (n - 1)` before retry n, capped at `max_backoff`:
    with the defaults 1 s, 5 s, 25 s, ... up to one day.

    This is a plain geometric backoff starting at `min_backoff`; repid 1.x's formula
    (a floor of `min_backoff` under `multiplier * 2 ** n`) is
    `repid.default_retry_policy_factory`.
    """
    low = _to_timedelta(min_backoff, "min_backoff").total_seconds()
    high = _to_timedelta(max_backoff, "max_backoff").total_seconds()
    if multiplier < 1:
        raise ValueError(f"multiplier is {multiplier!r}; it must be at least 1")

    def policy(retry_number: int) -> timedelta:
        exponent = min(max(retry_number - 1, 0), max_exponent)
        return timedelta(seconds=min(high, low * multiplier**exponent))

    return policy


def fixed(delay: timedelta | float) -> RetryPolicy:
    """Wait the same `delay` (a timedelta or seconds) before every retry."""
    wait = _to_timedelta(delay, "delay")

    def policy(retry_number: int) -> timedelta:
        return wait

    return policy


def jittered(
    policy: RetryPolicy | None = None,
    *,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> RetryPolicy:
    """`policy`'s delay (default: `exponential()`) shortened by a random part of up to
    `jitter` of it, so jobs that failed together do not all retry at the same moment.

    The delay for retry n is uniform in `[d * (1 - jitter), d]` where `d = policy(n)`:
    `jitter=1.0` is "full jitter", `jitter=0.0` no jitter. It never exceeds `d`, so caps hold.
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter is {jitter!r}; it must be between 0.0 and 1.0")
    base = policy or exponential()
    draw = (rng or random.Random()).random

    def jittered_policy(retry_number: int) -> timedelta:
        return base(retry_number) * (1.0 - jitter * draw())

    return jittered_policy


class RetryPlugin:
    """repid plugin: `policy` gives the delay before each retry (unless the actor has its own
    `retry_policy=`), and with `retry_on` only those exception types are retried."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        retry_on: Iterable[type[BaseException]] | None = None,
    ) -> None:
        """`policy` defaults to `exponential()`; `retry_on=None` retries every exception."""
        self.policy: RetryPolicy = policy or exponential()
        self.retry_on: tuple[type[BaseException], ...] | None = None
        if retry_on is not None:
            kinds = tuple(retry_on)
            for kind in kinds:
                if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                    raise TypeError(f"retry_on takes exception classes; got {kind!r}")
            self.retry_on = kinds

    @hookimpl
    def repid_should_retry(self, exception: BaseException) -> bool | None:
        """False (straight to the dead-letter queue) for exceptions outside `retry_on`."""
        if self.retry_on is None or isinstance(exception, self.retry_on):
            return None
        return False

    @hookimpl
    def repid_retry_delay(self, params: Parameters) -> timedelta:
        """The policy's delay for this retry (`already_tried` of the failed run, plus one)."""
        return self.policy(params.retries.already_tried + 1)
