"""Plain data: Parameters and buckets encode/decode, RoutingKey, retry policy, schedule,
serializer and DSN masking."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from repid import (
    ArgsBucket,
    Parameters,
    PayloadDecodeError,
    PrioritiesT,
    ResultBucket,
    RoutingKey,
    default_retry_policy_factory,
)
from repid.brokers._dsn import mask_dsn
from repid.data import DelayProperties, ResultProperties, RetriesProperties, decode_bucket
from repid.schedule import first_run, next_cron_time, next_run
from repid.serializer import encode_args, to_json

UTC = timezone.utc


def full_parameters() -> Parameters:
    return Parameters(
        execution_timeout=timedelta(seconds=42),
        retries=RetriesProperties(5, 2),
        result=ResultProperties("res-1", timedelta(hours=3)),
        delay=DelayProperties(
            delay_until=datetime(2031, 1, 1, 12, 0, 0, 500000, tzinfo=UTC),
            defer_by=timedelta(minutes=5),
            cron=None,
            next_execution_time=datetime(2031, 1, 1, 12, 5, tzinfo=UTC),
        ),
        timestamp=datetime(2030, 6, 1, 8, 30, 15, 250000, tzinfo=UTC),
        ttl=timedelta(seconds=90),
        headers={"traceparent": "00-1-2-01", "tenant": "acme"},
    )


def test_parameters_round_trip() -> None:
    params = full_parameters()
    decoded = Parameters.decode(params.encode())
    assert decoded == params
    assert decoded.headers == {"traceparent": "00-1-2-01", "tenant": "acme"}
    assert decoded.delay.next_execution_time == datetime(2031, 1, 1, 12, 5, tzinfo=UTC)
    assert decoded.result == ResultProperties("res-1", timedelta(hours=3))
    assert decoded.ttl == timedelta(seconds=90)
    assert decoded.retries.left == 3


def test_parameters_round_trip_cron_and_bytes() -> None:
    params = Parameters(delay=DelayProperties(cron="*/5 * * * *"),
                        timestamp=datetime(2030, 1, 1, tzinfo=UTC))
    assert Parameters.decode(params.encode().encode()) == params


def test_minimal_parameters_encode_compactly_and_round_trip() -> None:
    params = Parameters(timestamp=datetime(2030, 1, 1, tzinfo=UTC))
    data = json.loads(params.encode())
    assert set(data) == {"timeout", "retries", "ts"}
    decoded = Parameters.decode(params.encode())
    assert decoded == params and decoded.result is None and decoded.headers == {}
    assert decoded.delay == DelayProperties() and decoded.ttl is None


@pytest.mark.parametrize("garbage", [
    "not json", b"\xff\xfe", "[]", "42", "null", "{}",
    '{"timeout": 1}', '{"timeout": "x", "retries": [0, 0], "ts": 0}',
    '{"timeout": 1, "retries": [0], "ts": 0}',
    '{"timeout": 1, "retries": [0, 0], "ts": 0, "headers": {"a": 1}}',
    '{"timeout": 1, "retries": [0, 0], "ts": 0, "delay": [1]}',
])
def test_decoding_garbage_raises_payload_decode_error(garbage: str | bytes) -> None:
    with pytest.raises(PayloadDecodeError, match="parameters"):
        Parameters.decode(garbage)


def test_parameters_copies_for_retry_next_run_and_delay() -> None:
    params = full_parameters()
    retry = params.with_retry(timedelta(seconds=10))
    assert retry.retries == RetriesProperties(5, 3)
    assert retry.headers == params.headers and retry.headers is not params.headers
    assert retry.delay.defer_by == params.delay.defer_by
    again = params.with_next_run(None)
    assert again.retries == RetriesProperties(5, 0) and again.delay.next_execution_time is None
    moved = params.with_delay(datetime(2040, 1, 1, tzinfo=UTC))
    assert moved.retries == params.retries
    assert moved.delay.next_execution_time == datetime(2040, 1, 1, tzinfo=UTC)
    assert params.retries == RetriesProperties(5, 2)  # the original is unchanged


def test_is_overdue_counts_ttl_from_when_it_became_due() -> None:
    now = datetime.now(UTC)
    assert not Parameters(ttl=None, timestamp=now - timedelta(days=1)).is_overdue
    assert Parameters(ttl=timedelta(seconds=1), timestamp=now - timedelta(seconds=5)).is_overdue
    assert not Parameters(ttl=timedelta(seconds=60), timestamp=now).is_overdue
    delayed = Parameters(ttl=timedelta(seconds=1), timestamp=now - timedelta(seconds=5),
                         delay=DelayProperties(next_execution_time=now))
    assert not delayed.is_overdue


def test_buckets_round_trip() -> None:
    args = ArgsBucket('{"a":1}', timestamp=datetime(2030, 1, 1, tzinfo=UTC),
                      ttl=timedelta(seconds=5))
    assert decode_bucket(args.encode()) == args
    result = ResultBucket(data={"x": [1, 2]}, success=False, exception="ValueError: v",
                          started_when=datetime(2030, 1, 1, tzinfo=UTC),
                          finished_when=datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC),
                          timestamp=datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC))
    assert decode_bucket(result.encode()) == result
    with pytest.raises(PayloadDecodeError, match="bucket is malformed"):
        decode_bucket('{"kind": "args"}')
    with pytest.raises(PayloadDecodeError):
        decode_bucket("nope")


def test_routing_key_is_plain_data_that_round_trips() -> None:
    import dataclasses

    key = RoutingKey("id-1", "topic", "q", PrioritiesT.HIGH.value)
    data = key.to_dict()
    assert data == {"id": "id-1", "topic": "topic", "queue": "q", "priority": 2}
    assert RoutingKey.from_dict(data) == key
    # repid 1.x's four fields, nothing else (the broker's handle is the delivery's)
    assert [f.name for f in dataclasses.fields(RoutingKey)] == ["id_", "topic", "queue",
                                                                "priority"]
    assert not hasattr(key, "handle") and not hasattr(key, "stash")
    assert RoutingKey("a", "t").queue == "default"
    assert RoutingKey("a", "t").priority == PrioritiesT.MEDIUM


def test_priorities_order() -> None:
    assert PrioritiesT.LOW < PrioritiesT.MEDIUM < PrioritiesT.HIGH


def test_default_retry_policy_is_exponential_and_capped() -> None:
    policy = default_retry_policy_factory()  # repid 1.x's: multiplier * 2 ** n, floored
    assert [policy(n).total_seconds() for n in (1, 2, 3)] == [10, 20, 40]
    assert policy(100) == timedelta(days=1)
    custom = default_retry_policy_factory(min_backoff=2, max_backoff=10, multiplier=3)
    assert [custom(n).total_seconds() for n in (1, 2, 3)] == [6, 10, 10]


def test_schedule_periods_do_not_drift_and_skip_missed_runs() -> None:
    now = datetime.now(UTC)
    recent = DelayProperties(defer_by=timedelta(seconds=10),
                             next_execution_time=now - timedelta(seconds=1))
    assert next_run(recent) == recent.next_execution_time + timedelta(seconds=10)
    old = DelayProperties(defer_by=timedelta(seconds=10),
                          next_execution_time=now - timedelta(seconds=35))
    nxt = next_run(old)
    assert now < nxt <= now + timedelta(seconds=10)
    assert (nxt - old.next_execution_time) % timedelta(seconds=10) == timedelta(0)


def test_cron_next_time() -> None:
    after = datetime(2030, 1, 1, 12, 3, 7, tzinfo=UTC)
    assert next_cron_time("*/5 * * * *", after) == datetime(2030, 1, 1, 12, 5, tzinfo=UTC)
    # a sixth field is seconds
    assert next_cron_time("* * * * * *", after) == datetime(2030, 1, 1, 12, 3, 8, tzinfo=UTC)
    now = datetime.now(UTC)
    cron_next = next_run(DelayProperties(cron="* * * * * *"))
    assert now < cron_next <= now + timedelta(seconds=1)


def test_first_run() -> None:
    when = datetime(2031, 1, 1, tzinfo=UTC)
    assert first_run(DelayProperties(delay_until=when, defer_by=timedelta(hours=1))) == when
    assert first_run(DelayProperties()) is None
    start = datetime.now(UTC)
    period = first_run(DelayProperties(defer_by=timedelta(seconds=30)))
    assert period is not None and timedelta(seconds=29) < period - start <= timedelta(
        seconds=31)


def test_serializer_plain_json_for_rich_values() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    class Color(enum.Enum):
        RED = "red"

    uid = uuid.UUID(int=1)
    value = {"when": datetime(2030, 1, 1, tzinfo=UTC), "p": Point(1, 2), "c": Color.RED,
             "u": uid, "s": (1, 2), "d": timedelta(seconds=3)}
    assert json.loads(to_json(value)) == {
        "when": "2030-01-01T00:00:00+00:00", "p": {"x": 1, "y": 2}, "c": "red",
        "u": str(uid), "s": [1, 2], "d": 3.0}
    with pytest.raises(TypeError, match="object is not JSON-serializable"):
        to_json(object())
    assert json.loads(encode_args((1, 2))) == [1, 2]


@pytest.mark.parametrize(("dsn", "masked"), [
    ("amqp://user:secret@host:5672/vhost", "amqp://user:***@host:5672/vhost"),
    ("redis://:secret@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("rediss://u:p%40ss@h/1?ssl_cert_reqs=none", "rediss://u:***@h/1?ssl_cert_reqs=none"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("amqp://guest@host/", "amqp://guest@host/"),
])
def test_mask_dsn_hides_passwords(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_mask_dsn_password_containing_at_sign() -> None:
    masked = mask_dsn("amqp://user:se@cret@host/")
    assert "se@cret" not in masked and "cret" not in masked
    assert masked.endswith("@host/")


def test_retry_does_not_shift_a_periodic_schedule() -> None:
    """A periodic job retried 3 s after its run still runs next at anchor + period."""
    from datetime import timedelta as _td

    from repid.data import DelayProperties, utcnow
    from repid.schedule import next_run

    anchor = utcnow() - _td(seconds=4)
    retried = DelayProperties(delay_until=anchor, defer_by=_td(seconds=10),
                              next_execution_time=anchor + _td(seconds=3))
    assert abs((next_run(retried) - (anchor + _td(seconds=10))).total_seconds()) < 0.01
    early = DelayProperties(delay_until=utcnow() + _td(milliseconds=5), defer_by=_td(seconds=10))
    assert next_run(early) - early.delay_until == _td(seconds=10)  # type: ignore[operator]


def test_a_ttl_past_the_calendar_never_runs_out() -> None:
    from datetime import timedelta

    from repid import Parameters

    assert Parameters(ttl=timedelta(days=999_999_999)).is_overdue is False


