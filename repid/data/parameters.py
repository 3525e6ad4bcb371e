"""Everything a message carries besides its key and payload: timing, retries, result, headers.

Parameters travel with the message through every broker, so they encode to a compact JSON
string (`encode`) and back (`decode`). Times are UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from repid.errors import PayloadDecodeError

_UTC = timezone.utc


def utcnow() -> datetime:
    return datetime.now(_UTC)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, _UTC)


def _td(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def _secs(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


@dataclass(frozen=True, slots=True)
class RetriesProperties:
    """`max_amount` retries are allowed after the first run; `already_tried` counts runs so far."""

    max_amount: int = 0
    already_tried: int = 0

    @property
    def left(self) -> int:
        return self.max_amount - self.already_tried


@dataclass(frozen=True, slots=True)
class ResultProperties:
    """Where the actor's result goes (`id_` in the results bucket) and how long it is kept."""

    id_: str
    ttl: timedelta | None = None


@dataclass(frozen=True, slots=True)
class DelayProperties:
    """When a message may run.

    `delay_until` is the first run, `defer_by` the period of a recurring job, `cron` its
    schedule; `next_execution_time` is when this copy of the message becomes ready
    (None: at once).
    """

    delay_until: datetime | None = None
    defer_by: timedelta | None = None
    cron: str | None = None
    next_execution_time: datetime | None = None

    @property
    def is_recurring(self) -> bool:
        return self.defer_by is not None or self.cron is not None


#: the delay of a message that may run at once (compared by identity first)
NO_DELAY = DelayProperties()


@dataclass(slots=True)
class Parameters:
    """A message's parameters. `headers` is the one mutable part: middleware adds to it."""

    execution_timeout: timedelta = timedelta(minutes=10)
    retries: RetriesProperties = RetriesProperties()
    result: ResultProperties | None = None
    delay: DelayProperties = NO_DELAY
    timestamp: datetime = field(default_factory=utcnow)
    ttl: timedelta | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ready_at(self) -> datetime | None:
        """When the message may first be taken; None means now."""
        return self.delay.next_execution_time

    @property
    def is_overdue(self) -> bool:
        """True once `ttl` has passed since the message became due (it must not run then)."""
        if self.ttl is None:
            return False
        start = self.delay.next_execution_time or self.timestamp
        try:
            return utcnow() > start + self.ttl
        except OverflowError:  # a ttl past the year 9999 never runs out
            return False

    def with_retry(self, delay: timedelta) -> Parameters:
        """A copy for the next attempt: one more try counted, ready after `delay`."""
        return replace(
            self,
            retries=RetriesProperties(self.retries.max_amount, self.retries.already_tried + 1),
            delay=replace(self.delay, next_execution_time=utcnow() + delay),
            headers=dict(self.headers),
        )

    def with_next_run(self, when: datetime | None) -> Parameters:
        """A copy with tries reset, ready at `when` (None: at once): a recurring job's next
        run, or a dead letter sent back."""
        return replace(
            self,
            retries=RetriesProperties(self.retries.max_amount, 0),
            delay=replace(self.delay, next_execution_time=when),
            timestamp=utcnow(),
            headers=dict(self.headers),
        )

    def with_delay(self, when: datetime | None) -> Parameters:
        """A copy that becomes ready at `when`, tries unchanged (returned, not retried)."""
        return replace(self, delay=replace(self.delay, next_execution_time=when),
                       headers=dict(self.headers))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "timeout": self.execution_timeout.total_seconds(),
            "retries": [self.retries.max_amount, self.retries.already_tried],
            "ts": self.timestamp.timestamp(),
        }
        if self.result is not None:
            data["result"] = [self.result.id_, _secs(self.result.ttl)]
        d = self.delay
        if d is not NO_DELAY and d != NO_DELAY:
            data["delay"] = [_ts(d.delay_until), _secs(d.defer_by), d.cron,
                             _ts(d.next_execution_time)]
        if self.ttl is not None:
            data["ttl"] = self.ttl.total_seconds()
        if self.headers:
            data["headers"] = self.headers
        return data

    def encode(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parameters:
        try:
            result = data.get("result")
            delay = data.get("delay")
            headers = data.get("headers") or {}
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise ValueError("headers must map strings to strings")
            return cls(
                execution_timeout=timedelta(seconds=float(data["timeout"])),
                retries=RetriesProperties(int(data["retries"][0]), int(data["retries"][1])),
                result=None if result is None else ResultProperties(str(result[0]),
                                                                    _td(result[1])),
                delay=NO_DELAY if delay is None else DelayProperties(
                    _dt(delay[0]), _td(delay[1]), delay[2], _dt(delay[3])),
                timestamp=datetime.fromtimestamp(float(data["ts"]), _UTC),
                ttl=_td(data.get("ttl")),
                headers=headers,
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PayloadDecodeError(f"message parameters are malformed: {exc!r}") from exc

    @classmethod
    def decode(cls, raw: str | bytes) -> Parameters:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PayloadDecodeError(f"message parameters are not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PayloadDecodeError("message parameters must be a JSON object")
        return cls.from_dict(data)
