"""repid 1.x's message and bucket encodings, read and turned into the current ones.

Used by `repid migrate-v1` (the broker modules `redis/v1_migration.py` and
`rabbitmq/v1_migration.py`); nothing here talks to a server.

What changes between the encodings (1.x -> now):

- times: 1.x wrote naive ISO dates in the producer's local time; they are read as local
  time and kept as UTC. Durations were seconds, as now.
- priorities: 1.x used LOW 0, MEDIUM 5, HIGH 9; each value goes to the nearest of LOW 0,
  MEDIUM 1, HIGH 2 (0-2 LOW, 3-7 MEDIUM, 8 and more HIGH).
- arguments kept in an args bucket: the payload `{"__repid_payload_id": ID}` becomes
  `{"$repid_args_bucket": ID}`; any other payload is kept as it is.
- a recurring job (`defer_by`) is anchored, as a new one is now, at its next run, which is
  also its `next_execution_time`; a job that is not due yet keeps its run time.
- result buckets: `data` was the result encoded as JSON text and is decoded (text that is
  not JSON stays text); `started_when` / `finished_when` were nanoseconds since the epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from repid.data import (
    ArgsBucket,
    BucketT,
    DelayProperties,
    Parameters,
    ResultBucket,
    ResultProperties,
    RetriesProperties,
    RoutingKey,
)
from repid.data.parameters import NO_DELAY
from repid.errors import PayloadDecodeError

_UTC = timezone.utc

#: the payload of a 1.x message whose arguments are in an args bucket
V1_ARGS_MARKER = "__repid_payload_id"
#: the same reference now (`repid.serializer.ARGS_BUCKET_MARKER`; a test keeps them equal)
ARGS_MARKER = "$repid_args_bucket"

#: the fields of 1.x's bucket JSON objects, by kind
V1_ARGS_FIELDS = frozenset({"data", "timestamp", "ttl"})
V1_RESULT_FIELDS = frozenset({"data", "started_when", "finished_when", "success", "exception",
                              "timestamp", "ttl"})
#: the dead reason a 1.x dead letter gets once moved (1.x kept none)
V1_DEAD_REASON = "dead-lettered by repid 1.x (moved by `repid migrate-v1`)"


@dataclass(frozen=True)
class V1Message:
    """One 1.x message, read: its routing key fields, its payload and its parameters."""

    id_: str
    topic: str
    queue: str
    priority: int
    payload: str
    params: dict[str, Any]


def priority_from_v1(priority: int) -> int:
    """The current priority (0-2) nearest to a 1.x one (LOW 0, MEDIUM 5, HIGH 9)."""
    if priority >= 8:
        return 2
    return 1 if priority >= 3 else 0


def v1_priority(priority: int) -> int:
    """The 1.x priority of a current one (for the AMQP priority of a 1.x message)."""
    return {0: 0, 1: 5}.get(priority, 9)


def _nested(value: Any) -> dict[str, Any] | None:
    """A nested 1.x property: an object, a JSON string of one, or null."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _date(value: Any) -> datetime | None:
    """A 1.x ISO date (naive: the producer's local time) as an aware UTC datetime."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed.astimezone(_UTC)  # a naive value is taken as local time


def _duration(value: Any) -> timedelta | None:
    return None if value is None else timedelta(seconds=float(value))


def parse_params(raw: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """1.x's encoded parameters as an object (PayloadDecodeError when they are not one)."""
    try:
        data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except ValueError as exc:
        raise PayloadDecodeError(f"repid 1.x parameters are not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadDecodeError("repid 1.x parameters must be a JSON object")
    return data


def v1_ready_at(params: dict[str, Any], now: datetime | None = None) -> datetime | None:
    """When 1.x would run the message next, computed as 1.x did (for a delayed message
    whose wait was not recorded, as on RabbitMQ): `next_execution_time`, else a future
    `delay_until`, else the next period of `defer_by` after the timestamp, else the next
    cron time. None: at once."""
    try:
        now = now or datetime.now(_UTC)
        delay = _nested(params.get("delay")) or {}
        if (at := _date(delay.get("next_execution_time"))) is not None:
            return at
        if (until := _date(delay.get("delay_until"))) is not None and until > now:
            return until
        period = _duration(delay.get("defer_by"))
        stamp = _date(params.get("timestamp"))
        if period is not None and stamp is not None and period.total_seconds() > 0:
            return stamp + period * ((now - stamp) // period + 1)
        if delay.get("cron"):
            return _next_cron(str(delay["cron"]), now)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadDecodeError(f"repid 1.x delay is malformed: {exc!r}") from exc
    return None


def _next_cron(expression: str, after: datetime) -> datetime | None:
    """The next time of a cron expression (None, so at once, without croniter, which 1.x
    needed for cron jobs anyway)."""
    try:
        from croniter import croniter
    except ImportError:
        return None
    found: datetime = croniter(expression, after).get_next(datetime)
    return found


def convert_params(params: dict[str, Any], ready_at: datetime | None) -> Parameters:
    """Current parameters of 1.x ones; the message becomes ready at `ready_at` (None: at
    once). PayloadDecodeError names what is malformed."""
    try:
        retries = _nested(params.get("retries")) or {}
        result = _nested(params.get("result"))
        delay = _nested(params.get("delay")) or {}
        defer_by = _duration(delay.get("defer_by"))
        cron = delay.get("cron")
        delay_until = _date(delay.get("delay_until"))
        if defer_by is not None and ready_at is not None:
            delay_until = ready_at  # a period is anchored at the next run, as now
        has_delay = any(x is not None for x in (delay_until, defer_by, cron, ready_at))
        timestamp = _date(params.get("timestamp")) or datetime.now(_UTC)
        return Parameters(
            execution_timeout=_duration(params.get("execution_timeout"))
            or timedelta(minutes=10),
            retries=RetriesProperties(int(retries.get("max_amount", 0)),
                                      int(retries.get("already_tried", 0))),
            result=None if result is None else ResultProperties(
                str(result["id_"]), _duration(result.get("ttl"))),
            delay=DelayProperties(delay_until, defer_by, None if cron is None else str(cron),
                                  ready_at) if has_delay else NO_DELAY,
            timestamp=timestamp,
            ttl=_duration(params.get("ttl")),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise PayloadDecodeError(f"repid 1.x parameters are malformed: {exc!r}") from exc


def convert_payload(payload: str) -> str:
    """The current payload of a 1.x one (only an args bucket reference changes)."""
    if V1_ARGS_MARKER in payload[:len(V1_ARGS_MARKER) + 4]:
        try:
            data = json.loads(payload)
        except ValueError:
            return payload
        if isinstance(data, dict) and isinstance(data.get(V1_ARGS_MARKER), str):
            return json.dumps({ARGS_MARKER: data[V1_ARGS_MARKER]}, separators=(",", ":"))
    return payload


def convert_message(message: V1Message,
                    ready_at: datetime | None) -> tuple[RoutingKey, str, Parameters]:
    """The current message of a 1.x one, ready at `ready_at` (None: at once)."""
    params = convert_params(message.params, ready_at)
    try:
        key = RoutingKey(id_=message.id_, topic=message.topic, queue=message.queue,
                         priority=priority_from_v1(message.priority))
    except (TypeError, ValueError) as exc:
        raise PayloadDecodeError(f"repid 1.x routing key is malformed: {exc!r}") from exc
    return key, convert_payload(message.payload), params


def v1_bucket_kind(raw: str | bytes) -> str | None:
    """'args' or 'result' when `raw` is a bucket written by repid 1.x, else None."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    fields = frozenset(data)
    if fields == V1_ARGS_FIELDS:
        return "args"
    if fields == V1_RESULT_FIELDS:
        return "result"
    return None


def convert_bucket(raw: str | bytes) -> BucketT:
    """The current bucket of one repid 1.x wrote (PayloadDecodeError when it is not one)."""
    kind = v1_bucket_kind(raw)
    if kind is None:
        raise PayloadDecodeError("not a bucket written by repid 1.x")
    data = json.loads(raw)
    try:
        timestamp = _date(data["timestamp"]) or datetime.now(_UTC)
        ttl = _duration(data["ttl"])
        if kind == "args":
            return ArgsBucket(data=str(data["data"]), timestamp=timestamp, ttl=ttl)
        return ResultBucket(
            data=_result_data(data["data"]), success=bool(data["success"]),
            exception=None if data["exception"] is None else str(data["exception"]),
            started_when=_from_ns(data["started_when"]),
            finished_when=_from_ns(data["finished_when"]), timestamp=timestamp, ttl=ttl)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadDecodeError(f"repid 1.x bucket is malformed: {exc!r}") from exc


def _result_data(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _from_ns(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1e9, _UTC)
