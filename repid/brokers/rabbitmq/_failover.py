"""Failing over between the nodes of a RabbitMQ cluster, on aio-pika's robust connection.

aio-pika's robust connection reconnects to one URL: before each attempt it reads its `url`
attribute, and it calls its `close_callbacks` when the connection is lost and when an
attempt fails. So failover needs no connection class of its own:

- connecting (`connect_first`) tries each node in the order given and keeps the first
  that answers; if none does, the error names every node and why it failed (passwords
  masked). With one node this is exactly one plain connect, and its error is unchanged.
- once connected, `NodeRotation` is one of the connection's close callbacks: when the
  connection is lost or a reconnect attempt fails (not when it is closed on purpose), it
  points `url` at the next node, wrapping round, so each attempt tries the next node.
  aio-pika then reopens the channels on the node that answers, and the broker's consumers
  subscribe again there (`RabbitConsumer` resubscribes when its channel is reopened), as
  after a reconnect to the same server.

Nothing is replayed: what a consumer held unsettled on the lost node goes back to its
queue on the cluster (at-least-once), and a publish whose confirm did not arrive raises
`EnqueueNotConfirmedError` (it may or may not be stored), as with one server. After a
publish RabbitMQ refused, the broker publishes on a new channel (`_renew_channel` in
`_broker.py`): on RabbitMQ 3.10 a channel reopened while a quorum queue's leader moved can
go on refusing that queue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aio_pika.abc import AbstractConnection
from aio_pika.connection import Connection
from yarl import URL

from repid.brokers._dsn import mask_dsn
from repid.brokers.rabbitmq._hosts import HostRing, describe
from repid.errors import BrokerConnectionError

logger = logging.getLogger("repid.brokers.rabbitmq")

C = TypeVar("C")


class NodeRotation:
    """A close callback of a robust connection that moves its `url` to the next node of
    `ring` each time the connection is lost or a reconnect attempt fails."""

    __slots__ = ("ring",)

    def __init__(self, ring: HostRing) -> None:
        self.ring = ring

    def __call__(self, connection: AbstractConnection | None,
                 exc: BaseException | None = None) -> None:
        if not isinstance(connection, Connection) or len(self.ring) < 2:
            return
        if connection.close_called or connection.is_closed:
            return  # closed on purpose: no reconnect follows
        failed = self.ring.current
        connection.url = URL(self.ring.advance())
        logger.warning("RabbitMQ node %s failed or went away (%s); trying %s next",
                       mask_dsn(failed), type(exc).__name__ if exc else "closed",
                       mask_dsn(self.ring.current))


async def connect_first(ring: HostRing, open_node: Callable[[str], Awaitable[C]]) -> C:
    """`open_node(dsn)` for each node of `ring` in turn, from its current one, until one
    succeeds: its result, with `ring.current` on that node. `open_node` raises
    `BrokerConnectionError` for a node it cannot reach. With one node its error passes
    through unchanged; with several, a `BrokerConnectionError` lists each node's."""
    failures: list[str] = []
    for _ in range(len(ring)):
        try:
            return await open_node(ring.current)
        except BrokerConnectionError as exc:
            if len(ring) == 1:
                raise
            failures.append(str(exc))
            ring.advance()
    raise BrokerConnectionError(
        f"cannot connect to any of the {len(ring)} RabbitMQ nodes ({describe(ring.nodes)}): "
        + "; ".join(failures))
