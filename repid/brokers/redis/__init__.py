"""Redis brokers (the `redis` extra): durable queues with leases, and buckets with expiry."""

from repid.brokers.redis.bucket import RedisBucketBroker
from repid.brokers.redis.message import RedisMessageBroker

__all__ = ["RedisBucketBroker", "RedisMessageBroker"]
