"""RedisBucketBroker against a real Redis: store, read from another client, expire, delete."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from repid.brokers.redis import RedisBucketBroker
from repid.data import ArgsBucket, ResultBucket
from repid.errors import BrokerConnectionError

pytestmark = pytest.mark.integration


@pytest.fixture
async def buckets(redis_dsn: str) -> AsyncIterator[RedisBucketBroker]:
    b = RedisBucketBroker(redis_dsn, use_result_bucket=True)
    await b.connect()
    yield b
    await b.disconnect()


def _id() -> str:
    return f"bucket-{uuid.uuid4().hex}"


async def test_result_bucket_is_readable_by_another_process(buckets: RedisBucketBroker,
                                                            redis_dsn: str) -> None:
    id_ = _id()
    now = datetime.now(timezone.utc)
    result = ResultBucket(data={"answer": [4, 2]}, success=False, started_when=now,
                          finished_when=now + timedelta(seconds=1),
                          exception="ValueError: bad input", ttl=timedelta(minutes=5))
    await buckets.store_bucket(id_, result)
    other = RedisBucketBroker(redis_dsn)  # another client, as another process would be
    await other.connect()
    try:
        got = await other.get_bucket(id_)
    finally:
        await other.disconnect()
    assert isinstance(got, ResultBucket)
    assert got.data == {"answer": [4, 2]}
    assert got.success is False
    assert got.exception == "ValueError: bad input"
    assert got.ttl == timedelta(minutes=5)
    assert abs((got.started_when - now).total_seconds()) < 0.001
    await buckets.delete_bucket(id_)
    assert await buckets.get_bucket(id_) is None


async def test_bucket_expires_natively(buckets: RedisBucketBroker) -> None:
    id_, forever = _id(), _id()
    await buckets.store_bucket(id_, ArgsBucket('{"a": 1}', ttl=timedelta(seconds=1)))
    await buckets.store_bucket(forever, ArgsBucket('{"b": 2}'))
    got = await buckets.get_bucket(id_)
    assert isinstance(got, ArgsBucket)
    assert got.data == '{"a": 1}'
    await asyncio.sleep(1.5)
    assert await buckets.get_bucket(id_) is None
    kept = await buckets.get_bucket(forever)
    assert isinstance(kept, ArgsBucket) and kept.data == '{"b": 2}'
    await buckets.delete_bucket(forever)


async def test_missing_bucket_is_none(buckets: RedisBucketBroker) -> None:
    assert await buckets.get_bucket(_id()) is None
    await buckets.delete_bucket(_id())  # deleting what is not there is fine


async def test_flags_repr_and_unreachable() -> None:
    b = RedisBucketBroker("redis://:hunter2@127.0.0.1:1/0", use_result_bucket=True,
                          retries=0, socket_connect_timeout=0.5)
    assert b.use_result_bucket is True
    assert RedisBucketBroker("redis://127.0.0.1/0").use_result_bucket is False
    assert b.system == "redis"
    assert "hunter2" not in repr(b)
    with pytest.raises(BrokerConnectionError) as info:
        await asyncio.wait_for(b.connect(), 10)
    assert "hunter2" not in str(info.value)
