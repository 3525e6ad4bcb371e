"""Redis brokers (the `redis` extra): durable queues with leases, and buckets with expiry."""

from repid.brokers.redis.broker import RedisMessageBroker
from repid.brokers.redis.bucket import RedisBucketBroker

__all__ = ["RedisBucketBroker", "RedisMessageBroker"]
