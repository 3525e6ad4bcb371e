"""Connection: ties the message broker, the bucket brokers and their middleware together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from repid.brokers.base import BucketBroker, MessageBroker
from repid.middleware import Middleware
from repid.retry_policy import DefaultRetryPolicy


class Connection:
    """The brokers an app talks to, and the one Middleware they all call through.

    Creating it makes a new `Middleware` and gives it to every broker. `is_open` changes
    only through `connect()` and `disconnect()`; it does not follow the brokers' sockets,
    and reconnecting after a failure is the brokers' own job.
    """

    def __init__(
        self,
        message_broker: MessageBroker,
        args_bucket_broker: BucketBroker | None = None,
        results_bucket_broker: BucketBroker | None = None,
        *,
        plugins: Iterable[object] = (),
        load_entrypoint_plugins: bool = False,
    ) -> None:
        self.message_broker = message_broker
        self.args_bucket_broker = args_bucket_broker
        self.results_bucket_broker = results_bucket_broker
        self.is_open = False
        self.middleware = Middleware(self)
        self.middleware.register(DefaultRetryPolicy(), name="repid.default_retry_policy")
        for plugin in plugins:
            self.middleware.register(plugin)
        if load_entrypoint_plugins:
            self.middleware.load_entrypoints()
        for broker in self._brokers():
            broker.middleware = self.middleware

    def __repr__(self) -> str:
        return (f"Connection(message_broker={self.message_broker!r}, "
                f"args_bucket_broker={self.args_bucket_broker!r}, "
                f"results_bucket_broker={self.results_bucket_broker!r}, is_open={self.is_open})")

    def _brokers(self) -> list[MessageBroker | BucketBroker]:
        found: list[MessageBroker | BucketBroker] = [self.message_broker]
        for bucket in (self.args_bucket_broker, self.results_bucket_broker):
            if bucket is not None and all(bucket is not b for b in found):
                found.append(bucket)
        return found

    async def connect(self) -> None:
        """Connect every broker, then mark the connection open."""
        await asyncio.gather(*(b.connect() for b in self._brokers()))
        self.is_open = True

    async def disconnect(self) -> None:
        """Disconnect every broker, then mark the connection closed."""
        await asyncio.gather(*(b.disconnect() for b in self._brokers()))
        self.is_open = False
