"""Redis brokers (the `redis` extra): durable queues with leases, and buckets with expiry."""

from repid.brokers.redis._broker import RedisMessageBroker
from repid.brokers.redis._bucket import RedisBucketBroker

__all__ = ["RedisBucketBroker", "RedisMessageBroker"]
