"""repid: an asyncio job queue over RabbitMQ, Redis or memory.

Brokers needing an extra (`repid[amqp]`, `repid[redis]`) are imported on first use, so
the core installs and imports with no broker library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repid.app import Repid
from repid.brokers.base import BucketBroker, Consumer, MessageBroker
from repid.brokers.delivery import Delivery
from repid.brokers.in_memory import InMemoryBucketBroker, InMemoryMessageBroker
from repid.config import Config
from repid.connection import Connection
from repid.converter import ArgumentsError, BasicConverter, DefaultConverter, PydanticConverter
from repid.data import (
    ArgsBucket,
    MessageCategory,
    Parameters,
    PrioritiesT,
    ResultBucket,
    RoutingKey,
    Stash,
    StashKey,
)
from repid.dependencies import Depends
from repid.errors import (
    ActorTimeoutError,
    BrokerConnectionError,
    EnqueueNotConfirmedError,
    MessageTooLargeError,
    NoConnectionError,
    PayloadDecodeError,
    QueueDeclareError,
    QueueNotDeclaredError,
    RepidError,
    SettleError,
)
from repid.job import Job, enqueue_many
from repid.message import Message, MessageDependency
from repid.middleware import Middleware, hookimpl
from repid.queue import Queue
from repid.retry_policy import default_retry_policy_factory
from repid.router import Actor, ActorResult, Router
from repid.testing.types import EventLog, GetEventLogT, GetInMemoryQueueT, GetMockedActorT
from repid.worker import Worker
from repid.worker._health import HealthCheckServerSettings

if TYPE_CHECKING:  # `X as X`: re-exported for type checkers, imported lazily at run time
    from repid.brokers.rabbitmq import RabbitMessageBroker as RabbitMessageBroker
    from repid.brokers.redis import RedisBucketBroker as RedisBucketBroker
    from repid.brokers.redis import RedisMessageBroker as RedisMessageBroker

_LAZY = {
    "RabbitMessageBroker": ("repid.brokers.rabbitmq", "amqp"),
    "RedisMessageBroker": ("repid.brokers.redis", "redis"),
    "RedisBucketBroker": ("repid.brokers.redis", "redis"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, extra = _LAZY[name]
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"{name} needs an extra: pip install 'repid[{extra}]' "
                              f"({exc})") from exc
        return getattr(module, name)
    raise AttributeError(f"module 'repid' has no attribute {name!r}")


# The lazy broker names are left out of __all__: `from repid import *` must work on a core
# install without the broker extras (it would import them). Import them by name.
__all__ = [
    "Actor",
    "ActorResult",
    "ActorTimeoutError",
    "ArgsBucket",
    "ArgumentsError",
    "BasicConverter",
    "BrokerConnectionError",
    "BucketBroker",
    "Config",
    "Connection",
    "Consumer",
    "DefaultConverter",
    "Delivery",
    "Depends",
    "EnqueueNotConfirmedError",
    "EventLog",
    "GetEventLogT",
    "GetInMemoryQueueT",
    "GetMockedActorT",
    "HealthCheckServerSettings",
    "InMemoryBucketBroker",
    "InMemoryMessageBroker",
    "Job",
    "Message",
    "MessageBroker",
    "MessageCategory",
    "MessageDependency",
    "MessageTooLargeError",
    "Middleware",
    "NoConnectionError",
    "Parameters",
    "PayloadDecodeError",
    "PrioritiesT",
    "PydanticConverter",
    "Queue",
    "QueueDeclareError",
    "QueueNotDeclaredError",
    "Repid",
    "RepidError",
    "ResultBucket",
    "Router",
    "RoutingKey",
    "SettleError",
    "Stash",
    "StashKey",
    "Worker",
    "default_retry_policy_factory",
    "enqueue_many",
    "hookimpl",
]
