"""A broker given another system's DSN (or one without a scheme) refuses it when it is
built, saying what a right DSN looks like, instead of hanging until a connect timeout."""

from __future__ import annotations

import time

import pytest

from repid import RabbitMessageBroker, RedisBucketBroker, RedisMessageBroker
from repid.brokers._dsn import SCHEMES

RABBIT_NEEDS = ("RabbitMessageBroker connects to RabbitMQ and needs a RabbitMQ DSN (amqp://, "
                "amqps://), such as 'amqp://guest:guest@localhost:5672/', but its dsn ")
#: every Redis scheme, as the message lists them (more come with Sentinel and Cluster)
REDIS_SCHEMES = ", ".join(f"{scheme}://" for scheme in SCHEMES["Redis"])
REDIS_NEEDS = (f"connects to Redis and needs a Redis DSN ({REDIS_SCHEMES}), such "
               "as 'redis://localhost:6379/0', but its dsn ")


@pytest.mark.parametrize(("make", "dsn", "message"), [
    (RabbitMessageBroker, "redis://:s3cret@127.0.0.1:6379/0",
     RABBIT_NEEDS + "'redis://:***@127.0.0.1:6379/0' is a Redis DSN (redis://); for Redis, "
                    "use RedisMessageBroker"),
    (RabbitMessageBroker, "localhost:5672",
     RABBIT_NEEDS + "'localhost:5672' has no scheme"),
    (RedisMessageBroker, "amqp://guest:s3cret@127.0.0.1:5672/",
     "RedisMessageBroker " + REDIS_NEEDS + "'amqp://guest:***@127.0.0.1:5672/' is a RabbitMQ "
                                           "DSN (amqp://); for RabbitMQ, use "
                                           "RabbitMessageBroker"),
    (RedisBucketBroker, "amqps://guest:s3cret@host/vh",
     "RedisBucketBroker " + REDIS_NEEDS + "'amqps://guest:***@host/vh' is a RabbitMQ DSN "
                                          "(amqps://)"),
    (RedisMessageBroker, "http://127.0.0.1:6379",
     "RedisMessageBroker " + REDIS_NEEDS + "'http://127.0.0.1:6379' has the scheme http://"),
])
def test_wrong_scheme_is_refused_when_built(make: type, dsn: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError) as info:
        make(dsn)
    assert time.monotonic() - started < 1
    assert str(info.value).startswith(message)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(("make", "dsn"), [
    (RabbitMessageBroker, "amqp://guest:guest@localhost:5672/"),
    (RabbitMessageBroker, "AMQPS://guest:guest@localhost:5671/%2F"),
    (RedisMessageBroker, "rediss://localhost:6380/0"),
    (RedisBucketBroker, "unix:///run/redis.sock?db=1"),
    (RedisMessageBroker, "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"),
    (RedisMessageBroker, "redis+cluster://127.0.0.1:7100,127.0.0.1:7101/"),
    (RedisBucketBroker, "rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000/0"),
])
def test_right_schemes_are_taken(make: type, dsn: str) -> None:
    make(dsn)
