"""RedisBucketBroker: buckets as plain Redis keys with native expiry.

A bucket is one string key, `<prefix>:bucket:<id>`, set with `PX` from the bucket's `ttl`,
so Redis itself deletes it when it expires and any process with the DSN can read it (a
result written by a worker is read by the producer that awaits `job.result`). Every call
touches that one key, so the broker works on a Redis Cluster as on one server (a
`redis+cluster://` DSN, or `cluster=True`: see `_cluster.py`): each bucket lives on the
master that owns its key's slot.
"""

from __future__ import annotations

from typing import Any

from repid.brokers._dsn import mask_dsn, require_dsn
from repid.brokers.base import BucketBroker
from repid.brokers.redis._client import AnyRedis, ClientSettings
from repid.brokers.redis._errors import RedisErrors
from repid.data import BucketT, decode_bucket
from repid.errors import BrokerConnectionError


class RedisBucketBroker(BucketBroker):
    """Stores args and result buckets in Redis; `use_result_bucket` is kept for the core."""

    system = "redis"

    def __init__(
        self,
        dsn: str,
        use_result_bucket: bool = False,
        *,
        prefix: str = "repid",
        retries: int = 5,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 5.0,
        client_name: str | None = "repid",
        **redis_options: Any,
    ) -> None:
        super().__init__(use_result_bucket=use_result_bucket)
        self._dsn = dsn = require_dsn(dsn, "RedisBucketBroker", "redis://localhost:6379/0")
        self.prefix = prefix
        self._settings = ClientSettings(dsn, retries, socket_timeout, socket_connect_timeout,
                                        client_name, redis_options)
        self._client: AnyRedis | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dsn={mask_dsn(self._dsn)!r}, "
                f"use_result_bucket={self.use_result_bucket})")

    async def connect(self) -> None:
        """Open the client and check that Redis answers. Idempotent."""
        if self._client is not None:
            return
        self._client = await self._settings.open()

    async def disconnect(self) -> None:
        """Close the client. Idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _redis(self) -> AnyRedis:
        if self._client is None:
            raise BrokerConnectionError(
                f"{self!r} is not connected; call `await connection.connect()` first")
        return self._client

    def _key(self, id_: str) -> str:
        return f"{self.prefix}:bucket:{id_}"

    async def _get_bucket(self, id_: str) -> BucketT | None:
        with RedisErrors(BrokerConnectionError, "cannot read bucket %r", id_):
            raw = await self._redis().get(self._key(id_))
        return None if raw is None else decode_bucket(raw)

    async def _store_bucket(self, id_: str, payload: BucketT) -> None:
        ttl_ms = None
        if payload.ttl is not None:
            # native expiry; at least 1 ms, since PX 0 is an error
            ttl_ms = max(1, int(payload.ttl.total_seconds() * 1000))
        with RedisErrors(BrokerConnectionError, "cannot store bucket %r", id_):
            await self._redis().set(self._key(id_), payload.encode(), px=ttl_ms)

    async def _delete_bucket(self, id_: str) -> None:
        with RedisErrors(BrokerConnectionError, "cannot delete bucket %r", id_):
            await self._redis().delete(self._key(id_))
